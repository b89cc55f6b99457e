"""Every pytest-glm option, declared once, and its resolution into one frozen :class:`GLMConfig`.

Each option is both a command-line flag (``--glm-x``) and an ini key (``glm_x``); the CLI dest equals the
ini key, so one lookup covers both. Order of precedence: command line > ini > default. Values are
checked here, and a bad one raises :class:`~pytest_glm.exceptions.ConfigError` naming the flag.
"""

from __future__ import annotations

import os
import re
import shlex
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Literal

import pytest

from pytest_glm.catalog import kv_capacity
from pytest_glm.catalog.kv_capacity import KVCapacity
from pytest_glm.catalog.models import DEFAULT_MODEL, ModelSpec, resolve_model
from pytest_glm.catalog.profiles import (
    Profile,
    check_fit,
    for_reference_model,
    load_thresholds,
    resolve_profile,
    with_nodes,
    with_tier,
)
from pytest_glm.catalog.tiers import DEFAULT_TIER, check_tier
from pytest_glm.catalog.tiers import known as known_tiers
from pytest_glm.catalog.variants import resolve_variants
from pytest_glm.exceptions import ConfigError


@dataclass(frozen=True)
class ServeOptions:
    """User overrides of the serving command; ``None`` means "the model's and profile's default"."""

    tp: int | None = None
    dp: int | None = None
    mtp: bool | None = None
    num_speculative_tokens: int = 1
    max_model_len: int | None = None
    max_num_batched_tokens: int | None = None
    gpu_memory_utilization: float | None = None
    served_model_name: str | None = None
    prefix_caching: bool | None = None
    host: str = "127.0.0.1"
    port: int = 0
    extra_args: tuple[str, ...] = ()
    variants: tuple[str, ...] = ()  # catalog/variants.py names, applied by serving.command
    dummy_weights: bool = False  # --glm-weights dummy: --load-format dummy (a shape run)


API_KEY_ENV = "GLM_API_KEY"
#: --glm-node-runner values: how each node's process is started (serving/nodes.py).
RUNNERS = ("local", "ssh", "ray")
#: --glm-weights values: the model's own weights, or random ones of the same shapes (a shape run).
WEIGHTS = ("real", "dummy")


def default_cache_dir() -> Path:
    """Where built reference models and kept-server records go without --glm-cache-dir."""
    return Path(os.environ.get("PYTEST_GLM_CACHE") or Path.home() / ".cache" / "pytest-glm").expanduser()


@dataclass(frozen=True)
class Option:
    """One option: its flag, help text, kind (str, int, float, bool, args), ini default, and for numbers
    the range it must lie in (``low`` inclusive unless ``low_open``; ``high`` inclusive)."""

    name: str
    help: str
    kind: str = "str"
    default: str | None = None
    low: float | None = None
    high: float | None = None
    low_open: bool = False

    def out_of_range(self, value: float) -> str | None:
        """Why ``value`` is not allowed (None when it is)."""
        if self.low is not None and (value <= self.low if self.low_open else value < self.low):
            bound = f"> {self.low:g}" if self.low_open else f">= {self.low:g}"
            return f"must be {bound}" + (f" and <= {self.high:g}" if self.high is not None else "") + f", got {value:g}"
        if self.high is not None and value > self.high:
            return f"must be <= {self.high:g}, got {value:g}"
        return None

    @property
    def flag(self) -> str:
        return "--glm-" + self.name.replace("_", "-")

    @property
    def dest(self) -> str:
        return "glm_" + self.name


OPTIONS: tuple[Option, ...] = (
    Option("model", f"Model to validate: a GLM-4.x Hugging Face id (zai-org/GLM-4.7-FP8), a local model "
           f"directory, or a reference model (glm-tiny, glm-tiny-47, glm-tiny-variant). Default: {DEFAULT_MODEL}; with "
           f"--glm-base-url, recognised from the served model name."),
    Option("profile", "Hardware profile (cpu, cpu-2node, h100x1, h100x2, h100x8, h100x16, h200x1, h200x2, h200x4, "
           "h200x8, h200x16, mi300x8, mi325x8, mi355x8) or auto "
           "(detect this machine). Default: auto.", default="auto"),
    Option("base_url", "Test an already running endpoint (http://host:port); launch nothing."),
    Option("api_key", f"API key of the endpoint; default: the {API_KEY_ENV} environment variable. Never printed."),
    Option("served_model_name", "Served model name (--served-model-name of vllm serve; with --glm-base-url, "
           "which of the served models to test)."),
    Option("tp", "Tensor-parallel size. Default: all accelerators of the profile (divided by DP).", "int", low=1),
    Option("dp", "Data-parallel size. Default: 1.", "int", low=1),
    Option("mtp", "Turn MTP speculative decoding on (--glm-mtp) or off (--glm-no-mtp). Default: as the "
           "model's published serving command does (on for GLM-4.7 and the reference models).", "bool"),
    Option("num_speculative_tokens", "Draft tokens per step with MTP. Default: 1.", "int", "1", low=1),
    Option("max_model_len", "--max-model-len for vllm serve.", "int", low=1),
    Option("max_num_batched_tokens", "--max-num-batched-tokens for vllm serve.", "int", low=1),
    Option("prefix_caching", "Prefix caching on (--glm-prefix-caching) or off (--glm-no-prefix-caching, as the "
           "seed guide's benchmark runs). Default: vLLM's (on), the configuration production serves; the "
           "latency suite keeps its figures free of cache hits either way.", "bool"),
    Option("gpu_memory_utilization", "--gpu-memory-utilization for vllm serve (0 < x <= 1).", "float", low=0,
           high=1, low_open=True),
    Option("serve_arg", "Extra argument(s) passed to vllm serve as they are; repeatable, shell-split "
           "(--glm-serve-arg='--max-num-seqs 8').", "args"),
    Option("vllm", "The vLLM to launch: a `vllm` executable, or a python interpreter that has vLLM "
           "installed. Default: the vLLM installed beside pytest-glm."),
    Option("port", "Port for the launched server. Default: 0, a free port.", "int", "0", low=0, high=65535),
    Option("startup_timeout", "Seconds to wait for the launched server to become healthy. Default: the "
           "profile's (600 on cpu, 1800 on GPUs).", "float", low=0, low_open=True),
    Option("request_timeout", "Seconds one inference request may take. Default: 120.", "float", "120", low=0,
           low_open=True),
    Option("keep_server", "Leave the launched server running after the run and reuse it next time the same "
           "command is asked for (saves the start-up time while iterating).", "flag"),
    Option("server_log", "File for the launched server's log. Default: glm/vllm-server.log in pytest's basetemp."),
    Option("thresholds", "TOML file overriding the profile's thresholds (mtp_acceptance_rate, slo tables, "
           "workloads, batch_sizes, baseline_tolerance...; see docs/thresholds.md)."),
    Option("slo_tier", f"SLO tier judging the latency cells that no threshold file or reference file sets: "
           f"auto (interactive up to batch 16, batch above), interactive (TTFT by prompt size, decode speed by "
           f"active parameters), batch (throughput) or none "
           f"(record and skip). Default: {DEFAULT_TIER} for a real GLM model; the reference models keep their "
           f"measured limits (docs/thresholds.md)."),
    Option("quick", "Run only a few latency cells for a first look: per workload the smallest batch size and "
           "the largest one the KV cache holds (docs/thresholds.md).", "flag"),
    Option("baseline", "A stored run of the slo suite (pytest-benchmark JSON: --benchmark-json=FILE, or a file "
           "that --benchmark-save wrote); every latency figure worse than it by more than its tolerance "
           "(default 10 %) fails. The check to run when a new vLLM wheel comes out."),
    Option("compare", "An earlier --glm-report of the same model and profile (the deployment in service): "
           "every test whose outcome changed and every figure that moved beyond its tolerance is shown; a new "
           "failure or a figure worse than its tolerance fails the run. The check to run when a new vLLM wheel "
           "comes out (docs/vllm-versions.md)."),
    Option("report", "Write the JSON report here: verdict, deployment, and per suite every figure with its "
           "threshold and every test's outcome (format: docs/report.md)."),
    Option("html", "Write one self-contained HTML page here for the people who decide a rollout: the verdict and "
           "its causes first, the deployment, each suite's figures against their thresholds, every failed case's "
           "request and answers, the latency and MTP plots, and with --glm-compare what changed (docs/report.md)."),
    Option("plots", "Write PNG plots here: TTFT/ITL distributions per workload and batch size, MTP acceptance "
           "per draft position (needs the plots extra: pip install 'pytest-glm[plots]')."),
    Option("mtp_equivalence", "Also launch the MTP-off twin of the deployment and require identical greedy "
           "outputs, tool calls included, with and without MTP.", "flag"),
    Option("variant", "Serve a deployment variant where GLM streaming bugs showed up: mtp3 (MTP drafting 3 tokens "
           "a step), stream-interval-4 (--stream-interval 4); repeatable or comma-separated. The correctness "
           "suites judge it as always (docs/checks.md).", "args"),
    Option("known_defects", "What a finding that a known defect of the served vLLM explains does: report (listed "
           "as a known defect, the run can pass) or fail. Default: report.", default="report"),
    Option("soak", "Also run the soak: mixed correctness traffic at the profile's load concurrency for this long "
           "(90s, 10m, 1.5h; a bare number is seconds), every 4th answer checked exactly; fails on a failed "
           "request, a dead server, a finding or a changed verdict (docs/checks.md). Default: no soak."),
    Option("weights", "real (default): serve the model's weights; dummy: a shape run, the model at its real size "
           "with random weights (its real config.json, a tokenizer of its real vocabulary, its chat template, "
           "--load-format dummy): start-up, memory, latency and the MTP path are measured, the correctness suites "
           "are skipped (docs/shape-runs.md).", default="real"),
    Option("nodes", "Nodes the deployment spans, on vLLM's own multi-node runtime (--nnodes; rank 0 serves, the "
           "others run --headless). Must divide the profile's accelerators. Default: the profile's (2 for h100x16, "
           "h200x16 and cpu-2node, else 1).", "int", low=1),
    Option("node_runner", "How each node's process is started: local (every node on this machine: the CPU "
           "simulation), ssh (on --glm-hosts) or ray (one actor per node of the Ray cluster at RAY_ADDRESS). "
           "Default: ssh with --glm-hosts, else local."),
    Option("hosts", "The ssh hosts of the nodes, head first, comma-separated (host, user@host or an ssh config "
           "Host); the same vLLM path must exist on each."),
    Option("ssh_arg", "Extra argument(s) for every ssh call of the ssh runner (--glm-ssh-arg='-F ssh.cfg'); "
           "repeatable, shell-split.", "args"),
    Option("cache_dir", "Where built reference models and kept-server records live. "
           "Default: $PYTEST_GLM_CACHE or ~/.cache/pytest-glm."),
)


@dataclass(frozen=True)
class GLMConfig:
    """The resolved configuration of one pytest run."""

    model: ModelSpec | None  # None: a --glm-base-url whose model is recognised once it is reached
    profile: Profile
    serve: ServeOptions
    base_url: str | None
    api_key: str | None
    served_model_name: str | None
    vllm: str | None
    startup_timeout: float
    request_timeout: float
    keep_server: bool
    server_log: Path | None
    cache_dir: Path
    baseline: Path | None = None
    compare: Path | None = None
    mtp_equivalence: bool = False
    known_defects_fail: bool = False
    report: Path | None = None
    plots: Path | None = None
    html: Path | None = None  # --glm-html
    soak_s: float | None = None  # --glm-soak, seconds
    quick: bool = False  # --glm-quick
    weights: str = "real"  # --glm-weights: real, or dummy (a shape run: random weights)
    node_runner: str = "local"  # --glm-node-runner
    hosts: tuple[str, ...] = ()  # --glm-hosts, head first
    ssh_args: tuple[str, ...] = ()  # --glm-ssh-arg

    @property
    def nodes(self) -> int:
        """Nodes the launched deployment spans (the profile's, or --glm-nodes)."""
        return self.profile.nodes

    @property
    def multinode(self) -> bool:
        """Whether the launch goes through the node runners (several nodes, or one node elsewhere)."""
        return self.nodes > 1 or self.node_runner != "local"

    @property
    def shape_run(self) -> bool:
        return self.weights == "dummy"

    def kv_estimate(self) -> KVCapacity | None:
        """The KV cache this configuration would get, estimated from the model's config and the profile (for
        collection, before any server is up; catalog/kv_capacity.py)."""
        if self.model is None:
            return None
        mtp = self.serve.mtp if self.serve.mtp is not None else (self.model.mtp_recommended and self.model.has_mtp)
        return kv_capacity.estimate(self.model, self.profile, tp=self.serve.tp, dp=self.serve.dp,
                                    gpu_memory_utilization=self.serve.gpu_memory_utilization, mtp=mtp,
                                    dtype_bytes=kv_capacity.kv_dtype_bytes((*self.profile.serve_args,
                                                                            *self.serve.extra_args)))

    def __repr__(self) -> str:  # the API key never appears
        return (f"GLMConfig(model={self.model.model_id if self.model else None!r}, profile={self.profile.name!r}, "
                f"base_url={self.base_url!r}, api_key={'***' if self.api_key else None})")


def add_options(parser: pytest.Parser) -> None:
    """Declare every option in the "glm" group and as an ini key."""
    group = parser.getgroup("glm", "GLM-4.x deployment gate (pytest-glm)")
    for opt in OPTIONS:
        opt = replace(opt, help=opt.help.replace("%", "%%"))  # argparse %-formats help texts
        ini_type: Literal["args", "bool", "string"] = "args" if opt.kind == "args" else "bool" if opt.kind == "flag" else "string"
        parser.addini(opt.dest, opt.help, type=ini_type, default=_ini_default(opt))
        if opt.kind == "bool":
            group.addoption(opt.flag, dest=opt.dest, action="store_const", const=True, default=None, help=opt.help)
            group.addoption("--glm-no-" + opt.flag[len("--glm-"):], dest=opt.dest, action="store_const",
                            const=False, help=f"Opposite of {opt.flag}.")
        elif opt.kind == "flag":
            group.addoption(opt.flag, dest=opt.dest, action="store_true", default=None, help=opt.help)
        elif opt.kind == "args":
            group.addoption(opt.flag, dest=opt.dest, action="append", default=None, metavar="ARG", help=opt.help)
        elif opt.kind in ("int", "float"):  # checked as the command line is read, even under --collect-only
            group.addoption(opt.flag, dest=opt.dest, default=None, metavar=opt.name.upper(), help=opt.help,
                            type=_number_type(opt))
        else:
            group.addoption(opt.flag, dest=opt.dest, default=None, metavar=opt.name.upper(), help=opt.help)


def _number(opt: Option, value: Any) -> int | float:
    """``value`` as the option's number, in its range (ValueError with the reason otherwise)."""
    try:
        number = int(value) if opt.kind == "int" else float(value)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"expected {'an integer' if opt.kind == 'int' else 'a number'}, got {value!r}") from exc
    why = opt.out_of_range(number)
    if why:
        raise ValueError(why)
    return number


def _number_type(opt: Option) -> Any:
    """An argparse ``type=`` for a number option: argparse reports its error as ``argument --glm-x: ...``."""
    import argparse

    def convert(text: str) -> int | float:
        try:
            return _number(opt, text)
        except ValueError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from exc

    return convert


def _ini_default(opt: Option) -> Any:
    if opt.kind == "args":
        return []
    if opt.kind == "flag":
        return False
    return opt.default


def _raw(config: pytest.Config, opt: Option) -> Any:
    value = config.getoption(opt.dest, default=None)
    if value is not None:
        return value
    value = config.getini(opt.dest)
    if opt.kind in ("args", "flag"):
        return value
    return None if value in (None, "") else value


def _convert(opt: Option, value: Any, source: str) -> Any:
    if value is None:
        return None
    if opt.kind in ("int", "float"):
        try:
            return _number(opt, value)
        except ValueError as exc:
            raise ConfigError(source, str(exc)) from exc
    try:
        if opt.kind == "bool":
            if isinstance(value, bool):
                return value
            text = str(value).strip().lower()
            if text in ("auto", ""):
                return None
            if text in ("1", "true", "yes", "on"):
                return True
            if text in ("0", "false", "no", "off"):
                return False
            raise ValueError(value)
        if opt.kind == "args":
            items = value if isinstance(value, list) else [value]
            return tuple(part for item in items for part in shlex.split(str(item)))
        if opt.kind == "flag":
            return bool(value)
    except ValueError as exc:
        raise ConfigError(source, f"expected true, false or auto, got {value!r}") from exc
    return str(value)


def option_defaults() -> dict[str, Any]:
    """Every option at its default, as :func:`read_options` would return it with nothing set (for code that
    builds a configuration without a pytest command line)."""
    return {opt.name: _convert(opt, _ini_default(opt), opt.flag) for opt in OPTIONS}


def read_options(config: pytest.Config) -> dict[str, Any]:
    """Every option's value after CLI > ini > default, converted to its type."""
    values = {}
    for opt in OPTIONS:
        raw = _raw(config, opt)
        source = opt.flag if config.getoption(opt.dest, default=None) is not None else f"ini {opt.dest}"
        values[opt.name] = _convert(opt, raw, source)
    return values


_DURATION_UNITS = {"": 1.0, "s": 1.0, "m": 60.0, "h": 3600.0}


def parse_duration(text: str | None) -> float | None:
    """``--glm-soak``'s value in seconds: ``90s``, ``10m``, ``1.5h``, or a bare number of seconds (None: no
    soak). Anything else raises ConfigError naming the option."""
    if text is None or not str(text).strip():
        return None
    found = re.fullmatch(r"\s*(\d+(?:\.\d*)?|\.\d+)\s*([smh]?)\s*", str(text).lower())
    if not found:
        raise ConfigError("--glm-soak", f"expected a duration such as 90s, 10m, 1.5h or 45 (seconds), got {text!r}")
    seconds = float(found.group(1)) * _DURATION_UNITS[found.group(2)]
    if seconds <= 0:
        raise ConfigError("--glm-soak", f"a soak must last longer than 0 s, got {text!r}")
    return seconds


def output_file(flag: str, value: str | None) -> Path | None:
    """A file the run writes at its end (--glm-report, --glm-html), checked now: a path that cannot become
    that file would otherwise be found out only after the whole run. Missing folders are created then."""
    if not value:
        return None
    path = Path(value).expanduser()
    if path.is_dir():
        example = path / ("gate.html" if flag == "--glm-html" else "gate.json")
        raise ConfigError(flag, f"{path} is a directory", f"name a file in it, e.g. {flag}={example}")
    folder = path.absolute().parent
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    if not folder.is_dir():
        raise ConfigError(flag, f"cannot write {path}: {folder} is not a directory")
    if not os.access(folder, os.W_OK | os.X_OK) or (path.exists() and not os.access(path, os.W_OK)):
        raise ConfigError(flag, f"cannot write {path}: permission denied")
    return path


def resolve(values: dict[str, Any]) -> GLMConfig:
    """Build the run's configuration; raises ConfigError on anything inconsistent."""
    base_url = values["base_url"]
    if values["model"]:
        model: ModelSpec | None = resolve_model(values["model"])
    else:
        model = None if base_url else resolve_model(DEFAULT_MODEL)
    profile = with_nodes(resolve_profile(values["profile"] or "auto"), values.get("nodes"))
    tier = values.get("slo_tier")
    if tier is not None and (why := check_tier(tier)):
        raise ConfigError("--glm-slo-tier", why, f"known tiers: {known_tiers()}")
    if tier is None and not (model is not None and model.reference):
        tier = DEFAULT_TIER  # a real model (or one recognised from the endpoint); the reference models need none
    profile = with_tier(profile, tier, model)
    if model is not None and model.reference:
        profile = for_reference_model(profile)
    if values["thresholds"]:
        profile = replace(profile, thresholds=load_thresholds(Path(values["thresholds"]).expanduser(), profile.thresholds))
    if base_url is None and model is not None:
        check_fit(model, profile)
    elif not base_url.startswith(("http://", "https://")):
        raise ConfigError("--glm-base-url", f"expected http://host:port or https://..., got {base_url!r}")
    port = values["port"] or 0
    baseline = Path(values["baseline"]).expanduser() if values["baseline"] else None
    if baseline is not None and not baseline.is_file():
        raise ConfigError("--glm-baseline", f"{baseline} is not a file",
                          "record one with: pytest suites/ -m slo --benchmark-json=FILE")
    if values["mtp_equivalence"] and base_url:
        raise ConfigError("--glm-mtp-equivalence", "needs a deployment this run launches (it starts the MTP-off "
                          "twin with the same command)", "drop --glm-base-url, or drop --glm-mtp-equivalence")
    report = output_file("--glm-report", values["report"])
    html = output_file("--glm-html", values["html"])
    if html is not None and report is not None and html.resolve() == report.resolve():
        raise ConfigError("--glm-html", f"{html} is also the --glm-report file", "give the page a file of its own")
    plots = Path(values["plots"]).expanduser() if values["plots"] else None
    if plots is not None:
        try:
            import matplotlib  # noqa: F401
        except ImportError as exc:
            raise ConfigError("--glm-plots", "matplotlib is not installed",
                              "pip install 'pytest-glm[plots]' (or drop --glm-plots)") from exc
    serve = ServeOptions(
        tp=values["tp"], dp=values["dp"], mtp=values["mtp"],
        num_speculative_tokens=values["num_speculative_tokens"] or 1,
        max_model_len=values["max_model_len"], max_num_batched_tokens=values["max_num_batched_tokens"],
        gpu_memory_utilization=values["gpu_memory_utilization"], prefix_caching=values["prefix_caching"],
        served_model_name=values["served_model_name"], port=port, extra_args=values["serve_arg"] or (),
        variants=tuple(v.name for v in resolve_variants(values["variant"] or ())),
    )
    weights = str(values.get("weights") or "real").strip().lower()
    if weights not in WEIGHTS:
        raise ConfigError("--glm-weights", f"expected real or dummy, got {values.get('weights')!r}",
                          "dummy serves the model at its real size with random weights (a shape run)")
    if weights == "dummy" and base_url:
        raise ConfigError("--glm-weights", "dummy launches the model with random weights, so it needs a "
                          "deployment this run launches", "drop --glm-base-url, or drop --glm-weights dummy")
    serve = replace(serve, dummy_weights=weights == "dummy")
    if values["known_defects"] not in ("report", "fail"):
        raise ConfigError("--glm-known-defects", f"expected report or fail, got {values['known_defects']!r}")
    runner, hosts = _node_runner(values, profile.nodes, base_url)
    if base_url is None and (profile.nodes > 1 or runner != "local"):
        for flag, on in (("--glm-keep-server", values["keep_server"]), ("--glm-mtp-equivalence", values["mtp_equivalence"])):
            if on:
                raise ConfigError(flag, f"not available for a deployment over nodes (--glm-nodes {profile.nodes}, "
                                  f"--glm-node-runner {runner})", f"drop {flag}")
    cache = values["cache_dir"] or default_cache_dir()
    return GLMConfig(
        model=model, profile=profile, serve=serve, base_url=base_url,
        api_key=values["api_key"] or os.environ.get(API_KEY_ENV) or None,
        served_model_name=values["served_model_name"], vllm=values["vllm"],
        startup_timeout=values["startup_timeout"] or profile.startup_timeout,
        request_timeout=values["request_timeout"] or 120.0,
        keep_server=bool(values["keep_server"]),
        server_log=Path(values["server_log"]).expanduser() if values["server_log"] else None,
        cache_dir=Path(cache).expanduser(),
        baseline=baseline, compare=Path(values["compare"]).expanduser() if values["compare"] else None,
        mtp_equivalence=bool(values["mtp_equivalence"]), known_defects_fail=values["known_defects"] == "fail",
        report=report, plots=plots, html=html,
        soak_s=parse_duration(values["soak"]),
        weights=weights,
        quick=bool(values.get("quick")),
        node_runner=runner, hosts=hosts, ssh_args=tuple(values.get("ssh_arg") or ()),
    )


def _node_runner(values: dict[str, Any], nodes: int, base_url: str | None) -> tuple[str, tuple[str, ...]]:
    """(--glm-node-runner, --glm-hosts), checked against each other and the node count."""
    hosts = tuple(h.strip() for h in str(values.get("hosts") or "").split(",") if h.strip())
    runner = str(values.get("node_runner") or ("ssh" if hosts else "local")).strip().lower()
    if runner not in RUNNERS:
        raise ConfigError("--glm-node-runner", f"expected one of {', '.join(RUNNERS)}, got {values.get('node_runner')!r}")
    if hosts and runner != "ssh":
        raise ConfigError("--glm-hosts", f"names ssh hosts, but the node runner is {runner}",
                          "drop --glm-hosts, or use --glm-node-runner ssh")
    if runner == "ssh" and len(hosts) != nodes:
        raise ConfigError("--glm-hosts", f"{len(hosts)} host(s) for {nodes} node(s)" if hosts else
                          "the ssh runner needs the nodes' hosts", "name one host per node, the head first "
                          "(--glm-hosts h1,h2); --glm-nodes sets the count")
    if base_url and (values.get("nodes") is not None or values.get("node_runner") or hosts):
        # A multi-node profile alone is fine: it gives an endpoint on two nodes its thresholds.
        raise ConfigError("--glm-base-url", "tests an endpoint that runs; --glm-nodes/--glm-node-runner/--glm-hosts "
                          "launch one", "drop --glm-base-url, or drop the node options")
    return runner, hosts
