"""Start ``vllm serve``, wait until it is healthy, and always stop it.

Process start, readiness polling and process-group teardown come from mirakuru (as in pytest-postgresql);
this module adds what a multi-minute model load needs: the server in our session (see
:attr:`VLLMExecutor._popen_kwargs`), the log in a file (never an unread pipe), progress
while waiting, an early exit caught at once with the log tail, a shorter stop grace than the start budget,
and a reaper process that ends the server if the pytest process that owns it is killed outright.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, Any

from mirakuru import HTTPExecutor
from mirakuru.exceptions import AlreadyRunning, ProcessExitedWithError, TimeoutExpired

from pytest_glm.catalog.failures import hints
from pytest_glm.exceptions import DeploymentError, ServerDied
from pytest_glm.serving.command import ServeCommand, VLLMEntry
from pytest_glm.serving.log_cause import describe, read_log, root_cause

#: Teardown problems go here: pytest shows them with the test's logs (and live with --log-cli-level).
logger = logging.getLogger("pytest_glm")


@contextlib.contextmanager
def _logged(what: str) -> Iterator[None]:
    """A teardown step that must not stop the ones after it: its failure is logged, not raised."""
    try:
        yield
    except Exception as exc:
        logger.warning("%s failed: %s: %s", what, type(exc).__name__, exc)


#: Seconds between the SIGTERM that asks vLLM to shut down and the SIGKILL of its whole process group.
STOP_GRACE = 30.0

#: The same for a server stopped before it was ready (Ctrl-C during the model load, a failed start): it has
#: nothing to drain, and vLLM ignores SIGTERM while it loads, so the whole grace was always waited for.
STARTING_STOP_GRACE = 5.0

#: Seconds between two progress reports while the model loads.
PROGRESS_EVERY = 10.0

#: Lines of the log shown under a failure whose root cause was found (the whole tail when none was).
SHORT_TAIL = 12


def free_port(host: str = "127.0.0.1") -> int:
    """A port that nothing listens on right now (the OS picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def port_is_taken(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.settimeout(1.0)
        return sock.connect_ex((host, port)) == 0


def tail(path: str | Path, lines: int = 40) -> str:
    """Last ``lines`` lines of a log file (empty if it does not exist)."""
    try:
        with open(path, "rb") as fh:
            fh.seek(0, os.SEEK_END)
            size = fh.tell()
            fh.seek(max(size - 64 * 1024, 0))
            data = fh.read().decode("utf-8", errors="replace")
    except OSError:
        return ""
    return "\n".join(data.splitlines()[-lines:])


def last_log_line(path: str | Path) -> str:
    for line in reversed(tail(path, 20).splitlines()):
        if line.strip():
            return line.strip()
    return ""


def hints_for(log_text: str) -> list[str]:
    """The hints of every known cause (``pytest_glm.catalog.failures``) that the text shows."""
    return hints(log_text)


class VLLMExecutor(HTTPExecutor):
    """mirakuru's HTTP executor for a vLLM server: ready when ``GET /health`` answers 200.

    Differences from the base class: a clean exit (code 0) during start-up is a failure too, a progress
    callback runs between health checks, and :meth:`stop` waits ``STOP_GRACE`` seconds, not the whole
    start-up budget (``grace``: shorter for a server that never became ready), before it kills the process
    group.
    """

    def __init__(self, argv: list[str], url: str, log: IO[Any], env: dict[str, str], timeout: float,
                 progress: Callable[[float], None] | None = None, on_spawn: Callable[[int], None] | None = None,
                 detachable: bool = False) -> None:
        super().__init__(argv, url=url, status=r"^200$", method="GET", request_timeout=5.0, timeout=timeout,
                         sleep=0.5, envvars=env, stdin=subprocess.DEVNULL, stdout=log, stderr=log)
        if detachable:
            # mirakuru's atexit hook kills every process tagged with our pid; a kept server must outlive us.
            self._uuid = f"pytest-glm-kept:{uuid.uuid4()}"
        self._progress = progress
        self._on_spawn = on_spawn
        self._started_at = 0.0
        self._last_progress = 0.0
        self.grace = STOP_GRACE

    @property
    def _popen_kwargs(self) -> dict[str, Any]:
        """mirakuru starts the server with ``setsid``. On Linux a new session is a new scheduler autogroup, and
        with the server's busy threads in a group of their own the client's group was starved for seconds at a
        time on a 2-core box (measured: the load runner's event loop late by up to 10 s, so TTFTs of 5-10 s and
        whole answers read in one go; in the same group, 3 ms at most). The server gets a process group of its
        own (``killpg`` still ends all of it, Ctrl-C in a terminal still reaches only us) in our session."""
        kwargs = super()._popen_kwargs
        if kwargs.pop("preexec_fn", None) is not None:
            kwargs["process_group"] = 0
        return kwargs

    def start(self) -> VLLMExecutor:
        self._started_at = self._last_progress = time.monotonic()
        return super().start()

    def check_subprocess(self) -> bool:
        if self._on_spawn is not None and self.process is not None:
            on_spawn, self._on_spawn = self._on_spawn, None
            on_spawn(self.process.pid)
        if self.process is not None and self.process.poll() == 0:
            self._kill_all_kids(self._kill_signal)
            self._clear_process()
            raise ProcessExitedWithError(self, 0)
        return super().check_subprocess()

    def after_start_check(self) -> bool:
        ready = super().after_start_check()
        now = time.monotonic()
        if not ready and self._progress is not None and now - self._last_progress >= PROGRESS_EVERY:
            self._last_progress = now
            self._progress(now - self._started_at)
        return ready

    def stop(self, stop_signal: int | None = None, expected_returncode: int | None = None) -> VLLMExecutor:
        budget = self._timeout
        self._timeout = self.grace
        try:
            # vLLM exits with 0 on SIGTERM, or with -SIGTERM if it dies in the signal; both are fine.
            return super().stop(stop_signal=stop_signal, expected_returncode=expected_returncode or 0)
        except Exception as exc:  # an odd exit code at teardown must not hide the test results
            logger.warning("vLLM did not stop cleanly (%s: %s); killing its process group", type(exc).__name__, exc)
            self.kill()
            return self
        finally:
            self._timeout = budget

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process is not None else None


class ServerProcess:
    """One launched vLLM server: its executor, URL, log file and reaper.

    :param command: the serving command (flags and environment).
    :param entry: how vLLM is invoked here.
    :param log_path: where vLLM's stdout and stderr go.
    :param owner_pid: the process whose death must end the server (the pytest controller).
    """

    def __init__(self, command: ServeCommand, entry: VLLMEntry, log_path: Path, *, host: str, port: int,
                 startup_timeout: float, owner_pid: int | None = None, extra_env: dict[str, str] | None = None,
                 reaper: bool = True) -> None:
        self.command = command
        self.entry = entry
        self.log_path = log_path
        self.host = host
        self.port = port
        self.startup_timeout = startup_timeout
        self.owner_pid = owner_pid or os.getpid()
        self.extra_env = extra_env or {}
        self.use_reaper = reaper
        self.executor: VLLMExecutor | None = None
        self._log: IO[Any] | None = None
        self._reaper: subprocess.Popen[bytes] | None = None
        self.started_in: float | None = None

    @property
    def base_url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def argv(self) -> list[str]:
        args = list(self.command.args)
        if "--port" not in args:
            args += ["--port", str(self.port)]
        return self.entry.argv(self.command.model, tuple(args))

    def env(self) -> dict[str, str]:
        # The command's defaults yield to what the user exported; our own extras (the API key) do not.
        env = {k: v for k, v in {**self.command.env, **self.entry.env}.items() if k not in os.environ}
        env.update(self.extra_env)
        env.setdefault("PYTHONUNBUFFERED", "1")
        return env

    def start(self, progress: Callable[[float, str], None] | None = None) -> None:
        """Start the server and block until ``/health`` answers, the process exits, or time runs out.

        Whatever happens, including KeyboardInterrupt, a server that did not become ready is stopped
        before this returns or raises.
        """
        if port_is_taken(self.host, self.port):
            raise DeploymentError(f"port {self.port} on {self.host} is already taken",
                                  "choose another --glm-port, or leave it at 0 to pick a free one")
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        self._log = open(self.log_path, "w", encoding="utf-8")  # noqa: SIM115 - closed in stop()
        self._log.write(f"# pytest-glm: {' '.join(self.argv())}\n")
        self._log.flush()

        def report(elapsed: float) -> None:
            if progress is not None:
                progress(elapsed, last_log_line(self.log_path))

        self.executor = VLLMExecutor(self.argv(), url=f"{self.base_url}/health", log=self._log, env=self.env(),
                                     timeout=self.startup_timeout, progress=report, on_spawn=self._start_reaper,
                                     detachable=not self.use_reaper)
        began = time.monotonic()
        try:
            self.executor.start()
        except ProcessExitedWithError as exc:
            self.stop()
            raise self._failure(f"vLLM exited during start-up (exit code {exc.exit_code})") from exc
        except TimeoutExpired as exc:
            self.stop()
            raise self._failure(f"vLLM did not become healthy within {self.startup_timeout:.0f} s",
                                "raise --glm-startup-timeout if the model is still loading") from exc
        except AlreadyRunning as exc:
            self.stop()
            raise DeploymentError(f"port {self.port} on {self.host} is already taken",
                                  "choose another --glm-port, or leave it at 0 to pick a free one") from exc
        except BaseException:
            self.stop()
            raise
        self.started_in = time.monotonic() - began

    def _failure(self, summary: str, extra: str = "") -> DeploymentError:
        """A failed start, its root cause first: 'vLLM failed to start: Worker_TP0: SafetensorError: ...',
        where it was raised, the known cause's hint, then what happened, the command and a short tail."""
        return DeploymentError(*self._report("vLLM failed to start", summary, extra, latest=False))

    def _report(self, lead: str, summary: str, extra: str, *, latest: bool,
                command: bool = True) -> tuple[str, str, str, str]:
        """(summary, detail, log tail, log path) for an error. With a root cause in the log, the summary is
        ``lead: cause`` and the tail short; without one, ``summary`` and the hints the whole tail shows."""
        cause = root_cause(read_log(self.log_path), latest=latest)
        fallback = [] if cause is not None and cause.known is not None else hints_for(tail(self.log_path, 400))
        lines = [*(describe(cause) if cause is not None else []), *(f"hint: {h}" for h in fallback)]
        if cause is not None:
            lines.append(summary)
        lines += [extra, f"command: {self.command.display()}" if command else ""]
        first = f"{lead}: {cause.headline}" if cause is not None else summary
        log_tail = tail(self.log_path, SHORT_TAIL) if cause is not None else tail(self.log_path)
        return first, "\n".join(filter(None, lines)), log_tail, str(self.log_path)

    def _start_reaper(self, pid: int) -> None:
        """A watchdog outside our process tree: if the owner dies (SIGKILL, OOM), it ends the server."""
        if not self.use_reaper:
            return
        self._reaper = subprocess.Popen(
            [sys.executable, "-m", "pytest_glm.serving.reaper", str(self.owner_pid), str(pid)],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
        )

    def memory_gib(self) -> float | None:
        """Resident memory of the server and all its processes (API server, engine core, workers), GiB."""
        import psutil

        if self.executor is None or self.executor.pid is None:
            return None
        try:
            root = psutil.Process(self.executor.pid)
            procs = [root, *root.children(recursive=True)]
        except psutil.Error:
            return None
        total = 0
        for proc in procs:
            try:
                total += proc.memory_info().rss
            except psutil.Error:
                continue
        return total / 1024**3

    def running(self) -> bool:
        return self.executor is not None and self.executor.running()

    def exit_code(self) -> int | None:
        if self.executor is None or self.executor.process is None:
            return None
        return self.executor.process.poll()

    def died(self) -> DeploymentError:
        """The error to raise when the server is found dead while tests still need it: 'vLLM server died
        (exit code N): <root cause>' when its log shows one (the last exception of each process)."""
        summary = f"vLLM server died (exit code {self.exit_code()})"
        first, detail, log_tail, path = self._report(summary, summary, "", latest=True, command=False)
        if first != summary:  # the exit code is in the first line already
            detail = "\n".join(line for line in detail.splitlines() if line != summary)
        return ServerDied(first, detail, log_tail, path)

    def detach(self) -> None:
        """Forget the server without stopping it (--glm-keep-server): it outlives this process."""
        if self.executor is not None:
            self.executor.process = None
        self.executor = None
        self.stop()

    def stop(self) -> None:
        """Stop the server and everything it started; safe to call twice, never raises (a step that fails is
        logged, and the next one still runs)."""
        if self.executor is not None:
            if self.started_in is None:  # stopped before it was ready
                self.executor.grace = STARTING_STOP_GRACE
            with _logged("stopping the vLLM server"):
                self.executor.stop()
            with _logged("killing the vLLM server's process group"):
                self.executor.kill()
        if self._reaper is not None:
            with _logged("ending the reaper"):
                self._reaper.terminate()
                self._reaper.wait(timeout=5)
            self._reaper = None
        if self._log is not None:
            with _logged("closing the server log"):
                self._log.close()
            self._log = None
