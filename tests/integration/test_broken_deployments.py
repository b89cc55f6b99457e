"""The gate must fail deliberately broken deployments of the reference model, naming the symptom.

Each test serves glm-tiny with one thing wrong (a flag dropped or swapped, the other family's chat
template), points the shipped suites at it with --glm-base-url, and checks that they fail and say why.
The correct deployment passing is `pytest suites/` itself (CI runs it) and test_reference_models.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from pytest_glm.command import ServeOptions, build_serve_command, resolve_vllm
from pytest_glm.launch import ServerProcess, free_port
from pytest_glm.models import resolve_model, with_local_path
from pytest_glm.profiles import resolve_profile
from pytest_glm.reference import ensure_reference_model

pytestmark = [pytest.mark.slow, pytest.mark.broken_deployment, pytest.mark.usefixtures("no_leftover_server")]

vllm = pytest.importorskip("vllm", reason="vLLM is not installed (pip install '.[cpu]')")

SUITES = Path(__file__).parents[2] / "suites"
TEMPLATES = Path(__file__).parents[2] / "pytest_glm" / "reference" / "templates"
Edit = Callable[[list[str]], list[str]]


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
def broken_server(tmp_path: Path, *edits: Edit, extra: tuple[str, ...] = ()) -> Iterator[str]:
    """glm-tiny served with the edits applied to the correct command; yields the base URL."""
    import os

    spec = resolve_model("glm-tiny")
    cache = Path(os.environ.get("PYTEST_GLM_CACHE", Path.home() / ".cache" / "pytest-glm"))
    spec = with_local_path(spec, ensure_reference_model("glm-tiny", cache))
    command = build_serve_command(spec, resolve_profile("cpu"), ServeOptions())
    args = list(command.args)
    for edit in edits:
        args = edit(args)
    command = type(command)(model=command.model, args=(*args, *extra), env=command.env, mtp=command.mtp,
                            served_model_name=command.served_model_name)
    server = ServerProcess(command, resolve_vllm(None), tmp_path / "broken.log", host="127.0.0.1", port=free_port(),
                           startup_timeout=600)
    server.start()
    try:
        yield server.base_url
    finally:
        server.stop()


def gate(pytester: pytest.Pytester, url: str, *args: str) -> str:
    result = pytester.runpytest_subprocess(f"--glm-base-url={url}", "--glm-model=glm-tiny", "-p", "no:cacheprovider",
                                           *args, timeout=600)
    out = result.stdout.str()
    assert result.ret == pytest.ExitCode.TESTS_FAILED, out[-3000:]
    return out


def test_no_tool_call_parser(pytester: pytest.Pytester, tmp_path: Path) -> None:
    with broken_server(tmp_path, drop("--tool-call-parser"), drop("--enable-auto-tool-choice", False)) as url:
        out = gate(pytester, url, str(SUITES / "test_tool_calling.py"), "-k", "single or irrelevance")
    assert "the server rejected the request" in out and "--tool-call-parser" in out


def test_no_auto_tool_choice(pytester: pytest.Pytester, tmp_path: Path) -> None:
    with broken_server(tmp_path, drop("--enable-auto-tool-choice", False)) as url:
        out = gate(pytester, url, str(SUITES / "test_tool_calling.py"), "-k", "single.weather")
    assert "the server rejected the request" in out and "--enable-auto-tool-choice" in out


def test_parser_of_another_model_family(pytester: pytest.Pytester, tmp_path: Path) -> None:
    with broken_server(tmp_path, replace("--tool-call-parser", "hermes")) as url:
        out = gate(pytester, url, str(SUITES / "test_tool_calling.py"), "-k", "single or parallel")
    assert "finish_reason 'stop', expected 'tool_calls'" in out
    assert "content contains raw '<tool_call>': markup leaked past the parser" in out


def test_no_reasoning_parser(pytester: pytest.Pytester, tmp_path: Path) -> None:
    with broken_server(tmp_path, drop("--reasoning-parser")) as url:
        out = gate(pytester, url, str(SUITES / "test_reasoning.py"), "-k", "test_case and arithmetic")
    assert "thinking is on but no reasoning came back (reasoning parser missing or wrong?)" in out
    assert "content contains raw '<think>'" in out


def test_chat_template_of_the_other_family(pytester: pytest.Pytester, tmp_path: Path) -> None:
    with broken_server(tmp_path, extra=("--chat-template", str(TEMPLATES / "glm47.jinja"))) as url:
        out = gate(pytester, url, str(SUITES / "test_preflight.py"), str(SUITES / "test_tool_calling.py"),
                   "-k", "template or single.weather")
    assert "chat template mismatch for glm-tiny (glm45)" in out and "this is the glm47 family's template" in out
    assert "the served chat template differs from GLM's glm45 format" in out
