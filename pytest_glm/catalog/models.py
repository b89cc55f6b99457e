"""The GLM-4.x model registry, and recognition of a local GLM model directory.

A model's *family* decides everything format-related: ``glm45`` (GLM-4.5, 4.5-Air, 4.6: newline after role
headers, ``/nothink``) or ``glm47`` (GLM-4.7, 4.7-Flash: compact tool calls, ``<think>`` in the generation
prompt). The tool-call parser follows the family; the reasoning parser is ``glm45`` for all of them.
No pytest import here: this module is pure data.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from pytest_glm.exceptions import ConfigError, UnknownModel

GIB = 1024**3



@dataclass(frozen=True)
class ModelSpec:
    """What the gate needs to know about one GLM checkpoint.

    :param model_id: Hugging Face id, or the local directory's path.
    :param family: ``glm45`` or ``glm47`` (chat template and tool-call layout).
    :param architecture: ``Glm4MoeForCausalLM`` or ``Glm4MoeLiteForCausalLM``.
    :param context_length: ``max_position_embeddings`` of the checkpoint.
    :param mtp_layers: number of MTP (nextn) layers; 0 means speculative decoding by MTP is impossible.
    :param weight_gib: size of the weights on disk (and so in accelerator memory), GiB.
    :param precision: ``bf16`` or ``fp8``.
    :param mtp_recommended: whether the published serving command turns MTP on.
    :param served_name: the ``--served-model-name`` of the published serving command.
    :param reference: one of the project's tiny reference models, built locally.
    :param prompt_vocab: latency prompts draw token ids from ``range(prompt_vocab)``: the ordinary tokens,
        below the first special token (GLM-4.5..4.7: ``<|endoftext|>`` = 151329; Flash: 154820).
    :param active_params_b: parameters active per token, in billions (zai-org README: 355B-A32B, 106B-A12B,
        30B-A3B); the SLO tiers' per-request decode speed depends on it (catalog/tiers.py). None: unknown.
    :param num_layers: decoder layers (``num_hidden_layers``), for the KV cache estimate (catalog/kv_capacity.py).
    :param kv_heads: ``num_key_value_heads`` (GQA); 0 for MLA.
    :param head_dim: ``head_dim`` (GQA).
    :param mla_dim: with MLA, what one layer caches per token: ``kv_lora_rank + qk_rope_head_dim`` (0: GQA).
    """

    model_id: str
    family: str
    architecture: str
    context_length: int
    mtp_layers: int
    weight_gib: float
    precision: str
    mtp_recommended: bool
    served_name: str
    reference: bool = False
    local_path: str | None = None
    prompt_vocab: int = 151329
    active_params_b: float | None = None
    num_layers: int = 0
    kv_heads: int = 0
    head_dim: int = 0
    mla_dim: int = 0

    @property
    def has_mtp(self) -> bool:
        return self.mtp_layers > 0

    @property
    def source(self) -> str:
        """What ``vllm serve`` is given: the local directory when there is one, else the hub id."""
        return self.local_path or self.model_id


#: KV geometry (glm-facts §2.1) and active parameters (§2.2) by shape: GLM-4.5/4.6/4.7 (355B-A32B, 92 layers,
#: 8 KV heads of 128), GLM-4.5-Air (106B-A12B, 46 layers, 8 x 128), GLM-4.7-Flash (30B-A3B, 47 layers of MLA
#: caching kv_lora_rank 512 + qk_rope_head_dim 64 per token).
_SHAPES: dict[str, dict[str, Any]] = {
    "355b": {"active_params_b": 32.0, "num_layers": 92, "kv_heads": 8, "head_dim": 128},
    "air": {"active_params_b": 12.0, "num_layers": 46, "kv_heads": 8, "head_dim": 128},
    "flash": {"active_params_b": 3.0, "num_layers": 47, "mla_dim": 576},
}


def _hub(model_id: str, family: str, ctx: int, weight_gib: float, *, mtp: bool,
         arch: str = "Glm4MoeForCausalLM", prompt_vocab: int = 151329) -> ModelSpec:
    precision = "fp8" if model_id.endswith("-FP8") else "bf16"
    shape = "flash" if "Flash" in model_id else "air" if "Air" in model_id else "355b"
    return ModelSpec(model_id=model_id, family=family, architecture=arch, context_length=ctx, mtp_layers=1,
                     weight_gib=weight_gib, precision=precision, mtp_recommended=mtp,
                     served_name=model_id.split("/", 1)[1].lower(), prompt_vocab=prompt_vocab, **_SHAPES[shape])


# Weight sizes: total parameters (main model + MTP layer, glm-facts §2.2) x 2 bytes for BF16; the FP8
# checkpoints keep embeddings, norms and routers in BF16, about 1.01 bytes a parameter.
REGISTRY: dict[str, ModelSpec] = {
    spec.model_id: spec
    for spec in (
        _hub("zai-org/GLM-4.5", "glm45", 131072, 667.0, mtp=False),
        _hub("zai-org/GLM-4.5-FP8", "glm45", 131072, 337.0, mtp=False),
        _hub("zai-org/GLM-4.5-Air", "glm45", 131072, 205.0, mtp=False),
        _hub("zai-org/GLM-4.5-Air-FP8", "glm45", 131072, 104.0, mtp=False),
        _hub("zai-org/GLM-4.6", "glm45", 202752, 665.0, mtp=False),
        _hub("zai-org/GLM-4.6-FP8", "glm45", 202752, 336.0, mtp=False),
        _hub("zai-org/GLM-4.7", "glm47", 202752, 667.0, mtp=True),
        _hub("zai-org/GLM-4.7-FP8", "glm47", 202752, 337.0, mtp=True),
        # No official FP8 checkpoint of GLM-4.7-Flash is published (zai-org README).
        _hub("zai-org/GLM-4.7-Flash", "glm47", 202752, 58.0, mtp=True, arch="Glm4MoeLiteForCausalLM",
             prompt_vocab=154820),
    )
}

#: The project's tiny reference models (see pytest_glm.reference): plumbing fixtures, not language models.
REFERENCE_MODELS: dict[str, ModelSpec] = {
    name: ModelSpec(model_id=name, family=family, architecture="Glm4MoeForCausalLM", context_length=32768,
                    mtp_layers=1, weight_gib=0.01, precision="bf16", mtp_recommended=True, served_name=name,
                    reference=True, prompt_vocab=320)  # trained on random prompts over all 320 ids
    for name, family in (("glm-tiny", "glm45"), ("glm-tiny-47", "glm47"), ("glm-tiny-variant", "glm45"))
}

DEFAULT_MODEL = "glm-tiny"


def known_models() -> list[str]:
    return [*REFERENCE_MODELS, *REGISTRY]


def resolve_model(value: str) -> ModelSpec:
    """Turn ``--glm-model`` into a spec: a reference name, a registered hub id (case-insensitive, the
    ``zai-org/`` prefix optional), or a local model directory."""
    if value in REFERENCE_MODELS:
        return REFERENCE_MODELS[value]
    by_lower = {k.lower(): v for k, v in REGISTRY.items()}
    for candidate in (value, f"zai-org/{value}"):
        if candidate.lower() in by_lower:
            return by_lower[candidate.lower()]
    path = Path(value).expanduser()
    if path.is_dir():
        return spec_from_directory(path)
    raise UnknownModel(value, known_models())


def guess_model(served_name: str) -> ModelSpec | None:
    """Best guess of the registered model behind a served name such as ``glm-4.7-fp8`` (or None)."""
    name = served_name.lower().rstrip("/").rsplit("/", 1)[-1]
    for spec in (*REFERENCE_MODELS.values(), *REGISTRY.values()):
        if name in (spec.served_name, spec.model_id.lower().rsplit("/", 1)[-1]):
            return spec
    return None


def _chat_template_text(path: Path) -> str:
    jinja = path / "chat_template.jinja"
    if jinja.is_file():
        return jinja.read_text(encoding="utf-8")
    tok_cfg = path / "tokenizer_config.json"
    if tok_cfg.is_file():
        template = json.loads(tok_cfg.read_text(encoding="utf-8")).get("chat_template")
        if isinstance(template, str):
            return template
    return ""


def render_template(template: str, messages: list[dict[str, Any]], **kwargs: Any) -> str:
    """Render a chat template the way transformers (and so vLLM) does: sandboxed Jinja with
    ``trim_blocks``/``lstrip_blocks`` and a ``tojson`` that keeps non-ASCII and Python's separators."""
    from jinja2.ext import loopcontrols
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    def tojson(value: Any, ensure_ascii: bool = False, indent: int | None = None, separators: Any = None,
               sort_keys: bool = False) -> str:
        return json.dumps(value, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys)

    def raise_exception(message: str) -> None:
        raise ValueError(message)

    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True, extensions=[loopcontrols])
    env.filters["tojson"] = tojson
    env.globals["raise_exception"] = raise_exception
    return env.from_string(template).render(messages=messages, **kwargs)


def family_of_template(template: str) -> str | None:
    """Tell the two GLM template families apart by what they render for one user turn.

    GLM-4.5/4.6 put a newline after the role header (``<|user|>`` NEWLINE ``hi``); GLM-4.7 does not, and opens the
    think block in the generation prompt (``<|user|>hi<|assistant|><think>``).
    """
    try:
        text = render_template(template, [{"role": "user", "content": "hi"}], add_generation_prompt=True)
    except Exception:  # an unrenderable template is simply not recognised
        return None
    if "<|user|>\nhi" in text:
        return "glm45"
    if "<|user|>hi<|assistant|>" in text:
        return "glm47"
    return None


def spec_from_directory(path: Path) -> ModelSpec:
    """Recognise a local GLM checkpoint from its ``config.json`` and chat template."""
    config_file = path / "config.json"
    if not config_file.is_file():
        raise ConfigError("--glm-model", f"{path} is a directory without a config.json",
                          "pass a Hugging Face model directory (config.json, tokenizer, safetensors)")
    try:
        config = json.loads(config_file.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise ConfigError("--glm-model", f"{config_file} is not valid JSON: {exc}") from exc
    archs = config.get("architectures") or []
    arch = archs[0] if archs else ""
    if arch not in ("Glm4MoeForCausalLM", "Glm4MoeLiteForCausalLM"):
        raise ConfigError("--glm-model", f"{config_file} declares architecture {arch or 'none'!r}",
                          "pytest-glm validates GLM-4.x MoE checkpoints (Glm4MoeForCausalLM, Glm4MoeLiteForCausalLM)")
    template = _chat_template_text(path)
    family = family_of_template(template)
    if family is None:
        if not template:
            problem = f"{path} has no chat template (chat_template.jinja or tokenizer_config.json)"
        else:
            problem = f"the chat template in {path} is neither the GLM-4.5/4.6 nor the GLM-4.7 format"
        raise ConfigError("--glm-model", problem, "GLM-4.x deployments need the model's own chat template")
    weights = sum(f.stat().st_size for f in path.glob("*.safetensors"))
    quant = (config.get("quantization_config") or {}).get("quant_method", "")
    precision = "fp8" if quant in ("fp8", "compressed-tensors") else "bf16"
    spec = ModelSpec(
        model_id=str(path), family=family, architecture=arch,
        context_length=int(config.get("max_position_embeddings", 0)),
        mtp_layers=int(config.get("num_nextn_predict_layers", 0)),
        weight_gib=weights / GIB, precision=precision, mtp_recommended=family == "glm47",
        served_name=path.resolve().name.lower(), local_path=str(path), prompt_vocab=_prompt_vocab(config),
        num_layers=int(config.get("num_hidden_layers") or 0),
        kv_heads=0 if config.get("kv_lora_rank") else int(config.get("num_key_value_heads") or 0),
        head_dim=int(config.get("head_dim") or 0),
        mla_dim=int(config.get("kv_lora_rank") or 0) + int(config.get("qk_rope_head_dim") or 0)
        if config.get("kv_lora_rank") else 0,
        active_params_b=_ACTIVE_BY_LAYERS.get((arch, int(config.get("num_hidden_layers") or 0))),
    )
    return spec


#: A local checkpoint of a known shape (architecture, layers) has that shape's active parameters.
_ACTIVE_BY_LAYERS = {("Glm4MoeForCausalLM", 92): 32.0, ("Glm4MoeForCausalLM", 46): 12.0,
                     ("Glm4MoeLiteForCausalLM", 47): 3.0}


def _prompt_vocab(config: dict) -> int:
    """Ordinary token ids of a checkpoint: those below its lowest stop/pad id when the specials sit at the
    top of the vocabulary (GLM), else the whole vocabulary (the byte-level reference tokenizer)."""
    vocab = int(config.get("vocab_size") or 0)
    eos = config.get("eos_token_id")
    specials = [i for i in ([*eos] if isinstance(eos, list) else [eos]) + [config.get("pad_token_id")]
                if isinstance(i, int)]
    first = min(specials, default=vocab)
    return first if vocab and first > vocab // 2 else vocab or 151329


def with_local_path(spec: ModelSpec, path: Path) -> ModelSpec:
    """The same spec, served from a local directory (a built reference model, a pre-downloaded checkpoint)."""
    return replace(spec, local_path=str(path))
