"""Errors raised by pytest-glm.

Every error says what went wrong *and* which option, ini key or file fixes it, so a user never has to
read a traceback to find the cause. Messages are built in ``__str__`` from structured fields.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence


class GLMError(Exception):
    """Base class of every pytest-glm error."""


class ConfigError(GLMError):
    """A bad option or ini value; reported as a pytest usage error (exit code 4)."""

    def __init__(self, option: str, problem: str, hint: str = "") -> None:
        super().__init__(option, problem, hint)
        self.option = option
        self.problem = problem
        self.hint = hint

    def __str__(self) -> str:
        text = f"{self.option}: {self.problem}"
        return f"{text}\n  {self.hint}" if self.hint else text


class UnknownModel(ConfigError):
    """``--glm-model`` names neither a registered model nor a local GLM model directory."""

    def __init__(self, value: str, known: Iterable[str]) -> None:
        known_list = ", ".join(sorted(known))
        super().__init__(
            "--glm-model",
            f"unknown model {value!r}",
            f"known models: {known_list}; or pass a local directory holding a GLM config.json",
        )


class UnknownProfile(ConfigError):
    """``--glm-profile`` names no known hardware profile."""

    def __init__(self, value: str, known: Iterable[str]) -> None:
        super().__init__(
            "--glm-profile", f"unknown profile {value!r}", f"known profiles: {', '.join(sorted(known))}, auto"
        )


class ModelDoesNotFit(ConfigError):
    """The model's weights cannot fit the profile's accelerator memory; refused before any launch."""

    def __init__(self, model: str, profile: str, need_gib: float, have_gib: float, fitting_profiles: Sequence[str],
                 fitting_models: Sequence[str]) -> None:
        hint_parts = []
        if fitting_profiles:
            hint_parts.append(f"profiles that fit {model}: {', '.join(fitting_profiles)}")
        if fitting_models:
            hint_parts.append(f"models that fit {profile}: {', '.join(fitting_models)}")
        super().__init__(
            "--glm-model/--glm-profile",
            f"{model} needs about {need_gib:.0f} GiB (weights + 10% headroom) but {profile} offers "
            f"{have_gib:.0f} GiB usable accelerator memory",
            "; ".join(hint_parts),
        )


class VLLMNotFound(ConfigError):
    """No vLLM to launch: not importable and no ``--glm-vllm`` given (or the given one does not exist)."""

    def __init__(self, detail: str) -> None:
        super().__init__(
            "--glm-vllm",
            detail,
            "install it with `pip install 'pytest-glm[cpu]'` (no GPU) or `pip install 'pytest-glm[gpu]'`, "
            "pass --glm-vllm PATH (a `vllm` executable or the python that has vLLM), "
            "or test a running server with --glm-base-url URL",
        )


class DeploymentError(GLMError):
    """The deployment under test could not be started or reached; the run stops once with this message."""

    def __init__(self, summary: str, detail: str = "", log_tail: str = "", log_path: str | None = None) -> None:
        super().__init__(summary, detail, log_tail, log_path)
        self.summary = summary
        self.detail = detail
        self.log_tail = log_tail
        self.log_path = log_path

    def __str__(self) -> str:
        parts = [self.summary]
        if self.detail:
            parts.append(self.detail)
        if self.log_tail:
            parts.append("--- last lines of the vLLM log ---")
            parts.append(self.log_tail.rstrip())
        if self.log_path:
            parts.append(f"full log: {self.log_path}")
        return "\n".join(parts)


class ServerDied(DeploymentError):
    """The launched server exited while tests were still using it."""
