"""Options resolve from the command line and from ini, and bad values stop the run with one clear line."""

from __future__ import annotations

import json
from pathlib import Path

import pytest


def run_dump(pytester: pytest.Pytester, *args: str, ini: str = "") -> tuple[pytest.RunResult, dict]:
    pytester.copy_example("test_config_dump.py")
    if ini:
        pytester.makeini(f"[pytest]\n{ini}\n")
    out = pytester.path / "dump.json"
    pytester._monkeypatch.setenv("GLM_EXAMPLE_OUT", str(out))
    result = pytester.runpytest_subprocess(*args, "-p", "no:cacheprovider")
    data = json.loads(out.read_text()) if out.exists() else {}
    return result, data


def test_defaults(pytester: pytest.Pytester) -> None:
    result, data = run_dump(pytester)
    result.assert_outcomes(passed=1)
    assert data["model"] == "glm-tiny" and data["family"] == "glm45"
    assert data["profile"] == "cpu"  # auto on a machine without GPUs
    assert data["startup_timeout"] == 600 and data["request_timeout"] == 120
    assert data["mtp"] is None and data["keep_server"] is False


def test_cli(pytester: pytest.Pytester) -> None:
    result, data = run_dump(pytester, "--glm-model=zai-org/GLM-4.7-FP8", "--glm-profile=h200x4", "--glm-tp=4",
                            "--glm-no-mtp", "--glm-serve-arg=--max-num-seqs 8", "--glm-serve-arg=--enforce-eager",
                            "--glm-startup-timeout=30", "--glm-keep-server")
    result.assert_outcomes(passed=1)
    assert data["model"] == "zai-org/GLM-4.7-FP8" and data["family"] == "glm47"
    assert (data["profile"], data["tp"], data["mtp"]) == ("h200x4", 4, False)
    assert data["extra_args"] == ["--max-num-seqs", "8", "--enforce-eager"]
    assert data["startup_timeout"] == 30 and data["keep_server"] is True


def test_ini(pytester: pytest.Pytester) -> None:
    result, data = run_dump(pytester, ini="glm_model = glm-tiny-47\nglm_profile = cpu\nglm_tp = 2\nglm_mtp = false\n"
                                          "glm_serve_arg = --max-num-seqs 8\nglm_request_timeout = 7.5\nglm_keep_server = true")
    result.assert_outcomes(passed=1)
    assert data["model"] == "glm-tiny-47" and data["family"] == "glm47"
    assert (data["tp"], data["mtp"], data["request_timeout"]) == (2, False, 7.5)
    assert data["extra_args"] == ["--max-num-seqs", "8"] and data["keep_server"] is True


def test_threshold_file(pytester: pytest.Pytester) -> None:
    path = pytester.path / "limits.toml"
    path.write_text("[thresholds]\ntool_trigger_f1 = 0.8\n")
    result, data = run_dump(pytester, f"--glm-thresholds={path}")
    result.assert_outcomes(passed=1)
    assert data["trigger_f1"] == 0.8
    path.write_text("[thresholds]\nbogus = 1\n")
    result, _ = run_dump(pytester, f"--glm-thresholds={path}")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    assert "--glm-thresholds: " in result.stderr.str() and "unknown key 'bogus'" in result.stderr.str()


def test_cli_beats_ini(pytester: pytest.Pytester) -> None:
    result, data = run_dump(pytester, "--glm-tp=1", "--glm-mtp", ini="glm_tp = 2\nglm_mtp = false")
    result.assert_outcomes(passed=1)
    assert data["tp"] == 1 and data["mtp"] is True


def test_api_key_from_environment_is_never_shown(pytester: pytest.Pytester) -> None:
    pytester._monkeypatch.setenv("GLM_API_KEY", "sk-secret-123")
    result, data = run_dump(pytester, "-v")
    assert data["api_key_set"] is True
    assert "sk-secret-123" not in data["repr"]
    assert "sk-secret-123" not in result.stdout.str() + result.stderr.str()


@pytest.mark.parametrize(("args", "message"), [
    (["--glm-model=zai-org/GLM-9"], "--glm-model: unknown model 'zai-org/GLM-9'"),
    (["--glm-profile=tpu"], "--glm-profile: unknown profile 'tpu'"),
    (["--glm-model=zai-org/GLM-4.7", "--glm-profile=h200x4"], "zai-org/GLM-4.7 needs about 734 GiB"),
    (["--glm-tp=four"], "--glm-tp: expected an integer, got 'four'"),
    (["--glm-base-url=localhost:8000"], "--glm-base-url: expected http://host:port"),
    (["--glm-request-timeout=0"], "--glm-request-timeout: must be > 0"),
    (["--glm-tp=0"], "argument --glm-tp: must be >= 1, got 0"),
    (["--glm-gpu-memory-utilization=1.5"], "argument --glm-gpu-memory-utilization: must be <= 1, got 1.5"),
    (["--glm-port=70000"], "argument --glm-port: must be <= 65535, got 70000"),
    (["--glm-baseline=/nonexistent/run.json"], "--glm-baseline: /nonexistent/run.json is not a file"),
    (["--glm-mtp-equivalence", "--glm-base-url=http://127.0.0.1:9"], "--glm-mtp-equivalence: needs a deployment "
                                                                      "this run launches"),
])
def test_bad_input_is_one_usage_error(pytester: pytest.Pytester, args: list[str], message: str) -> None:
    result, _ = run_dump(pytester, *args)
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    assert message in result.stderr.str()
    assert "Traceback" not in result.stderr.str() + result.stdout.str()


def test_a_bad_number_fails_as_the_command_line_is_read(pytester: pytest.Pytester) -> None:
    """Even under --collect-only, before any server or fixture: argparse checks the value (as xdist and
    pytest-benchmark do with their options)."""
    pytester.makepyfile("def test_nothing():\n    pass\n")
    result = pytester.runpytest_subprocess("--collect-only", "--glm-tp=0", "-p", "no:cacheprovider")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    assert "argument --glm-tp: must be >= 1, got 0" in result.stderr.str()
    result = pytester.runpytest_subprocess("--collect-only", "-p", "no:cacheprovider", "-o", "glm_tp=0")
    assert result.ret == pytest.ExitCode.USAGE_ERROR and "ini glm_tp: must be >= 1, got 0" in result.stderr.str()


def test_bad_ini_value_names_the_key(pytester: pytest.Pytester) -> None:
    result, _ = run_dump(pytester, ini="glm_port = eighty")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    assert "ini glm_port: expected an integer, got 'eighty'" in result.stderr.str()


def test_help_groups_options(pytester: pytest.Pytester) -> None:
    result = pytester.runpytest_subprocess("--help")
    text = result.stdout.str()
    assert "GLM-4.x deployment gate (pytest-glm):" in text
    for flag in ("--glm-model", "--glm-profile", "--glm-base-url", "--glm-api-key", "--glm-served-model-name",
                 "--glm-tp", "--glm-dp", "--glm-mtp", "--glm-no-mtp", "--glm-num-speculative-tokens",
                 "--glm-max-model-len", "--glm-serve-arg", "--glm-vllm", "--glm-startup-timeout",
                 "--glm-request-timeout", "--glm-keep-server", "--glm-server-log", "--glm-thresholds",
                 "--glm-baseline", "--glm-report", "--glm-plots", "--glm-mtp-equivalence"):
        assert flag in text
        if flag != "--glm-no-mtp":
            assert flag[2:].replace("-", "_") + " (" in text  # the ini key


def test_unused_plugin_launches_nothing(pytester: pytest.Pytester, no_leftover_server: None) -> None:
    pytester.makepyfile("def test_plain():\n    assert True\n")
    result = pytester.runpytest_subprocess("--glm-vllm=/nonexistent/vllm")
    result.assert_outcomes(passed=1)
    assert "starting vLLM" not in result.stdout.str()


def test_local_model_directory(pytester: pytest.Pytester, tmp_path: Path) -> None:
    template = Path(__file__).parents[2] / "pytest_glm" / "reference" / "templates" / "glm47.jinja"
    (tmp_path / "config.json").write_text(json.dumps({"architectures": ["Glm4MoeForCausalLM"],
                                                      "max_position_embeddings": 8192, "num_nextn_predict_layers": 1}))
    (tmp_path / "chat_template.jinja").write_text(template.read_text())
    result, data = run_dump(pytester, f"--glm-model={tmp_path}")
    result.assert_outcomes(passed=1)
    assert data["family"] == "glm47"
