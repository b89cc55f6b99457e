"""--glm-soak: a bad duration stops the run with one line naming the option; without it the soak is skipped
and starts no server."""

from __future__ import annotations

from pathlib import Path

import pytest

SUITES = Path(__file__).parents[2] / "suites"

SHOW_SOAK = "def test_show(glm_config):\n    print('soak_s =', glm_config.soak_s)\n"


@pytest.mark.parametrize("args", [["--glm-soak=10 minutes"], ["-o", "glm_soak=10 minutes"]], ids=["cli", "ini"])
def test_a_bad_duration_is_one_line_naming_the_option(pytester: pytest.Pytester, args: list[str]) -> None:
    pytester.makepyfile(SHOW_SOAK)
    result = pytester.runpytest_subprocess(*args, "-p", "no:cacheprovider")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    errors = [line for line in result.stderr.lines if line.strip()]
    assert errors == ["ERROR: --glm-soak: expected a duration such as 90s, 10m, 1.5h or 45 (seconds), "
                      "got '10 minutes'"]
    assert "Traceback" not in result.stdout.str()


@pytest.mark.parametrize(("value", "seconds"), [("90s", "90.0"), ("10m", "600.0"), ("1.5h", "5400.0"), ("45", "45.0")])
def test_a_duration_resolves_to_seconds(pytester: pytest.Pytester, value: str, seconds: str) -> None:
    pytester.makepyfile(SHOW_SOAK)
    result = pytester.runpytest_subprocess(f"--glm-soak={value}", "-s", "-p", "no:cacheprovider")
    result.assert_outcomes(passed=1)
    result.stdout.fnmatch_lines([f"*soak_s = {seconds}*"])


def test_without_the_option_the_soak_is_skipped_before_any_server(pytester: pytest.Pytester) -> None:
    """Nothing answers at the endpoint: had the soak asked for the server, the run would stop on it."""
    result = pytester.runpytest_subprocess(str(SUITES / "test_soak.py"), "--glm-base-url=http://127.0.0.1:9",
                                           "--glm-model=glm-tiny", "-rs", "-p", "no:cacheprovider")
    result.assert_outcomes(skipped=1)
    result.stdout.fnmatch_lines(["*the soak runs with --glm-soak DURATION*"])
    assert "deployment failed" not in result.stdout.str()
