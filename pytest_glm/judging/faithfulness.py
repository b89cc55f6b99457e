"""Did the deployment serve what the model generated? Exact checks, from the model's own token ids.

The server returns the ids it generated (``return_token_ids``; streamed, each chunk carries its own).
They are detokenized with special tokens kept and split by :mod:`pytest_glm.judging.glm_output`, this project's
own reading of GLM's format. What the server made of the same tokens must equal that reading:

- tool calls: the same calls in the same order, names exact, argument values equal by JSON type and,
  for strings, byte for byte;
- reasoning and content: equal up to whitespace at their edges (vLLM keeps the newline GLM-4.5 writes
  before ``<think>`` in the reasoning, and streamed content keeps edge newlines that non-streamed drops);
- finish_reason from how generation ended, and the usage counts from the ids;
- streamed: each of the above for the stream's own ids, and the stream incremental: a call's name before
  its arguments are complete, a long argument in more than one delta;
- the wire form, not only the values after ``json.loads``: ``arguments`` is a JSON object text (``"{}"``
  for a call without arguments, never ``""``), with no key twice, and non-ASCII text arrives as itself,
  not ``\\uXXXX``-escaped where the model wrote the character; a call's id has the same shape streamed
  and not (:func:`id_shape_findings`).

The model's choices do not matter here: whatever it wrote, the deployment must pass it through
unchanged. A finding names the layer at fault ("the tool parser returned city='paris' where the model
generated 'Paris'").
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

from pytest_glm.judging.answers import Answer
from pytest_glm.judging.cases import Case
from pytest_glm.judging.glm_output import (
    CALL_CLOSE,
    CALL_OPEN,
    THINK_CLOSE,
    GeneratedCall,
    GeneratedOutput,
    parse_output,
)
from pytest_glm.judging.matchers import same_json

#: Streamed: a call whose tokens span this many chunks must show its name before its arguments end, and
#: an argument value of at least LONG_ARGUMENT characters spanning them must arrive in pieces.
INCREMENTAL_CHUNKS = 4
LONG_ARGUMENT = 40

#: Tolerance of the usage's reasoning_tokens against the think block's ids (the tags at its edges).
REASONING_TOKENS_SLACK = 2


@dataclass(frozen=True)
class Finding:
    """One way the served answer differs from what the model generated."""

    layer: str  # "tool parser", "reasoning parser", "streaming", "finish_reason", "usage"
    text: str

    def __str__(self) -> str:
        return f"{self.layer}: {self.text}"


def _short(value: Any, limit: int = 160) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


#: A ``\\uXXXX`` escape in JSON text (the backslash itself not escaped).
_UNICODE_ESCAPE = re.compile(r"(?<!\\)(?:\\\\)*\\u([0-9a-fA-F]{4})")


def wire_findings(where: str, raw: str, generated: GeneratedCall) -> list[Finding]:
    """What is wrong with the raw ``arguments`` string itself, whatever its values parse to."""
    if not raw.strip():
        return [Finding("API", f"{where}: `arguments` is an empty string; a call without arguments must send \"{{}}\" "
                               f"(clients json.loads it)")]
    out = []
    try:
        json.loads(raw, object_pairs_hook=_no_repeated_keys)
    except _RepeatedKey as exc:
        out.append(Finding("tool parser", f"{where}: the arguments repeat the key {exc.args[0]!r} (json.loads keeps "
                                          f"only the last): {_short(raw)}"))
    except ValueError:
        pass  # reported with the values
    written = "".join(generated.raw.values())
    escaped = sorted({m.group(0)[-6:] for m in _UNICODE_ESCAPE.finditer(raw)
                      if int(m.group(1), 16) >= 0x80 and m.group(0)[-6:] not in written})
    if escaped:
        out.append(Finding("API", f"{where}: non-ASCII text arrives escaped ({', '.join(escaped[:4])}) in the raw "
                                  f"arguments, where the model wrote the characters themselves"))
    return out


class _RepeatedKey(ValueError):
    pass


def _no_repeated_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    keys = [k for k, _ in pairs]
    for key in keys:
        if keys.count(key) > 1:
            raise _RepeatedKey(key)
    return dict(pairs)


def id_shape(call_id: str) -> str:
    """An id with its random part replaced by its length: ``chatcmpl-tool-9f3a...`` -> ``<8>-tool-<16>``."""
    return re.sub(r"[A-Za-z0-9]{8,}", lambda m: f"<{len(m.group())}>", call_id)


def id_shape_findings(plain: Answer, streamed: Answer) -> list[Finding]:
    """The same calls streamed and not carry ids of the same shape (clients key their state on them)."""
    shapes = [{id_shape(c.id) for c in a.calls if c.id} for a in (plain, streamed)]
    if not all(shapes) or shapes[0] == shapes[1]:
        return []
    return [Finding("API", f"tool call ids have one shape non-streamed ({', '.join(sorted(shapes[0]))}) and another "
                           f"streamed ({', '.join(sorted(shapes[1]))})")]


def _call_findings(index: int, served: Any, generated: GeneratedCall) -> list[Finding]:
    where = f"call {index}"
    out = []
    if served.name != generated.name:
        out.append(Finding("tool parser", f"{where}: the tool parser returned the name {served.name!r} where the model "
                                          f"generated {generated.name!r}"))
    out += wire_findings(f"{where} ({generated.name})", served.arguments, generated)
    try:
        args = served.parsed()
    except ValueError as exc:
        return [*out, Finding("tool parser", f"{where} ({generated.name}): the arguments are not JSON ({exc}): "
                                             f"{_short(served.arguments)}")]
    if not isinstance(args, dict):
        return [*out, Finding("tool parser", f"{where} ({generated.name}): the arguments are a JSON "
                                             f"{type(args).__name__}, not an object: {_short(served.arguments)}")]
    for key in generated.raw:
        if key not in args:
            out.append(Finding("tool parser", f"{where} ({generated.name}): the tool parser dropped the argument "
                                              f"{key!r} the model generated as {_short(generated.raw[key])}"))
            continue
        readings = [generated.arguments[key]]
        if key in generated.ambiguous:
            readings.append(generated.raw[key])
        if not any(same_json(args[key], r) for r in readings):
            out.append(Finding("tool parser", f"{where} ({generated.name}): the tool parser returned {key}="
                                              f"{_short(args[key])} where the model generated {_short(readings[0])}"
                                              + (f" (text {_short(generated.raw[key])})"
                                                 if not isinstance(readings[0], str) else "")))
    for key in args:
        if key not in generated.raw:
            out.append(Finding("tool parser", f"{where} ({generated.name}): the tool parser added the argument "
                                              f"{key}={_short(args[key])}, which the model did not generate"))
    return out


def _expected_finish(case: Case, generated: GeneratedOutput, calls: list[GeneratedCall]) -> tuple[str, ...]:
    if generated.stop is None:
        return ("length",)
    return case.call_finishes if calls else ("stop",)


def compare(case: Case, answer: Answer, generated: GeneratedOutput, *, tag_ids: dict[str, int] | None = None) -> list[Finding]:
    """Every way ``answer`` (what the server returned) differs from ``generated`` (what its ids say)."""
    findings: list[Finding] = []
    declared = {t["function"]["name"] for t in case.tools}
    calls = [c for c in generated.calls if c.name in declared]  # a server drops calls to undeclared tools
    if len(answer.calls) != len(calls):
        findings.append(Finding("tool parser", f"the tool parser returned {len(answer.calls)} call(s) "
                                               f"{[c.name for c in answer.calls]} where the model generated "
                                               f"{len(calls)}: {[c.name for c in calls]}"))
    else:
        for i, (served, gen) in enumerate(zip(answer.calls, calls, strict=True)):
            findings += _call_findings(i, served, gen)

    model_reasoning = (generated.reasoning or "").strip()
    served_reasoning = answer.reasoning.strip()
    if model_reasoning and not served_reasoning:
        findings.append(Finding("reasoning parser", f"the server returned no reasoning where the model generated "
                                                    f"{len(model_reasoning)} characters of it: {_short(model_reasoning, 120)}"))
    elif served_reasoning != model_reasoning:
        findings.append(Finding("reasoning parser", f"the server returned the reasoning {_short(served_reasoning, 120)} "
                                                    f"where the model generated {_short(model_reasoning, 120)}"))
    if answer.content.strip() not in {c.strip() for c in generated.content_readings()}:
        layer = "tool parser" if CALL_OPEN in answer.content or CALL_OPEN in generated.content else (
            "reasoning parser" if THINK_CLOSE in answer.content or (model_reasoning and not served_reasoning)
            else "content")
        findings.append(Finding(layer, f"the server returned the content {_short(answer.content.strip())} where the "
                                       f"model generated {_short(generated.content.strip())}"))

    ids_of_calls = [c.id for c in answer.calls]
    if any(not i for i in ids_of_calls):
        findings.append(Finding("API", "a tool call has no id"))
    elif len(set(ids_of_calls)) != len(ids_of_calls):
        findings.append(Finding("API", f"tool call ids are not unique: {ids_of_calls}"))
    if answer.streamed and answer.reasoning_after_content:
        findings.append(Finding("streaming", "a reasoning delta arrived after content had started"))
    finishes = _expected_finish(case, generated, calls)
    if answer.finish_reason not in finishes:
        how = f"ended with {generated.stop}" if generated.stop else "was cut before a stop token"
        findings.append(Finding("finish_reason", f"finish_reason {answer.finish_reason!r}, but the model's output {how}: "
                                                 f"expected {' or '.join(map(repr, finishes))}"))
    ids = answer.token_ids or []
    if answer.completion_tokens is not None and ids and answer.completion_tokens != len(ids):
        findings.append(Finding("usage", f"usage says {answer.completion_tokens} completion tokens, the server returned "
                                         f"{len(ids)} token ids"))
    if answer.reasoning_tokens is not None and tag_ids and ids:
        think = _reasoning_ids(ids, tag_ids, generated)
        if think is not None and abs(answer.reasoning_tokens - think) > REASONING_TOKENS_SLACK:
            findings.append(Finding("usage", f"usage says {answer.reasoning_tokens} reasoning tokens, the think block "
                                             f"holds {think} of the generated ids"))
    if answer.streamed and tag_ids:
        findings += incremental(answer, generated, tag_ids)
    return findings


def _reasoning_ids(ids: list[int], tag_ids: dict[str, int], generated: GeneratedOutput) -> int | None:
    """How many generated ids lie in the think block (None when the model wrote none)."""
    if generated.reasoning is None:
        return None
    close = tag_ids.get(THINK_CLOSE)
    end = ids.index(close) if close in ids else len(ids)
    opening = tag_ids.get("<think>")
    start = ids.index(opening) + 1 if opening in ids[:end] else 0
    return end - start


def _chunks_holding(answer: Answer, token: int) -> list[int]:
    """The chunk number of each occurrence of ``token`` in a stream's ids."""
    return [i for i, chunk in enumerate(answer.chunk_token_ids) for t in chunk if t == token]


def incremental(answer: Answer, generated: GeneratedOutput, tag_ids: dict[str, int]) -> list[Finding]:
    """A streamed call shows its name before its arguments are complete, and a long argument arrives in
    more than one delta, wherever the model's tokens for it came over several chunks."""
    opening, closing = tag_ids.get(CALL_OPEN), tag_ids.get(CALL_CLOSE)
    if opening is None or closing is None:
        return []
    opens, closes = (_chunks_holding(answer, token) for token in (opening, closing))
    out = []
    for index, (call, first, last) in enumerate(zip(answer.calls, opens, closes, strict=False)):
        if last - first + 1 < INCREMENTAL_CHUNKS:
            continue
        events = answer.call_events.get(index)
        if events is None:
            continue
        if events.arguments_chunks and events.name_chunk is not None and call.arguments not in ("", "{}") \
                and events.name_chunk >= events.arguments_chunks[-1]:
            out.append(Finding("streaming", f"call {index} ({call.name}): the name arrived only with the end of the "
                                            f"arguments, though the model's tokens for the call came over "
                                            f"{last - first + 1} chunks"))
        longest = max((len(v) for v in generated.calls[index].raw.values()), default=0) if index < len(generated.calls) else 0
        if longest >= LONG_ARGUMENT and len(events.arguments_chunks) < 2:
            out.append(Finding("streaming", f"call {index} ({call.name}): a {longest}-character argument arrived in one "
                                            f"delta, though the model's tokens for the call came over "
                                            f"{last - first + 1} chunks: the stream is not incremental"))
    return out


def judge(case: Case, answer: Answer, text: str, family: str, tag_ids: dict[str, int] | None = None) -> list[Finding]:
    """Parse ``text`` (the answer's detokenized ids) as ``family`` and compare the answer with it."""
    generated = parse_output(text, family, thinking=case.thinking is not False, tools=case.tools,
                             parse_tools=case.tool_choice != "none")
    return compare(case, answer, generated, tag_ids=tag_ids)


def tag_token_ids(endpoint: Any) -> dict[str, int]:
    """Ids of the tags the checks locate in the stream (a tag the tokenizer splits is left out)."""
    out = {}
    for tag in ("<think>", THINK_CLOSE, CALL_OPEN, CALL_CLOSE):
        ids = endpoint.tokenize(tag, add_special_tokens=False)
        if len(ids) == 1:
            out[tag] = ids[0]
    return out

