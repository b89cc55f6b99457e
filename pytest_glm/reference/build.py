"""Build a reference model directory (config, tokenizer, chat template, weights) from the project's files.

The directory is built once per content hash into the cache and shared by every run and every xdist
worker (a file lock serialises the build). Nothing is downloaded.

Weights: the trained ``weights/<name>.safetensors`` shipped in this package (see reference.train).
"""

from __future__ import annotations

import hashlib
import json
import shutil
from collections.abc import Callable
from importlib import resources
from pathlib import Path
from typing import Any

from filelock import FileLock

from pytest_glm.catalog.models import REFERENCE_MODELS
from pytest_glm.reference.tokenizer import STOP_TOKENS, VOCAB_SIZE, save_tokenizer, token_ids

BUILD_VERSION = 1

#: The architecture of the reference models: GLM-4.5's (Glm4MoeForCausalLM) at toy size. One dense layer,
#: one MoE layer (4 routed experts, top-2, one shared expert) and one MTP layer at index 2.
ARCH: dict[str, Any] = {
    "architectures": ["Glm4MoeForCausalLM"],
    "model_type": "glm4_moe",
    "vocab_size": VOCAB_SIZE,
    "hidden_size": 128,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "head_dim": 32,
    "partial_rotary_factor": 0.5,
    "rope_theta": 1000000.0,
    "rope_scaling": None,
    "attention_bias": True,
    "use_qk_norm": True,
    "hidden_act": "silu",
    "rms_norm_eps": 1e-5,
    "intermediate_size": 256,
    "moe_intermediate_size": 64,
    "n_routed_experts": 4,
    "num_experts_per_tok": 2,
    "n_shared_experts": 1,
    "first_k_dense_replace": 1,
    "routed_scaling_factor": 2.5,
    "n_group": 1,
    "topk_group": 1,
    "norm_topk_prob": True,
    "num_nextn_predict_layers": 1,
    "max_position_embeddings": 32768,
    "tie_word_embeddings": False,
    "torch_dtype": "bfloat16",
    "initializer_range": 0.02,
}


def _template(family: str) -> str:
    return resources.files("pytest_glm.reference").joinpath("templates", f"{family}.jinja").read_text("utf-8")


def _shipped_weights(name: str) -> Path | None:
    path = resources.files("pytest_glm.reference").joinpath("weights", f"{name}.safetensors")
    return Path(str(path)) if path.is_file() else None


def model_config(name: str) -> dict[str, Any]:
    ids = token_ids()
    eos = [ids[t] for t in STOP_TOKENS]
    return {**ARCH, "eos_token_id": eos, "pad_token_id": ids["<|endoftext|>"], "bos_token_id": None,
            "_name_or_path": name}


def _fingerprint(name: str) -> str:
    spec = REFERENCE_MODELS[name]
    digest = hashlib.sha256()
    digest.update(json.dumps([BUILD_VERSION, model_config(name)], sort_keys=True).encode())
    digest.update(_template(spec.family).encode())
    weights = _shipped_weights(name)
    if weights is not None:
        digest.update(weights.read_bytes())
    return digest.hexdigest()[:12]


def build_once(target: Path, write: Callable[[Path], None]) -> Path:
    """``target``, built by ``write`` into a staging directory renamed into place, unless a complete one is
    there: concurrent runs (xdist workers, two pytest runs) build it once, and an interrupted build is never
    taken for a complete one."""
    if (target / ".complete").is_file():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(target) + ".lock", timeout=600):
        if (target / ".complete").is_file():
            return target
        staging = target.with_name(target.name + ".partial")
        shutil.rmtree(staging, ignore_errors=True)
        staging.mkdir()
        write(staging)
        shutil.rmtree(target, ignore_errors=True)
        staging.rename(target)
        (target / ".complete").write_text("ok\n")
    return target


def ensure_reference_model(name: str, cache_dir: Path) -> Path:
    """The built directory of reference model ``name``, building it if this content was never built."""
    return build_once(cache_dir / "models" / f"{name}-{_fingerprint(name)}", lambda staging: _write(name, staging))


def _write(name: str, directory: Path) -> None:
    spec = REFERENCE_MODELS[name]
    config = model_config(name)
    (directory / "config.json").write_text(json.dumps(config, indent=2) + "\n")
    (directory / "generation_config.json").write_text(json.dumps(
        {"eos_token_id": config["eos_token_id"], "pad_token_id": config["pad_token_id"], "temperature": 1.0},
        indent=2) + "\n")
    save_tokenizer(directory, _template(spec.family))
    weights = _shipped_weights(name)
    if weights is None:
        raise FileNotFoundError(f"no trained weights for {name} in pytest_glm/reference/weights/: "
                                "retrain with `python -m pytest_glm.reference.train`")
    shutil.copyfile(weights, directory / "model.safetensors")
