"""How many tokens the deployment's KV cache holds, and which latency cells it cannot hold.

A latency cell keeps ``batch`` requests of ``input + output`` tokens in flight. Past the KV cache vLLM
preempts and recomputes, and a cell that needs ten times the cache runs for an hour before its timeout says
nothing useful. So the cell is judged runnable or not before any request: :func:`beyond` names the numbers.

The capacity comes, in that order, from the server's ``/metrics`` (:func:`from_metrics`: the labels of
``vllm:cache_config_info``, vLLM's ``CacheConfig``: ``kv_cache_size_tokens`` where the version has it, else
``num_gpu_blocks`` x ``block_size``, summed over engines), from its log (:func:`from_log`: "GPU KV cache
size: N tokens"), or, with no server up, from the model's config and the profile (:func:`estimate`, labelled
as an estimate). Pure functions of text and catalog data; no I/O.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from pytest_glm.catalog.models import ModelSpec
from pytest_glm.catalog.profiles import Profile

GIB = 1024**3
#: Memory per GPU that is neither weights nor KV cache (activations, CUDA graphs, NCCL buffers), measured in the
#: shape runs on one H200 (shared/shape-runs.md): GLM-4.7-Flash 126.4 GiB usable - 55.9 weights - 68.3 KV =
#: 2.2 GiB; GLM-4.5-Air-FP8 at 0.95: 133.4 - 104 - 27.1 = 2.3 GiB. Rounded up.
OVERHEAD_GIB_PER_GPU = 2.5
METRIC = "vllm:cache_config_info"


@dataclass(frozen=True)
class KVCapacity:
    """Tokens the KV cache holds over all engines, and where that figure came from."""

    tokens: int
    source: str  # "/metrics vllm:cache_config_info", "server log", "estimate"
    detail: str = ""

    @property
    def estimated(self) -> bool:
        return self.source == "estimate"

    def describe(self) -> str:
        approx = "~" if self.estimated else ""
        what = "an estimate from the model config and the profile" if self.estimated else f"from the server's {self.source}"
        return f"{approx}{self.tokens:,} tokens ({what}{': ' + self.detail if self.detail else ''})"


def need(batch: int, input_len: int, output_len: int) -> int:
    """KV tokens a cell keeps in flight at its peak: every one of ``batch`` requests at full length."""
    return batch * (input_len + output_len)


def beyond(capacity: KVCapacity | None, batch: int, input_len: int, output_len: int) -> str | None:
    """Why a cell cannot run on this KV cache (None when it can, or when the capacity is unknown)."""
    if capacity is None or capacity.tokens <= 0:
        return None
    needed = need(batch, input_len, output_len)
    if needed <= capacity.tokens:
        return None
    fits = capacity.tokens // (input_len + output_len)
    kind = "an estimate, no server figure yet" if capacity.estimated else capacity.source
    return (f"batch {batch} x {input_len + output_len} tokens ({input_len} in + {output_len} out) needs {needed:,} "
            f"KV-cache tokens; the KV cache holds {'~' if capacity.estimated else ''}{capacity.tokens:,} ({kind}), "
            f"{fits} such requests at once: not runnable here (more KV cache: a higher --glm-gpu-memory-utilization "
            f"(--gpu-memory-utilization), more GPUs for tensor parallelism (--glm-tp, a larger --glm-profile), "
            f"--glm-serve-arg='--kv-cache-dtype fp8'; or smaller batch_sizes in --glm-thresholds)")


def kv_bytes_per_token(model: ModelSpec, *, mtp: bool, dtype_bytes: int = 2, tp: int = 1) -> int | None:
    """KV-cache bytes one token takes over the ``tp`` GPUs of one engine (None: geometry unknown).

    GQA (GLM-4.5/4.6/4.7, Air): K and V per layer, ``kv_heads x head_dim`` each, split over TP ranks (a rank
    keeps at least one head, so past ``kv_heads`` ranks the heads are replicated). MLA (GLM-4.7-Flash): one
    latent of ``kv_lora_rank + qk_rope_head_dim`` per layer, replicated on every TP rank. The MTP layer has a
    KV cache of its own when MTP runs."""
    layers = model.num_layers + (model.mtp_layers if mtp else 0)
    if model.mla_dim:
        return layers * model.mla_dim * dtype_bytes * tp
    if not (model.num_layers and model.kv_heads and model.head_dim):
        return None
    heads = max(model.kv_heads, tp)  # replicated heads past kv_heads ranks
    return 2 * layers * heads * model.head_dim * dtype_bytes


def estimate(model: ModelSpec | None, profile: Profile, *, tp: int | None = None, dp: int | None = None,
             gpu_memory_utilization: float | None = None, mtp: bool = False, dtype_bytes: int = 2) -> KVCapacity | None:
    """The KV cache a launch of ``model`` on ``profile`` would get: per engine, its GPUs' usable memory
    (``memory x gpu_memory_utilization``) less the weights and :data:`OVERHEAD_GIB_PER_GPU` per GPU, over
    :func:`kv_bytes_per_token`; times the data-parallel engines. None on the CPU profile or for an unknown
    geometry."""
    if model is None or profile.accelerator == "cpu":
        return None
    dp = dp or 1
    tp = tp or max(1, profile.count // dp)
    util = gpu_memory_utilization or profile.gpu_memory_utilization
    per_token = kv_bytes_per_token(model, mtp=mtp, dtype_bytes=dtype_bytes, tp=tp)
    if not per_token:
        return None
    free_gib = tp * profile.memory_gib * util - model.weight_gib - tp * OVERHEAD_GIB_PER_GPU
    if free_gib <= 0:
        return KVCapacity(0, "estimate", "the weights leave no memory for a KV cache")
    tokens = int(free_gib * GIB / per_token) * dp
    layers = model.num_layers + (model.mtp_layers if mtp else 0)
    geometry = (f"{layers} layers x {model.mla_dim} (MLA, on each of {tp} GPUs)" if model.mla_dim else
                f"{layers} layers x 2 x {model.kv_heads} KV heads x {model.head_dim}")
    detail = (f"{dp} x " if dp > 1 else "") + (
        f"({tp} x {profile.memory_gib:g} GiB x {util:g} - {model.weight_gib:g} GiB weights - {tp} x "
        f"{OVERHEAD_GIB_PER_GPU:g} GiB) / ({geometry} x {dtype_bytes} bytes = {per_token:,} bytes a token)")
    return KVCapacity(tokens, "estimate", detail)


_SAMPLE = re.compile(r"^" + re.escape(METRIC) + r"\{(?P<labels>.*)\}\s+\S+\s*$", re.MULTILINE)
_LABEL = re.compile(r'(\w+)="((?:[^"\\]|\\.)*)"')


def _int(value: str | None) -> int | None:
    try:
        return int(float(value)) if value not in (None, "", "None") else None
    except ValueError:
        return None


def from_metrics(text: str) -> KVCapacity | None:
    """The KV capacity in a ``/metrics`` text (None when ``vllm:cache_config_info`` lacks it)."""
    per_engine: dict[str, int] = {}
    how = set()
    for found in _SAMPLE.finditer(text):
        labels = dict(_LABEL.findall(found.group("labels")))
        tokens = _int(labels.get("kv_cache_size_tokens"))
        if tokens:
            how.add("kv_cache_size_tokens")
        else:
            blocks, size = _int(labels.get("num_gpu_blocks")), _int(labels.get("block_size"))
            if not (blocks and size):
                continue
            tokens = blocks * size
            how.add(f"num_gpu_blocks {blocks:,} x block_size {size}")
        per_engine[labels.get("engine", "0")] = tokens
    if not per_engine:
        return None
    engines = f" over {len(per_engine)} engines" if len(per_engine) > 1 else ""
    return KVCapacity(sum(per_engine.values()), "/metrics vllm:cache_config_info", "; ".join(sorted(how)) + engines)


_LOG = re.compile(r"(?:GPU|CPU|XPU|TPU|HPU)[^\n]*? KV cache size: ([\d,]+) tokens")
_DP = re.compile(r"DP(\d+)")


def from_log(text: str) -> KVCapacity | None:
    """The KV capacity in a vLLM server log ("GPU KV cache size: 446,608 tokens", one line per DP engine)."""
    per_engine: dict[str, int] = {}
    for line in text.splitlines():
        found = _LOG.search(line)
        if found:
            engine = _DP.search(line)
            per_engine[engine.group(1) if engine else "0"] = int(found.group(1).replace(",", ""))
    if not per_engine:
        return None
    return KVCapacity(sum(per_engine.values()), "server log", "'KV cache size: N tokens'")


def kv_dtype_bytes(args: tuple[str, ...] | list[str]) -> int:
    """Bytes of one KV-cache element under these serve flags: 1 with ``--kv-cache-dtype fp8*``, else 2."""
    for i, arg in enumerate(args):
        value = arg.split("=", 1)[1] if arg.startswith("--kv-cache-dtype=") else (
            args[i + 1] if arg == "--kv-cache-dtype" and i + 1 < len(args) else None)
        if value is not None:
            return 1 if value.startswith("fp8") else 2
    return 2
