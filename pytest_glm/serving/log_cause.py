"""The root cause of a vLLM server's failure, read from its log.

vLLM runs an API server, an engine core and one worker per rank in separate processes that write to one
log, each line prefixed ``(APIServer pid=N)``, ``(EngineCore_DP0 pid=N)``, ``(Worker_TP0 pid=N)``...
When a worker fails, the engine core reports "WorkerProc initialization failed ... See stack trace for
root cause", and the API server then "Engine core initialization failed. See root cause above": the last
traceback, the one a reader sees first, is the least informative. This module splits the log by process,
takes each process's first (or, for a server that dies mid-run, last) exception, and ranks them: worker,
then engine core, then API server, and a message that only points at another process's error ("root
cause") last. Pure functions over the log text (and one that reads it).
"""

from __future__ import annotations

import dataclasses
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

from pytest_glm.catalog.failures import KnownCause, explain

#: "(Worker_TP0 pid=123) rest": vLLM's prefix on the lines of each process.
_DECORATION = re.compile(r"^\((?P<label>[A-Za-z][\w.\-]*) pid=(?P<pid>\d+)\) ?(?P<rest>.*)$")
#: "ERROR 12-04 04:58:53 [core.py:1510] message" (vLLM's logger), "ERROR:    message" (uvicorn's).
_HEADER = re.compile(r"^(?P<level>DEBUG|INFO|WARNING|ERROR|CRITICAL)(?: (?:[\d:\-., ]+ )?\[[^\]\s]+\] ?|:\s+)(?P<msg>.*)$")
#: multiprocessing's line before a child process's uncaught traceback (printed without vLLM's prefix).
_CHILD = re.compile(r"^Process (?P<label>[A-Za-z][\w.\-]*):$")
_TRACEBACK = "Traceback (most recent call last):"
_CHAINED = ("The above exception was the direct cause of the following exception:",
            "During handling of the above exception, another exception occurred:")
#: The exception line that ends a traceback: "pkg.mod.SomeError: message" or a bare name.
_RAISED = re.compile(r"^(?P<type>[A-Za-z_][\w.]*)(?::\s?(?P<msg>.*))?$")
#: An exception line on its own (no traceback above it): only names that say they are errors.
_BARE = re.compile(r"^(?P<type>[A-Za-z_][\w.]*(?:Error|Exception|Exit)): (?P<msg>.+)$")
#: argparse's usage error: "api_server.py: error: unrecognized arguments: --x".
_USAGE = re.compile(r"^(?P<prog>[\w.\-]+(?: [\w\-]+)?): error: (?P<msg>.+)$")
_FRAME = re.compile(r'^File "(?P<path>[^"]+)", line (?P<line>\d+), in (?P<func>.+)$')
#: vLLM's wording for an error that only reports another process's failure.
_PROPAGATED = re.compile(r"root cause", re.IGNORECASE)

WORKER, ENGINE_CORE, API_SERVER = 3, 2, 1
MESSAGE_CHARS = 240
FRAMES = 2
#: Frames that say nothing about where an error was raised (comprehensions, decorators' wrappers).
_PLUMBING = frozenset({"<genexpr>", "<listcomp>", "<dictcomp>", "<setcomp>", "<lambda>", "sync_wrapper", "wrapper",
                       "inner", "_wrapper", "wrapped"})


@dataclass(frozen=True)
class Cause:
    """One process's exception.

    :param process: the process as vLLM labels it (``Worker_TP0``, ``EngineCore``, ``APIServer``); '' for
        a log without process prefixes.
    :param error: the exception's class name without its module (``SafetensorError``); '' for an error
        line that names none.
    :param message: the exception's message (its first line, shortened).
    :param frames: the last frames of its traceback, innermost last: where it was raised.
    :param text: the exception chain's lines, what the known causes are matched against.
    :param line: where it is in the log (1-based).
    :param incident: which burst of errors of its process it belongs to (counted from 0): a healthy line of
        the process (INFO, WARNING, not a shutdown step) between two errors starts the next burst.
    :param known: the known cause it matches, if any.
    """

    process: str
    error: str
    message: str
    frames: tuple[str, ...] = ()
    text: str = ""
    line: int = 0
    incident: int = field(default=0, compare=False)
    known: KnownCause | None = field(default=None, compare=False)

    @property
    def exception(self) -> str:
        """'SafetensorError: Error while deserializing header: ...' (or the bare message)."""
        return f"{self.error}: {self.message}" if self.error else self.message

    @property
    def headline(self) -> str:
        """'Worker_TP0: SafetensorError: ...': the process, then the exception."""
        return f"{self.process}: {self.exception}" if self.process else self.exception

    @property
    def role(self) -> int:
        return role(self.process)

    @property
    def propagated(self) -> bool:
        """True for vLLM's "see the root cause above" errors, which only report another process's."""
        return _PROPAGATED.search(self.text or self.message) is not None


def role(label: str) -> int:
    """Where a process stands in the chain of blame: a worker's error is the root of the engine core's,
    which is the root of the API server's."""
    low = label.lower()
    if "worker" in low:
        return WORKER
    if low.startswith("engine"):
        return ENGINE_CORE
    return API_SERVER


@dataclass
class _Line:
    number: int
    label: str
    level: str
    text: str


def _split(log_text: str) -> dict[str, list[_Line]]:
    """The log's lines by process (key: pid, or the label of an unprefixed child traceback); the lines
    with no prefix go to the main process (key '')."""
    streams: dict[str, list[_Line]] = {}
    pid_of: dict[str, str] = {}
    main_label = ""
    child, state = "", ""  # the child whose unprefixed traceback is being read; where in it we are
    for number, raw in enumerate(log_text.removesuffix("\n").split("\n"), start=1):
        decorated = _DECORATION.match(raw)
        if decorated:
            label, rest = decorated["label"], decorated["rest"]
            key = decorated["pid"]
            pid_of.setdefault(label, key)
            if not main_label and role(label) == API_SERVER:
                main_label = label
        else:
            label, rest, key = "", raw, ""
            found = _CHILD.match(raw.strip())
            if found:
                child, state = found["label"], "frames"
                continue
            if child:
                state = _child_state(state, raw)
                if state:
                    label, key = child, pid_of.get(child, f"child:{child}")
                else:
                    child = ""
        header = _HEADER.match(rest)
        level, text = (header["level"], header["msg"]) if header else ("", rest)
        streams.setdefault(key, []).append(_Line(number, label, level, text))
    for line in streams.get("", []):
        line.label = main_label
    return streams


def _child_state(state: str, raw: str) -> str:
    """Where an unprefixed child traceback stands after ``raw``: 'frames', 'raised' (its exception line
    seen), 'chained' (a chain marker seen), or '' (``raw`` is past its end)."""
    stripped = raw.strip()
    if state == "frames":
        indented = raw[:1].isspace() or not stripped or stripped.startswith(_TRACEBACK)
        return "frames" if indented else "raised"
    if state == "raised":
        if raw[:1].isspace() or not stripped:
            return "raised"
        return "chained" if stripped in _CHAINED else ""
    if not stripped:
        return "chained"
    return "frames" if stripped.startswith(_TRACEBACK) else ""


def _short_type(name: str) -> str:
    return name.rsplit(".", 1)[-1]


def _shorten(message: str) -> str:
    message = re.sub(r"\s*\[type=\w+, input_value=.*$", "", message.strip())  # pydantic's input echo
    return message if len(message) <= MESSAGE_CHARS else message[:MESSAGE_CHARS - 1].rstrip() + "…"


def _frame(lines: list[str]) -> str:
    """'File ".../site-packages/vllm/x.py", line 9, in f' + its code -> 'vllm/x.py:9 in f: code'."""
    found = _FRAME.match(lines[0])
    if not found:
        return lines[0]
    path = re.split(r"/(?:site|dist)-packages/", found["path"])[-1]
    code = next((c for c in lines[1:] if c and set(c) - set("^~ ")), "")
    return f"{path}:{found['line']} in {found['func']}" + (f": {code}" if code else "")


def _last_frames(frames: list[list[str]]) -> tuple[str, ...]:
    """The innermost frames, decorators' wrappers and comprehensions left out (unless innermost)."""
    kept = [f for i, f in enumerate(frames)
            if i == len(frames) - 1 or (m := _FRAME.match(f[0])) is None or m["func"] not in _PLUMBING]
    return tuple(_frame(f) for f in kept[-FRAMES:])


def _traceback(lines: list[_Line], start: int) -> tuple[Cause | None, int]:
    """The exception chain whose 'Traceback' line is ``lines[start]``: its first (root) exception, with
    the chain's text; and the index after it."""
    chain: list[tuple[str, str, list[str], list[list[str]]]] = []  # type, message, details, frames
    j = start + 1
    frames: list[list[str]] = []
    while j < len(lines):
        raw = lines[j].text
        stripped = raw.strip()
        if raw[:1].isspace() or not stripped:
            if stripped.startswith("File "):
                frames.append([stripped])
            elif stripped and frames:
                frames[-1].append(stripped)
            j += 1
            continue
        raised = _RAISED.match(stripped)
        name, message = (raised["type"], raised["msg"] or "") if raised else ("", stripped)
        j += 1
        details: list[str] = []
        while j < len(lines) and lines[j].text[:1].isspace() and lines[j].text.strip():
            details.append(lines[j].text.strip())
            j += 1
        chain.append((name, message, details, frames))
        k = j
        while k < len(lines) and not lines[k].text.strip():
            k += 1
        if k < len(lines) and lines[k].text.strip() in _CHAINED:
            k += 1
            while k < len(lines) and not lines[k].text.strip():
                k += 1
            if k < len(lines) and lines[k].text.strip().startswith(_TRACEBACK):
                j, frames = k + 1, []
                continue
        break
    if not chain:
        return None, j
    name, message, details, root_frames = chain[0]
    if re.match(r"\d+ validation errors? for ", message) and details:  # pydantic: the reason is below
        reason = next((d for d in details if d.startswith("Value error, ")), details[0])
        message = reason.removeprefix("Value error, ")
    text = "\n".join(f"{n}: {m}\n" + "\n".join(d) for n, m, d, _ in chain)
    first = lines[start]
    cause = Cause(process=first.label, error=_short_type(name), message=_shorten(message),
                  frames=_last_frames(root_frames), text=text, line=first.number)
    return cause, j


def _events(lines: list[_Line]) -> list[Cause]:
    """One process's exceptions, in log order: tracebacks (with the ERROR line that introduces them),
    ERROR lines on their own, and bare exception or usage-error lines; each numbered by its incident."""
    out: list[Cause] = []
    incident, quiet = 0, False
    i = 0
    while i < len(lines):
        line = lines[i]
        text = line.text.strip()
        found: Cause | None = None
        if line.level not in ("", "ERROR", "CRITICAL"):
            quiet = quiet or "shutdown" not in text.lower()
        elif text.startswith(_TRACEBACK):
            found, i = _traceback(lines, i)
            i -= 1
        elif line.level and i + 1 < len(lines) and lines[i + 1].text.strip().startswith(_TRACEBACK):
            pass  # "WorkerProc failed to start." introduces the traceback below it
        elif line.level and text:
            bare = _BARE.match(text)
            error, message = (_short_type(bare["type"]), bare["msg"]) if bare else ("", text)
            found = Cause(line.label, error, _shorten(message), text=text, line=line.number)
        elif not line.level:
            bare, usage = _BARE.match(text), _USAGE.match(text)
            if bare:
                found = Cause(line.label, _short_type(bare["type"]), _shorten(bare["msg"]), text=text,
                              line=line.number)
            elif usage:
                found = Cause(line.label, "", _shorten(text), text=text, line=line.number)
        if found is not None:
            if quiet and out:
                incident += 1
            quiet = False
            out.append(dataclasses.replace(found, incident=incident))
        i += 1
    return out


def exceptions(log_text: str) -> dict[str, list[Cause]]:
    """Every process's exceptions, by process key (pid; '' for the unprefixed main process)."""
    return {key: found for key, lines in _split(log_text).items() if (found := _events(lines))}


def root_cause(log_text: str, *, latest: bool = False) -> Cause | None:
    """The exception that explains the failure recorded in ``log_text`` (None: the log shows none).

    Each process's first exception (``latest``: the first of its last incident, for a server that failed
    after serving) is a candidate; an error that only points at another process's ("root cause") comes last, then a worker's
    ranks above an engine core's above the API server's, then the earliest in the log.
    """
    candidates = [next(c for c in found if c.incident == found[-1].incident) if latest else found[0]
                  for found in exceptions(log_text).values()]
    if not candidates:
        return None
    best = max(candidates, key=lambda c: (not c.propagated, c.role, -c.line))
    return dataclasses.replace(best, known=explain(best.text or best.exception))


def describe(cause: Cause) -> list[str]:
    """The lines that tell a user what failed and what to do: where it was raised, the known cause's
    explanation and hint (nothing but the frames when the cause is not a known one)."""
    lines = [f"  at {frame}" for frame in cause.frames]
    if cause.known is not None:
        lines += [f"cause: {cause.known.explanation}", f"hint: {cause.known.hint}"]
    return lines


def read_log(path: str | Path, max_bytes: int = 4 * 1024 * 1024) -> str:
    """The log's text, its last ``max_bytes`` when it is longer ('' when it cannot be read): enough to hold
    the worker's traceback above the engine core's and the API server's, which a 40-line tail does not."""
    try:
        with open(path, "rb") as fh:
            fh.seek(0, os.SEEK_END)
            fh.seek(max(fh.tell() - max_bytes, 0))
            return fh.read().decode("utf-8", errors="replace")
    except OSError:
        return ""
