"""Serving glm-tiny wrongly on purpose, for the broken-deployment tests: the correct command with edits."""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from pytest_glm.catalog.models import resolve_model
from pytest_glm.config import default_cache_dir
from pytest_glm.serving.command import ServeCommand
from pytest_glm.serving.launch import ServerProcess
from pytest_glm.serving.reference_server import servable, start_reference

SUITES = Path(__file__).parents[2] / "suites"
TEMPLATES = Path(__file__).parents[2] / "pytest_glm" / "reference" / "templates"
Edit = Callable[[list[str]], list[str]]


def reference_model_dir() -> Path:
    return Path(servable(resolve_model("glm-tiny"), default_cache_dir()).source)


def drop(flag: str, takes_value: bool = True) -> Edit:
    def edit(args: list[str]) -> list[str]:
        i = args.index(flag)
        return args[:i] + args[i + 1 + takes_value:]
    return edit


def replace(flag: str, value: str) -> Edit:
    def edit(args: list[str]) -> list[str]:
        args = list(args)
        args[args.index(flag) + 1] = value
        return args
    return edit


@contextlib.contextmanager
def broken_server(tmp_path: Path, *edits: Edit, extra: tuple[str, ...] = (), model_dir: Path | None = None) -> Iterator[str]:
    """glm-tiny served with the edits applied to the correct command; yields the base URL."""

    def broken(command: ServeCommand) -> ServeCommand:
        args = list(command.args)
        for edit in edits:
            args = edit(args)
        return dataclasses.replace(command, model=str(model_dir or command.model), args=(*args, *extra))

    server = start_reference("glm-tiny", tmp_path / "broken.log", edit=broken, startup_timeout=600)
    try:
        yield server.base_url
    finally:
        server.stop()


#: What the shared healthy server adds to the correct command (tests/integration/conftest.py).
HEALTHY_EXTRA = ("--stream-interval", "4")


def start_healthy(log_path: Path) -> ServerProcess:
    """glm-tiny served correctly (plus :data:`HEALTHY_EXTRA`); the caller stops it."""
    def chunky(command: ServeCommand) -> ServeCommand:
        return dataclasses.replace(command, args=(*command.args, *HEALTHY_EXTRA))

    return start_reference("glm-tiny", log_path, edit=chunky, startup_timeout=600)


def gate(pytester: pytest.Pytester, url: str, *args: str, expect: int = pytest.ExitCode.TESTS_FAILED) -> str:
    """Run the shipped suites against ``url``; the run must end with ``expect`` (by default: tests failed)."""
    result = pytester.runpytest_subprocess(f"--glm-base-url={url}", "--glm-model=glm-tiny", "-p", "no:cacheprovider",
                                           *args, timeout=600)
    out = result.stdout.str()
    assert result.ret == expect, out[-3000:]
    return out
