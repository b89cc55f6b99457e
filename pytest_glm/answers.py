"""A chat completion reduced to what the correctness suites judge, from a response or from a stream.

Streaming is reassembled the way a client does it: tool-call deltas by ``index`` (id and name from the
first fragment that carries them, arguments concatenated), content and reasoning concatenated. Whether
every reasoning delta came before the first content delta is recorded, since a client that renders the
stream depends on it. The server may name reasoning ``reasoning`` (vLLM >= 0.2x) or
``reasoning_content`` (older vLLM); both are read.
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
class Answer:
    content: str = ""
    reasoning: str = ""
    calls: list[Call] = field(default_factory=list)
    finish_reason: str | None = None
    completion_tokens: int | None = None
    reasoning_tokens: int | None = None
    streamed: bool = False
    reasoning_after_content: bool = False  # a reasoning delta arrived after the first content delta
    chunks: int = 0

    def brief(self) -> str:
        """A few readable lines for a failure message."""
        calls = "; ".join(f"{c.name}({c.arguments})" for c in self.calls) or "none"
        return (f"finish_reason={self.finish_reason!r} calls=[{calls}] content={self.content[:200]!r} "
                f"reasoning={self.reasoning[:120]!r}")


def _reasoning_of(obj: Any) -> str:
    for name in ("reasoning", "reasoning_content"):
        value = getattr(obj, name, None)
        if value is None and isinstance(getattr(obj, "model_extra", None), dict):
            value = obj.model_extra.get(name)
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

    def add(self, chunk: Any) -> None:
        self._answer.chunks += 1
        if getattr(chunk, "usage", None) is not None:
            _usage(self._answer, chunk.usage)
        for choice in chunk.choices or []:
            delta = choice.delta
            reasoning = _reasoning_of(delta)
            if reasoning:
                if self._content:
                    self._answer.reasoning_after_content = True
                self._reasoning.append(reasoning)
            if delta.content:
                self._content.append(delta.content)
            for tc in delta.tool_calls or []:
                slot = self._calls.setdefault(tc.index, {"id": None, "name": "", "arguments": ""})
                if tc.id and not slot["id"]:
                    slot["id"] = tc.id
                if tc.function is not None:
                    if tc.function.name:
                        slot["name"] += tc.function.name
                    if tc.function.arguments:
                        slot["arguments"] += tc.function.arguments
            if choice.finish_reason:
                self._answer.finish_reason = choice.finish_reason

    def answer(self) -> Answer:
        answer = self._answer
        answer.content = "".join(self._content)
        answer.reasoning = "".join(self._reasoning)
        answer.calls = [Call(s["id"], s["name"], s["arguments"]) for _, s in sorted(self._calls.items())]
        return answer
