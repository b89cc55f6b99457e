"""Deployment variants: the same model and profile served the way some production fleets serve it, where
GLM bugs showed up that the default command never exercises.

Heavier chunking is the main one: with several tokens per stream chunk (MTP drafting 3 tokens a step, or
``--stream-interval`` batching output), a whole tool call can arrive in one or two deltas, and streaming
parsers that assume one token per delta drop or duplicate pieces. ``--glm-variant NAME`` (repeatable)
launches the deployment with the variant's flags; the correctness suites then judge it exactly as always,
and the report names the variant.
"""

from __future__ import annotations

from dataclasses import dataclass

from pytest_glm.exceptions import ConfigError


@dataclass(frozen=True)
class Variant:
    """One way of serving that changes how output reaches the client.

    :param speculative_tokens: MTP draft tokens per step (MTP is turned on), or None to leave them.
    :param serve_args: extra ``vllm serve`` arguments.
    :param since: first vLLM version with the flags (None: any).
    """

    name: str
    description: str
    speculative_tokens: int | None = None
    serve_args: tuple[str, ...] = ()
    since: tuple[int, ...] | None = None
    since_note: str = ""


VARIANTS: dict[str, Variant] = {v.name: v for v in (
    Variant("mtp3", "MTP drafting 3 tokens a step (--speculative-config.num_speculative_tokens 3): up to 4 "
            "tokens land per stream chunk", speculative_tokens=3),
    Variant("stream-interval-4", "--stream-interval 4: the server sends output every 4 tokens",
            serve_args=("--stream-interval", "4"), since=(0, 11, 1),
            since_note="--stream-interval exists since vLLM 0.11.1 (vllm-project/vllm#27869)"),
)}


def resolve_variants(names: tuple[str, ...]) -> tuple[Variant, ...]:
    """The variants named by ``--glm-variant`` (each may be a comma-separated list), in order, once each."""
    out: list[Variant] = []
    for name in (n.strip() for item in names for n in item.split(",")):
        if not name:
            continue
        if name not in VARIANTS:
            raise ConfigError("--glm-variant", f"unknown variant {name!r}; known: {', '.join(VARIANTS)}")
        if VARIANTS[name] not in out:
            out.append(VARIANTS[name])
    return tuple(out)
