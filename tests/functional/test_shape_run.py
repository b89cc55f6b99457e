"""--glm-weights dummy with the fake vLLM: a bad value is one line naming the option, the correctness
suites are skipped at collection with the reason (no server is started for them), and the report names
the deployment a shape run everywhere it names the model."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from pytest_glm.session import SHAPE_SKIP_REASON
from tests.conftest import FAKE_VLLM

pytestmark = pytest.mark.usefixtures("no_leftover_server")


def test_a_bad_value_names_the_option(pytester: pytest.Pytester) -> None:
    pytester.copy_example("test_config_dump.py")
    pytester._monkeypatch.setenv("GLM_EXAMPLE_OUT", str(pytester.path / "dump.json"))
    result = pytester.runpytest_subprocess("--glm-weights=random", "-p", "no:cacheprovider")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    assert "--glm-weights: expected real or dummy, got 'random'" in result.stderr.str()
    result = pytester.runpytest_subprocess("--glm-weights=dummy", "--glm-base-url=http://127.0.0.1:9",
                                           "-p", "no:cacheprovider")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    assert "--glm-weights: dummy launches the model with random weights" in result.stderr.str()


def test_correctness_suites_are_skipped_with_the_reason(pytester: pytest.Pytester) -> None:
    pytester._monkeypatch.setenv("FAKE_VLLM_MODE", "serve")
    result = pytester.runpytest_subprocess(
        "--pyargs", "pytest_glm.suites", "-m", "tool_calling or reasoning or surfaces or soak or mtp",
        "-k", "not mtp_acceptance",
        f"--glm-vllm={FAKE_VLLM}", "--glm-weights=dummy", "-rs", "-p", "no:cacheprovider", timeout=400)
    outcomes = result.parseoutcomes()
    assert outcomes.get("skipped", 0) > 50, outcomes
    assert set(outcomes) <= {"skipped", "deselected", "warnings", "warning"}, outcomes
    out = result.stdout.str()
    skipped = [line for line in out.splitlines() if line.startswith("SKIPPED")]
    assert skipped and all(SHAPE_SKIP_REASON in line for line in skipped), skipped[:3]
    for suite in ("test_tool_calling.py", "test_reasoning.py", "test_surfaces.py", "test_soak.py", "test_mtp.py"):
        assert any(suite in line for line in skipped), suite
    assert "starting vLLM" not in out  # every test that needed the server is skipped: none is started


def run_preflight_part(pytester: pytest.Pytester, *args: str) -> tuple[pytest.RunResult, Path]:
    """Two preflight checks the fake vLLM answers, with a JSON report."""
    pytester._monkeypatch.setenv("FAKE_VLLM_MODE", "serve")
    report = pytester.path / "gate.json"
    result = pytester.runpytest_subprocess(
        "--pyargs", "pytest_glm.suites", "-k", "test_chat_completion_round_trip or test_serves_the_model_under_test",
        f"--glm-vllm={FAKE_VLLM}", f"--glm-report={report}", "-p", "no:cacheprovider", *args, timeout=120)
    return result, report


def test_the_report_says_shape_run(pytester: pytest.Pytester) -> None:
    result, report = run_preflight_part(pytester, "--glm-weights=dummy")
    result.assert_outcomes(passed=2)
    out = result.stdout.str()
    assert "glm: model glm-tiny (shape run: random weights, --glm-weights dummy), profile cpu" in out
    assert "model: glm-tiny (family glm45, bf16, shape run: random weights (--glm-weights dummy))" in out
    assert "--load-format dummy: --glm-weights dummy" in out
    deployment = json.loads(report.read_text())["deployment"]
    assert deployment["weights"] == "dummy" and deployment["shape_run"] == "random weights (--glm-weights dummy)"
    assert "--load-format dummy" in deployment["command"]
    assert deployment["serve_flags"][deployment["serve_flags"].index("--load-format") + 1] == "dummy"


def test_real_weights_say_nothing_of_it(pytester: pytest.Pytester) -> None:
    result, report = run_preflight_part(pytester)
    result.assert_outcomes(passed=2)
    assert "shape run" not in result.stdout.str()
    deployment = json.loads(report.read_text())["deployment"]
    assert deployment["weights"] == "real" and deployment["shape_run"] is None
    assert "--load-format" not in deployment["command"]
