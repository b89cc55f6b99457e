"""SLO tiers (catalog/tiers.py), the KV capacity estimate and readers (catalog/kv_capacity.py), and the latency
grid's sizing (catalog/latency_grid.py)."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest

from pytest_glm.catalog import latency_grid, tiers
from pytest_glm.catalog.kv_capacity import KVCapacity, beyond, estimate, from_log, from_metrics, kv_dtype_bytes
from pytest_glm.catalog.models import REFERENCE_MODELS, resolve_model
from pytest_glm.catalog.profiles import PROFILES, load_thresholds, with_tier
from pytest_glm.config import option_defaults, resolve
from pytest_glm.exceptions import ConfigError

GLM47_FP8 = resolve_model("zai-org/GLM-4.7-FP8")
FLASH = resolve_model("zai-org/GLM-4.7-Flash")
AIR_FP8 = resolve_model("zai-org/GLM-4.5-Air-FP8")


# -- tiers -----------------------------------------------------------------------------------------------
def test_interactive_follows_prompt_size_and_active_parameters() -> None:
    big = tiers.limits("interactive", 8000, 1000, 16, 32.0)
    assert big == {"median_ttft_ms": 4000.0, "p90_ttft_ms": 5000.0, "median_tpot_ms": 33.3, "p99_itl_ms": 150.0,
                   "goodput_ratio": 0.90}
    short = tiers.limits("interactive", 1000, 1000, 16, 32.0)
    assert short["median_ttft_ms"] == 2000.0 and short["p90_ttft_ms"] == 5000.0
    assert tiers.limits("interactive", 20_000, 1000, 1, 32.0)["p90_ttft_ms"] == 8000.0
    assert tiers.limits("interactive", 1000, 1000, 1, 3.0)["median_tpot_ms"] == 10.0  # <= 10B active: >= 100 tok/s
    assert tiers.limits("interactive", 1000, 1000, 1, 12.0)["median_tpot_ms"] == 33.3  # Air: above 10B
    assert tiers.limits("interactive", 1000, 1000, 1, None)["median_tpot_ms"] == 33.3  # unknown: a large model


def test_batch_tier_scales_throughput_with_the_batch() -> None:
    assert tiers.limits("batch", 1000, 8000, 64, 32.0) == {"median_tpot_ms": 100.0, "output_throughput": 640.0}
    flash = tiers.limits("batch", 1000, 8000, 64, 3.0)
    assert flash["median_tpot_ms"] == 30.0 and flash["output_throughput"] == pytest.approx(64 * 100 / 3)
    assert tiers.limits("none", 1000, 1000, 1, 32.0) == {}


def test_the_seed_guides_expected_output_passes_both_tiers() -> None:
    """GLM-4.5-FP8, 8000 in / 1000 out, 16 prompts: mean TTFT 2100.95 ms, mean TPOT 22.35 ms, 651.58 tok/s."""
    interactive = tiers.limits("interactive", 8000, 1000, 16, 32.0)
    assert interactive["median_ttft_ms"] >= 2100.95 and interactive["median_tpot_ms"] >= 22.35
    assert tiers.limits("batch", 8000, 1000, 16, 32.0)["output_throughput"] <= 651.58


def test_a_threshold_file_overrides_the_tier_figure_by_figure(tmp_path: Path) -> None:
    profile = with_tier(PROFILES["h200x4"], "interactive", GLM47_FP8)
    path = tmp_path / "glm47.toml"
    path.write_text("[slo.balanced]\np90_ttft_ms = 900\n")
    thresholds = load_thresholds(path, profile.thresholds)
    sourced = thresholds.slo_limit_sources("balanced", 16)
    assert sourced["p90_ttft_ms"] == (900.0, "file glm47.toml")
    assert sourced["median_tpot_ms"] == (33.3, "tier interactive")
    assert latency_grid.judged_by(thresholds, "balanced", 16) == "tier interactive + file glm47.toml"
    assert thresholds.goodput_for("balanced") == {"ttft": 5000.0, "tpot": 33.3}


def test_real_models_get_the_default_tier_and_reference_models_their_files() -> None:
    real = resolve({**option_defaults(), "model": "zai-org/GLM-4.7-FP8", "profile": "h200x4", "base_url": None})
    assert real.profile.thresholds.slo_tier == "auto"
    assert real.profile.thresholds.active_params_b == 32.0
    tiny = resolve({**option_defaults(), "model": "glm-tiny", "profile": "h200x1"})
    assert tiny.profile.thresholds.slo_tier is None
    assert tiny.profile.thresholds.slo_limit_sources("balanced", 16)["p99_ttft_ms"] == (480.0, "reference h200x1.reference.toml")
    batch = resolve({**option_defaults(), "model": "zai-org/GLM-4.7-FP8", "profile": "h200x4", "slo_tier": "batch"})
    assert batch.profile.thresholds.slo_limits("balanced", 16) == {"median_tpot_ms": 100.0, "output_throughput": 160.0}
    off = resolve({**option_defaults(), "model": "zai-org/GLM-4.7-FP8", "profile": "h200x4", "slo_tier": "none"})
    assert off.profile.thresholds.slo_limits("balanced", 16) == {}


def test_an_unknown_tier_names_the_option_and_the_tiers() -> None:
    with pytest.raises(ConfigError) as err:
        resolve({**option_defaults(), "model": "zai-org/GLM-4.7-FP8", "profile": "h200x4", "slo_tier": "fast"})
    assert "--glm-slo-tier" in str(err.value) and "auto, interactive, batch, none" in str(err.value)


# -- KV capacity -----------------------------------------------------------------------------------------
def test_estimate_for_glm47_fp8_on_four_h200s() -> None:
    """(4 x 140.4 x 0.9 - 337 - 4 x 2.5) GiB over 93 layers x 2 x 8 x 128 x 2 bytes: ~446k tokens, 49 requests
    of 9000 tokens."""
    cap = estimate(GLM47_FP8, PROFILES["h200x4"], mtp=True)
    assert cap is not None and cap.estimated
    assert 440_000 < cap.tokens < 450_000
    assert cap.tokens // 9000 == 49
    assert "380,928 bytes a token" in cap.detail
    assert estimate(GLM47_FP8, PROFILES["h200x4"], mtp=True, dtype_bytes=1).tokens == pytest.approx(2 * cap.tokens, rel=1e-3)


def test_estimate_matches_the_shape_runs() -> None:
    """shared/shape-runs.md: GLM-4.7-Flash BF16 on one H200 had 68.3 GiB of KV cache = 1.35 M tokens (MLA)."""
    flash = estimate(FLASH, PROFILES["h200x1"], mtp=False)
    assert flash is not None and flash.tokens == pytest.approx(1.35e6, rel=0.05)  # registry weights: 58 GiB, not 55.9
    air = estimate(AIR_FP8, PROFILES["h200x1"], gpu_memory_utilization=0.95, mtp=False)
    assert air is not None and air.tokens == pytest.approx(27.1 * 1024**3 / 188_416, rel=0.05)


def test_no_estimate_without_geometry_or_on_cpu() -> None:
    assert estimate(REFERENCE_MODELS["glm-tiny"], PROFILES["h200x1"]) is None
    assert estimate(GLM47_FP8, replace(PROFILES["cpu"], memory_gib=64.0)) is None
    assert estimate(None, PROFILES["h200x4"]) is None


METRICS = """\
# HELP vllm:cache_config_info Information of the LLMEngine CacheConfig
# TYPE vllm:cache_config_info gauge
vllm:cache_config_info{block_size="16",cache_dtype="auto",enable_prefix_caching="True",engine="0",gpu_memory_utilization="0.9",kv_cache_size_tokens="None",num_cpu_blocks="None",num_gpu_blocks="27913",prefix_caching_hash_algo="sha256"} 1.0
# HELP vllm:num_requests_running Number of requests in model execution batches.
vllm:num_requests_running{engine="0",model_name="glm-4.7-fp8"} 0.0
"""


def test_capacity_from_metrics_blocks_and_size() -> None:
    cap = from_metrics(METRICS)
    assert cap == KVCapacity(27913 * 16, "/metrics vllm:cache_config_info", "num_gpu_blocks 27,913 x block_size 16")
    assert not cap.estimated


def test_capacity_from_metrics_prefers_kv_cache_size_tokens_and_sums_engines() -> None:
    two = METRICS.replace('kv_cache_size_tokens="None"', 'kv_cache_size_tokens="400000"')
    two += two.splitlines()[2].replace('engine="0"', 'engine="1"') + "\n"
    cap = from_metrics(two)
    assert cap is not None and cap.tokens == 800_000 and "over 2 engines" in cap.detail
    assert from_metrics("vllm:num_requests_running 0.0\n") is None
    assert from_metrics(METRICS.replace('num_gpu_blocks="27913"', 'num_gpu_blocks="None"')) is None


def test_capacity_from_the_server_log() -> None:
    log = ("(EngineCore_DP0 pid=11) INFO 12-03 10:00:01 [kv_cache_utils.py:2329] GPU KV cache size: 446,608 tokens, "
           "Maximum concurrency for 202,752 tokens per request: 2.20x\n"
           "(EngineCore_DP1 pid=12) INFO 12-03 10:00:01 [kv_cache_utils.py:2329] GPU KV cache size: 446,608 tokens\n")
    cap = from_log(log)
    assert cap is not None and cap.tokens == 2 * 446_608 and cap.source == "server log"
    assert from_log("INFO nothing here\n") is None


def test_kv_cache_dtype_from_serve_flags() -> None:
    assert kv_dtype_bytes(("--kv-cache-dtype", "fp8")) == 1
    assert kv_dtype_bytes(("--kv-cache-dtype=fp8_e4m3",)) == 1
    assert kv_dtype_bytes(("--max-num-seqs", "8")) == 2


# -- grid sizing -----------------------------------------------------------------------------------------
def test_a_cell_beyond_the_cache_is_named_with_its_numbers() -> None:
    cap = KVCapacity(446_603, "estimate")
    assert beyond(cap, 49, 8000, 1000) is None
    why = beyond(cap, 64, 8000, 1000)
    assert why is not None
    assert "needs 576,000 KV-cache tokens" in why and "~446,603" in why and "49 such requests" in why
    assert "--glm-gpu-memory-utilization" in why and "--glm-tp" in why
    assert beyond(None, 512, 8000, 1000) is None  # unknown: the cell runs


def test_plan_and_quick_selection() -> None:
    thresholds = with_tier(PROFILES["h200x4"], "interactive", GLM47_FP8).thresholds
    cap = estimate(GLM47_FP8, PROFILES["h200x4"], mtp=True)
    plans = latency_grid.plan(thresholds, latency_grid.grid(thresholds), cap)
    held = {p.name for p in plans if p.not_runnable}
    assert held == {"prompt_heavy-b64", "prompt_heavy-b128", "prompt_heavy-b256", "prompt_heavy-b512",
                    "decode_heavy-b64", "decode_heavy-b128", "decode_heavy-b256", "decode_heavy-b512",
                    "balanced-b256", "balanced-b512"}
    assert all(p.judged_by == "tier interactive" for p in plans)
    assert latency_grid.quick(thresholds, cap) == [("prompt_heavy", 1), ("prompt_heavy", 32), ("decode_heavy", 1),
                                                   ("decode_heavy", 32), ("balanced", 1), ("balanced", 128)]
    assert latency_grid.quick(thresholds, None)[:2] == [("prompt_heavy", 1), ("prompt_heavy", 512)]
    lines = latency_grid.summary(plans, cap, "interactive")
    assert lines[0].startswith("pytest-glm: 21 latency cells: 11 judged, 10 beyond the KV cache")
    assert "an estimate from the model config" in lines[1]


def test_auto_judges_small_batches_as_interactive_and_large_ones_as_throughput():
    from pytest_glm.catalog import tiers

    assert tiers.for_cell("auto", 1) == tiers.for_cell("auto", 16) == "interactive"
    assert tiers.for_cell("auto", 32) == tiers.for_cell("auto", 512) == "batch"
    assert tiers.for_cell("interactive", 512) == "interactive"  # asked for: every cell
    assert "p90_ttft_ms" in tiers.limits("auto", 8000, 1000, 16, 32.0)
    big = tiers.limits("auto", 8000, 1000, 64, 32.0)
    assert "p90_ttft_ms" not in big and big["output_throughput"] == 64 * 10.0
    assert tiers.goodput_slo_ms("auto", 8000, 32.0, batch=64) == {}
