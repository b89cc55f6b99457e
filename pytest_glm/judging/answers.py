"""A chat completion reduced to what the correctness suites judge, from a response or from a stream.

Streaming is reassembled the way a client does it: tool-call deltas by ``index`` (id and name from the
first fragment that carries them, arguments concatenated), content and reasoning concatenated. Whether
every reasoning delta came before the first content delta is recorded, since a client that renders the
stream depends on it. The server may name reasoning ``reasoning`` (vLLM >= 0.2x) or
``reasoning_content`` (older vLLM); both are read.

The generated token ids (``return_token_ids``) are kept with the answer, and for a stream each chunk's
own ids and the chunks at which each call's name and argument fragments arrived: the faithfulness checks
compare the answer with what those ids say, and the stream's timing with where the ids came.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Call:
    id: str | None
    name: str
    arguments: str  # the JSON text the server sent

    def parsed(self) -> Any:
        """The arguments as JSON (raises ValueError when they are not valid JSON)."""
        return json.loads(self.arguments) if self.arguments.strip() else {}


@dataclass
class CallEvents:
    """Where one streamed call's pieces arrived: chunk numbers of its name and its argument fragments."""

    name_chunk: int | None = None
    arguments_chunks: list[int] = field(default_factory=list)


@dataclass
class Answer:
    content: str = ""
    reasoning: str = ""
    calls: list[Call] = field(default_factory=list)
    finish_reason: str | None = None
    completion_tokens: int | None = None
    reasoning_tokens: int | None = None
    streamed: bool = False
    reasoning_after_content: bool = False  # a reasoning delta arrived after non-blank content
    chunks: int = 0
    token_ids: list[int] | None = None  # what the model generated (None: the server did not say)
    chunk_token_ids: list[list[int]] = field(default_factory=list)  # streamed: each chunk's ids
    call_events: dict[int, CallEvents] = field(default_factory=dict)  # streamed: per call index

    def brief(self) -> str:
        """A few readable lines for a failure message."""
        calls = "; ".join(f"{c.name}({c.arguments})" for c in self.calls) or "none"
        return (f"finish_reason={self.finish_reason!r} calls=[{calls}] content={self.content[:200]!r} "
                f"reasoning={self.reasoning[:120]!r}")


def _extra(obj: Any, name: str) -> Any:
    """A field of an OpenAI object, declared or not (vLLM's extras land in ``model_extra``)."""
    value = getattr(obj, name, None)
    if value is None and isinstance(getattr(obj, "model_extra", None), dict):
        value = obj.model_extra.get(name)
    return value


def _reasoning_of(obj: Any) -> str:
    for name in ("reasoning", "reasoning_content"):
        value = _extra(obj, name)
        if isinstance(value, str) and value:
            return value
    return ""


def _usage(answer: Answer, usage: Any) -> None:
    if usage is None:
        return
    answer.completion_tokens = getattr(usage, "completion_tokens", None)
    details = getattr(usage, "completion_tokens_details", None)
    answer.reasoning_tokens = getattr(details, "reasoning_tokens", None) if details is not None else None


def from_response(resp: Any) -> Answer:
    """An answer from a non-streamed ``ChatCompletion``."""
    choice = resp.choices[0]
    msg = choice.message
    answer = Answer(content=msg.content or "", reasoning=_reasoning_of(msg), finish_reason=choice.finish_reason)
    ids = _extra(choice, "token_ids")
    answer.token_ids = list(ids) if isinstance(ids, list) else None
    for call in msg.tool_calls or []:
        answer.calls.append(Call(call.id, call.function.name, call.function.arguments or ""))
    _usage(answer, resp.usage)
    return answer


class StreamAssembler:
    """Feed ``ChatCompletionChunk`` objects in order; :meth:`answer` gives the reassembled answer."""

    def __init__(self) -> None:
        self._answer = Answer(streamed=True)
        self._content: list[str] = []
        self._reasoning: list[str] = []
        self._calls: dict[int, dict[str, Any]] = {}
        self._content_started = False  # non-blank content has arrived

    def add(self, chunk: Any) -> None:
        number = self._answer.chunks
        self._answer.chunks += 1
        if getattr(chunk, "usage", None) is not None:
            _usage(self._answer, chunk.usage)
        chunk_ids: list[int] = []
        self._answer.chunk_token_ids.append(chunk_ids)  # one entry per chunk, so indices are chunk numbers
        for choice in chunk.choices or []:
            ids = _extra(choice, "token_ids")
            if isinstance(ids, list):
                chunk_ids += ids
                if self._answer.token_ids is None:
                    self._answer.token_ids = []
                self._answer.token_ids += ids
            delta = choice.delta
            reasoning = _reasoning_of(delta)
            if reasoning:
                if self._content_started:
                    self._answer.reasoning_after_content = True
                self._reasoning.append(reasoning)
            if delta.content:
                self._content.append(delta.content)
                self._content_started = self._content_started or bool(delta.content.strip())
            for tc in delta.tool_calls or []:
                slot = self._calls.setdefault(tc.index, {"id": None, "name": "", "arguments": ""})
                events = self._answer.call_events.setdefault(tc.index, CallEvents())
                if tc.id and not slot["id"]:
                    slot["id"] = tc.id
                if tc.function is not None:
                    if tc.function.name:
                        slot["name"] += tc.function.name
                        if events.name_chunk is None:
                            events.name_chunk = number
                    if tc.function.arguments:
                        slot["arguments"] += tc.function.arguments
                        events.arguments_chunks.append(number)
            if choice.finish_reason:
                self._answer.finish_reason = choice.finish_reason

    def answer(self) -> Answer:
        answer = self._answer
        answer.content = "".join(self._content)
        answer.reasoning = "".join(self._reasoning)
        answer.calls = [Call(s["id"], s["name"], s["arguments"]) for _, s in sorted(self._calls.items())]
        return answer
