"""The performance suites must fail deployments that are slow or whose MTP does not work, naming the cause.

Each test serves glm-tiny with one thing wrong and points the shipped MTP/SLO suites at it with
--glm-base-url (the correct deployment passing is `pytest suites/` itself, which CI runs).
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from tests.integration.servers import HEALTHY_EXTRA, SUITES, broken_server, drop, gate, reference_model_dir

pytestmark = [pytest.mark.slow, pytest.mark.broken_deployment, pytest.mark.usefixtures("no_leftover_server")]

vllm = pytest.importorskip("vllm", reason="vLLM is not installed (pip install '.[cpu]')")

MTP_LAYER = "model.layers.2."  # glm-tiny: 2 decoder layers, then the MTP layer


def test_mtp_off_while_expected(pytester: pytest.Pytester, tmp_path: Path) -> None:
    """glm-tiny is published with MTP on; a server started without --speculative-config must fail the gate."""
    with broken_server(tmp_path, drop("--speculative-config.method"),
                       drop("--speculative-config.num_speculative_tokens")) as url:
        out = gate(pytester, url, str(SUITES / "test_mtp.py"), "-k", "acceptance and prose")
    assert "MTP is expected (glm-tiny's published serving command turns MTP on" in out
    assert "/metrics has no speculative-decoding counters" in out


def damaged_mtp_copy(dest: Path) -> Path:
    """A copy of glm-tiny whose MTP layer's projection of [embedding; hidden] is replaced by noise."""
    import torch
    from safetensors.torch import load_file, save_file

    src = reference_model_dir()
    shutil.copytree(src, dest)
    tensors = load_file(str(src / "model.safetensors"))
    generator = torch.Generator().manual_seed(0)
    name = f"{MTP_LAYER}eh_proj.weight"
    assert name in tensors, sorted(k for k in tensors if k.startswith(MTP_LAYER))
    original = tensors[name]
    noise = torch.randn(original.shape, generator=generator) * original.float().std()
    tensors[name] = noise.to(original.dtype)
    save_file(tensors, str(dest / "model.safetensors"), metadata={"format": "pt"})
    return dest


def test_damaged_mtp_layer(pytester: pytest.Pytester, tmp_path: Path) -> None:
    model = damaged_mtp_copy(tmp_path / "glm-tiny-damaged-mtp")
    with broken_server(tmp_path, model_dir=model) as url:
        out = gate(pytester, url, str(SUITES / "test_mtp.py"), "-k", "acceptance")
    print("\n".join(line for line in out.splitlines() if "acceptance rate" in line))
    assert "MTP acceptance rate" in out and "is below 0.80" in out
    assert "damaged or mismatched MTP layer" in out
    assert "at concurrency 8: MTP acceptance rate" in out  # the batched measurement fails too


def test_throttled_server_fails_tight_slo_and_baseline(pytester: pytest.Pytester, tmp_path: Path,
                                                        healthy_upstream: str) -> None:
    """Record a baseline on the correct (shared) server, then serve one sequence at a time (--max-num-seqs 1): at batch
    8 requests queue, so a tight TTFT threshold and the >10 % regression check against the baseline both fail."""
    cell = "balanced-b8"
    baseline = tmp_path / "baseline.json"
    gate(pytester, healthy_upstream, str(SUITES / "test_slo.py"), "-k", cell, f"--benchmark-json={baseline}",
         expect=pytest.ExitCode.OK)
    assert baseline.is_file()

    tight = tmp_path / "tight.toml"
    tight.write_text("[slo.balanced.8]\nmedian_ttft_ms = 400\n")
    with broken_server(tmp_path, extra=("--max-num-seqs", "1", *HEALTHY_EXTRA)) as url:
        out = gate(pytester, url, str(SUITES / "test_slo.py"), "-k", cell, f"--glm-thresholds={tight}",
                   f"--glm-baseline={baseline}")
    print("\n".join(line for line in out.splitlines() if "measured" in line))
    assert "median_ttft_ms (median time to first token) measured" in out and "needed <= 400 ms" in out
    assert "output_throughput (output tokens per second) measured" in out and "(baseline " in out
    assert "this run is -" in out  # the throughput fell by more than the 10 % tolerance
