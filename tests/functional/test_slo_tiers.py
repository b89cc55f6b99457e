"""SLO tiers and the KV-sized latency grid, end to end on a stub endpoint (no vLLM): a bad --glm-slo-tier,
what --collect-only prints, a cell beyond the server's KV cache skipped with its numbers before any request,
and a real model's cell judged by the default tier, which the report names."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.helpers.stream_stub import StubInThread

SUITES = Path(__file__).parents[2] / "suites"
#: What a vLLM with a 100-token KV cache reports (vllm:cache_config_info, vLLM 0.32 labels).
METRICS = ('# TYPE vllm:cache_config_info gauge\n'
           'vllm:cache_config_info{block_size="16",engine="0",kv_cache_size_tokens="100",num_gpu_blocks="7"} 1.0\n')
#: Small workloads under the seed guide's names, batch 1 (80 tokens: fits) and 2 (160: does not).
SMALL = ("batch_sizes = [1, 2]\nslo_rounds = 2\n[workloads]\n"
         "prompt_heavy = [64, 16]\ndecode_heavy = [16, 64]\nbalanced = [16, 16]\n")


@pytest.mark.parametrize("args", [["--glm-slo-tier=fast"], ["-o", "glm_slo_tier=fast"]], ids=["cli", "ini"])
def test_an_unknown_tier_is_one_line_naming_the_option_and_the_tiers(pytester: pytest.Pytester,
                                                                       args: list[str]) -> None:
    pytester.makepyfile("def test_nothing():\n    pass\n")
    result = pytester.runpytest_subprocess(*args, "--glm-model=zai-org/GLM-4.7-FP8", "--glm-profile=h200x4",
                                           "-p", "no:cacheprovider")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    errors = [line for line in result.stderr.lines if line.strip()]
    assert errors == ["ERROR: --glm-slo-tier: unknown SLO tier 'fast'", "  known tiers: auto, interactive, batch, none"]


def test_collect_only_shows_the_tier_and_the_cells_beyond_the_estimated_cache(pytester: pytest.Pytester) -> None:
    result = pytester.runpytest_subprocess(str(SUITES / "test_slo.py"), "--collect-only", "-q",
                                           "--glm-model=zai-org/GLM-4.7-FP8", "--glm-profile=h200x4",
                                           "-p", "no:cacheprovider")
    assert result.ret == 0
    result.stdout.fnmatch_lines([
        "pytest-glm: 21 latency cells: 11 judged, 10 beyond the KV cache (skipped before any request), 0 without "
        "limits (recorded, skipped); tier: auto (interactive up to batch 16, batch above)",
        "  KV cache: ~446,603 tokens (an estimate from the model config and the profile: *; the server's own "
        "figure replaces it once it is up",
        "  prompt_heavy-b16   8000/1000  judged by tier interactive",
        "  prompt_heavy-b32   8000/1000  judged by tier batch",
        "  prompt_heavy-b64   8000/1000  beyond the KV cache: needs 576,000 tokens",
        "  balanced-b128      1000/1000  judged by tier batch",
        "  balanced-b256      1000/1000  beyond the KV cache: needs 512,000 tokens",
    ])
    quick = pytester.runpytest_subprocess(str(SUITES / "test_slo.py"), "--collect-only", "-q", "--glm-quick",
                                          "--glm-slo-tier=batch", "--glm-model=zai-org/GLM-4.7-FP8",
                                          "--glm-profile=h200x4", "-p", "no:cacheprovider")
    quick.stdout.fnmatch_lines(["pytest-glm: 6 latency cells: 6 judged, 0 beyond the KV cache*; tier: batch",
                                "*decode_heavy-b32 *judged by tier batch", "*balanced-b128 *judged by tier batch"])
    assert "6 tests collected" in quick.stdout.str()


def test_a_real_models_cells_are_judged_by_the_tier_or_skipped_beyond_the_servers_cache(
        pytester: pytest.Pytester) -> None:
    pytester.makefile(".toml", small=SMALL)
    report = pytester.path / "gate.json"
    with StubInThread(metrics=METRICS) as url:
        result = pytester.runpytest_subprocess(
            str(SUITES / "test_slo.py"), f"--glm-base-url={url}", "--glm-served-model-name=stub",
            "--glm-model=zai-org/GLM-4.7-FP8", "--glm-profile=h200x4", "--glm-thresholds=small.toml",
            f"--glm-report={report}", "-rs", "-p", "no:cacheprovider", timeout=240)
    out = result.stdout.str()
    result.assert_outcomes(passed=4, skipped=2)  # balanced-b2 needs 64 tokens: it fits
    result.stdout.fnmatch_lines(["*prompt_heavy*at batch 2: batch 2 x 80 tokens (64 in + 16 out) needs 160 KV-cache "
                                 "tokens; the KV cache holds 100 (/metrics vllm:cache_config_info), 1 such requests "
                                 "at once: not runnable here*--glm-gpu-memory-utilization*"])
    assert "limit (tier interactive)" in out
    figures = json.loads(report.read_text())["suites"]["slo"]["figures"]
    judged = {f["figure"]: f for f in figures if f["check"] == "balanced-b1" and f["op"]}
    assert judged["p90_ttft_ms"]["source"] == "tier interactive" and judged["p90_ttft_ms"]["limit"] == 5000
    assert judged["median_tpot_ms"]["limit"] == 33.3 and judged["median_tpot_ms"]["passed"] is True
    assert judged["client_lag_ms"]["source"] == ""
