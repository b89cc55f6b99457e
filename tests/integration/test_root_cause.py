"""A server that cannot start is reported by its root cause: the first thing the user reads is the worker's
exception, not the API server's "Engine core initialization failed. See root cause above"."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from tests.integration.servers import SUITES, reference_model_dir

pytestmark = [pytest.mark.slow, pytest.mark.broken_deployment, pytest.mark.usefixtures("no_leftover_server")]

vllm = pytest.importorskip("vllm", reason="vLLM is not installed (pip install '.[cpu]')")


def test_truncated_checkpoint_is_reported_by_the_workers_error(pytester: pytest.Pytester, tmp_path: Path) -> None:
    """glm-tiny with its model.safetensors cut in half, launched by the gate: the run stops once, and the
    report's first line names the worker and its SafetensorError, with the fix below it."""
    model = tmp_path / "glm-tiny-truncated"
    shutil.copytree(reference_model_dir(), model)
    weights = model / "model.safetensors"
    os.truncate(weights, weights.stat().st_size // 2)

    result = pytester.runpytest_subprocess(f"--glm-model={model}", "--glm-profile=cpu", "-p", "no:cacheprovider",
                                           str(SUITES / "test_preflight.py"), timeout=600)
    out = result.stdout.str()
    assert result.ret == pytest.ExitCode.TESTS_FAILED, out[-3000:]
    assert out.count("pytest-glm: deployment failed") == 1
    lines = out.splitlines()
    report = lines[next(i for i, line in enumerate(lines) if "pytest-glm: deployment failed" in line) + 1:]
    first = report[0]
    assert first.startswith("vLLM failed to start: Worker") and ": SafetensorError: Error while deserializing header" in first
    block = report[:report.index("--- last lines of the vLLM log ---")]
    assert [line for line in block if "SafetensorError" in line] == [first]  # named once, first
    assert any(line.startswith("hint: download or copy the checkpoint again") for line in block[:5])
    assert "vLLM exited during start-up (exit code 1)" in block and any(line.startswith("command: ") for line in block)
    assert "Engine core initialization failed" not in "\n".join(block)
    assert f"pytest-glm: {first}" in out  # what pytest's exit line says, too
