"""The embedded reference deployment, started the way pytest-glm serves it: one helper for the plugin's
launch, the broken-deployment tests (which edit the command first) and the benchmarks.

A reference model is built once per content into the cache (``pytest_glm.reference``), then served by the
vLLM installed here with the command the real GLM models get for the profile.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from pytest_glm.catalog.models import ModelSpec, resolve_model, with_local_path
from pytest_glm.catalog.profiles import resolve_profile
from pytest_glm.config import ServeOptions, default_cache_dir
from pytest_glm.serving.command import ServeCommand, build_serve_command, resolve_vllm
from pytest_glm.serving.launch import ServerProcess, free_port


def servable(model: ModelSpec, cache_dir: Path, *, shape_run: bool = False) -> ModelSpec:
    """The model as vLLM is handed it: a reference model built (once) and pointed at its directory; for a
    shape run (--glm-weights dummy) a registered model's directory of config, tokenizer and template built
    (once, reference/shape.py; a reference model's own directory serves, its weights unread); any other
    model as it is."""
    if shape_run and not model.reference and model.local_path is None:
        from pytest_glm.reference.shape import ensure_shape_model

        return with_local_path(model, ensure_shape_model(model, cache_dir))
    if not model.reference:
        return model
    from pytest_glm.reference import ensure_reference_model

    return with_local_path(model, ensure_reference_model(model.model_id, cache_dir))


def start_reference(name: str, log_path: Path, *, profile: str = "cpu", options: ServeOptions | None = None,
                    edit: Callable[[ServeCommand], ServeCommand] | None = None, cache_dir: Path | None = None,
                    startup_timeout: float = 900) -> ServerProcess:
    """Start reference model ``name`` on a free local port and wait until it is healthy; ``edit`` may change
    the command first (a broken deployment on purpose). The caller stops the returned server."""
    spec = servable(resolve_model(name), cache_dir or default_cache_dir())
    entry = resolve_vllm(None)
    command = build_serve_command(spec, resolve_profile(profile), options or ServeOptions(), entry.version)
    if edit is not None:
        command = edit(command)
    server = ServerProcess(command, entry, log_path, host="127.0.0.1", port=free_port(), startup_timeout=startup_timeout)
    server.start()
    return server
