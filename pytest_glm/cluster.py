"""Attaching to a Ray cluster that already runs (``RAY_ADDRESS``), safely: the Ray node runner
(serving/ray_nodes.py) and the load workers (measuring/load_workers.py) both use it.

The address is probed first (TCP, then a Ray connection in a child process), because an in-process
``ray.init`` on an address that does not answer hangs for minutes or ends the whole process from Ray's C++
core; and ``ray.init`` replaces the SIGTERM handler, which the run's own teardown needs, so it is put back.
Ray is imported only when asked for (an optional dependency).
"""

from __future__ import annotations

import contextlib
import importlib
import logging
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from typing import Any

from pytest_glm.exceptions import ConfigError, DeploymentError

#: Seconds for the cluster's address to answer: a TCP connect, then a Ray connection in a child process
#: (about 1 s when the cluster is there).
CONNECT_TIMEOUT = 15.0

def _ray() -> Any:
    """The ``ray`` module, imported only when this runner is used (an optional dependency); untyped here so that
    type checks read the same with and without it."""
    return importlib.import_module("ray")


def _one_line(text: str, limit: int = 240) -> str:
    """The last line of ``text`` that says what went wrong (an ``...Error: ...`` line when there is one)."""
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    errors = [line for line in lines if re.match(r"^[\w.]*(Error|Exception|Mismatch)\b.*:", line)]
    line = (errors or lines or [""])[-1]
    return line if len(line) <= limit else line[:limit - 3] + "..."


# -- the cluster's address ---------------------------------------------------------------------------
def cluster_address(address: str | None = None) -> str:
    """The Ray cluster to attach to: ``address``, else ``RAY_ADDRESS``. Never one to start."""
    value = (address or os.environ.get("RAY_ADDRESS", "")).strip()
    if not value:
        raise ConfigError("RAY_ADDRESS", "the ray node runner attaches to a running Ray cluster, and RAY_ADDRESS "
                          "is not set", "export RAY_ADDRESS=HEAD:6379, the address `ray start --head` printed")
    if value == "local":
        raise ConfigError("RAY_ADDRESS", "'local' would start a Ray instance on this machine; the ray node runner "
                          "only attaches to a cluster that runs", "export RAY_ADDRESS=HEAD:6379")
    return value


def _host_port(address: str) -> tuple[str, int] | None:
    """Where ``address`` listens (``host:port``, ``ray://host:port``, ``[v6]:port``); None for ``auto``, which
    Ray resolves from this machine's own record of a running cluster."""
    if address == "auto":
        return None
    client = address.startswith("ray://")
    rest = address.split("://", 1)[1] if "://" in address else address
    rest = rest.split("/", 1)[0]
    if rest.startswith("["):  # [v6]:port
        host, _, port = rest[1:].partition("]")
        port = port.lstrip(":")
    elif rest.count(":") == 1:
        host, port = rest.split(":")
    else:  # a name, or a bare IPv6 address
        host, port = rest, ""
    try:
        return host, int(port) if port else (10001 if client else 6379)
    except ValueError:
        raise ConfigError("RAY_ADDRESS", f"expected HOST:PORT or ray://HOST:PORT, got {address!r}") from None


#: Run by a child Python: connect as this process would, and say so. A failure ends the child, not us.
_PROBE = (
    "import logging, sys\n"
    "import ray\n"
    "ray.init(address=sys.argv[1], log_to_driver=False, logging_level=logging.ERROR)\n"
    "print('pytest-glm: ray ok', flush=True)\n"
)


def probe(address: str, timeout: float = CONNECT_TIMEOUT) -> None:
    """Raise DeploymentError, one line naming ``address``, unless a Ray cluster answers there within ``timeout``."""
    began = time.monotonic()
    where = _host_port(address)
    if where is not None:
        try:
            with socket.create_connection(where, timeout=min(timeout, 5.0)):
                pass
        except OSError as exc:
            reason = "timed out" if isinstance(exc, TimeoutError) else (exc.strerror or type(exc).__name__)
            raise DeploymentError(f"the Ray cluster at {address} (RAY_ADDRESS) does not answer: {reason}") from None
    left = max(timeout - (time.monotonic() - began), 1.0)
    # Ray's own reconnect budget shorter than ours, so that the child gives up and says why before we kill it.
    env = {**os.environ, "RAY_gcs_rpc_server_reconnect_timeout_s": str(max(int(left) - 2, 1))}
    try:
        done = subprocess.run([sys.executable, "-c", _PROBE, address], capture_output=True, text=True,
                              timeout=left, env=env, stdin=subprocess.DEVNULL, check=False)
    except subprocess.TimeoutExpired:
        raise DeploymentError(f"the Ray cluster at {address} (RAY_ADDRESS) does not answer: no Ray connection "
                              f"within {timeout:.0f} s") from None
    if "pytest-glm: ray ok" not in done.stdout:
        why = _one_line(done.stderr) or f"exit code {done.returncode}"
        raise DeploymentError(f"the Ray cluster at {address} (RAY_ADDRESS) does not answer as a Ray cluster: {why}")


@contextlib.contextmanager
def _signals_kept() -> Iterator[None]:
    """``ray.init`` replaces the SIGTERM handler with ``sys.exit``; the deployment's own (SIGTERM ends the run
    through its teardown, which stops the nodes) must stay."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    kept = {sig: signal.getsignal(sig) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        yield
    finally:
        for sig, handler in kept.items():
            if handler is not None:
                signal.signal(sig, handler)


def connect(address: str, timeout: float = CONNECT_TIMEOUT) -> bool:
    """Connect this process to the Ray cluster at ``address``. True when this call connected it (the caller
    then disconnects), False when the process already was."""
    ray = _ray()
    if ray.is_initialized():
        return False
    probe(address, timeout)
    try:
        with _signals_kept():
            ray.init(address=address, log_to_driver=False, logging_level=logging.ERROR)
    except Exception as exc:
        raise DeploymentError(f"the Ray cluster at {address} (RAY_ADDRESS) refused the connection: "
                              f"{_one_line(str(exc)) or type(exc).__name__}") from exc
    return True
