"""Correctness cases: conversations and what a healthy GLM must do with them, read from ``pytest_glm/suites/data``.

One file per suite (``tool_calling.json``, ``reasoning.json``), one record per case, tools referenced by
name from ``tools.json``. A case says what to send and what a correct answer must hold: the expected calls
(argument values may be :mod:`pytest_glm.judging.matchers`, e.g. "any of", "a date-time, seconds optional"),
whether parallel calls may come in any order, and optionally what the content must contain. It holds no
wording: the reference models' own answers live in ``pytest_glm/reference/answers``.

Requests are greedy with ``top_p`` 1 sent explicitly, so server or generation-config defaults cannot
matter. Thinking-on requests get room to think (:data:`THINKING_MAX_TOKENS`, and a request timeout to
match): real GLM-4.7 reasoning runs to thousands of tokens.
"""

from __future__ import annotations

import copy
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jsonschema

from pytest_glm.exceptions import ConfigError
from pytest_glm.judging.matchers import check_matcher, sample

#: Where the shipped suites keep their data (a repository checkout).
DEFAULT_DATA_DIR = Path(__file__).resolve().parents[1] / "suites" / "data"

SUITE_FILES = ("tool_calling.json", "reasoning.json")

#: ``max_tokens`` of a request with thinking on (room for long reasoning), and with thinking off.
THINKING_MAX_TOKENS = 8192
ANSWER_MAX_TOKENS = 1024

#: Slowest decode speed a request's timeout allows for (tokens per second): 8192 tokens -> 410 s.
SLOWEST_DECODE_TOKENS_PER_S = 20.0

#: A long message written compactly: ``before`` + ``text`` x ``times`` + ``after`` (a long history).
_REPEAT = {
    "type": "object", "required": ["$repeat", "times"], "additionalProperties": False,
    "properties": {"$repeat": {"type": "string", "minLength": 1}, "times": {"type": "integer", "minimum": 1},
                   "before": {"type": "string"}, "after": {"type": "string"}},
}
_MESSAGE = {
    "type": "object",
    "required": ["role"],
    "properties": {"role": {"enum": ["system", "user", "assistant", "tool"]},
                   "content": {"anyOf": [{"type": ["string", "null"]}, {"type": "array"}, _REPEAT]}},
}
CASE_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["id", "category", "messages"],
    "additionalProperties": False,
    "properties": {
        "id": {"type": "string", "pattern": r"^[a-z0-9_.]+$"},
        "category": {"type": "string"},
        "tools": {"type": "array", "items": {"type": "string"}},
        "tool_choice": {"anyOf": [{"enum": ["auto", "required", "none"]},
                                  {"type": "object", "required": ["type", "function"]}]},
        "thinking": {"type": ["boolean", "null"]},
        "messages": {"type": "array", "minItems": 1, "items": _MESSAGE},
        "unordered": {"type": "boolean"},
        "content_matches": {"type": "object"},
        "max_tokens": {"type": "integer", "minimum": 1},
        "min_tokens": {"type": "integer", "minimum": 1},
        "tool_calls": {"type": "array", "items": {
            "type": "object", "required": ["name", "arguments"], "additionalProperties": False,
            "properties": {"name": {"type": "string"}, "arguments": {"type": "object"}}}},
    },
}


@dataclass(frozen=True)
class ExpectedCall:
    """A call a correct answer makes: its name, and per argument a value or a matcher."""

    name: str
    arguments: dict[str, Any]


@dataclass(frozen=True)
class Case:
    """One conversation and what a correct answer to it holds.

    :param thinking: None for the model's default (thinking on), False to send ``enable_thinking: false``.
    :param tool_calls: the expected calls (in order unless ``unordered``).
    :param unordered: independent parallel calls; any order is correct.
    :param content_matches: a matcher the content must satisfy (e.g. ``{"$contains": "144"}``), or None.
    :param max_tokens: the request's ``max_tokens`` (default by thinking: THINKING_MAX_TOKENS or
        ANSWER_MAX_TOKENS).
    :param min_tokens: a long-output case: an answer shorter than this many completion tokens does not
        test what the case is for, and is inconclusive rather than judged.
    """

    id: str
    suite: str
    category: str
    messages: tuple[dict[str, Any], ...]
    tools: tuple[dict[str, Any], ...] = ()
    tool_choice: str | dict[str, Any] | None = None
    thinking: bool | None = None
    tool_calls: tuple[ExpectedCall, ...] = field(default=())
    unordered: bool = False
    content_matches: dict[str, Any] | None = None
    max_tokens: int | None = None
    min_tokens: int | None = None

    @property
    def expects_call(self) -> bool:
        return bool(self.tool_calls)

    @property
    def named_tool_choice(self) -> bool:
        """A specific function was forced; OpenAI's API then ends with finish_reason 'stop'."""
        return isinstance(self.tool_choice, dict)

    @property
    def call_finishes(self) -> tuple[str, ...]:
        """The finish reasons of an answer that calls a tool: ``tool_calls``, or also ``stop`` for a named
        ``tool_choice`` (OpenAI's API ends a forced call with "stop", some servers with "tool_calls")."""
        return ("tool_calls", "stop") if self.named_tool_choice else ("tool_calls",)

    def tool_schema(self, name: str) -> dict[str, Any] | None:
        for tool in self.tools:
            if tool["function"]["name"] == name:
                return tool["function"].get("parameters")
        return None

    def template_kwargs(self) -> dict[str, Any]:
        return {} if self.thinking is None else {"enable_thinking": self.thinking}

    @property
    def request_max_tokens(self) -> int:
        if self.max_tokens is not None:
            return self.max_tokens
        return ANSWER_MAX_TOKENS if self.thinking is False else THINKING_MAX_TOKENS

    def request_timeout(self, floor: float) -> float:
        """Seconds this case's request may take: ``floor`` (the endpoint's), or more when its
        ``max_tokens`` needs it at the slowest decode speed allowed for."""
        return max(floor, self.request_max_tokens / SLOWEST_DECODE_TOKENS_PER_S)

    def request(self, model: str, **overrides: Any) -> dict[str, Any]:
        """Keyword arguments for ``client.chat.completions.create``: greedy (``temperature`` 0 and
        ``top_p`` 1, both explicit), as the case was written."""
        messages = copy.deepcopy(list(self.messages))
        for msg in messages:  # vLLM renamed reasoning_content to reasoning; send both so every version sees it
            if msg.get("role") == "assistant" and isinstance(msg.get("reasoning"), str):
                msg.setdefault("reasoning_content", msg["reasoning"])
        kwargs: dict[str, Any] = {"model": model, "messages": messages, "temperature": 0, "top_p": 1,
                                  "max_tokens": self.request_max_tokens}
        if self.tools:
            kwargs["tools"] = copy.deepcopy(list(self.tools))
        if self.tool_choice is not None:
            kwargs["tool_choice"] = self.tool_choice
        # The generated ids (vLLM's return_token_ids), which the faithfulness checks read.
        kwargs["extra_body"] = {"return_token_ids": True}
        if self.thinking is not None:
            kwargs["extra_body"]["chat_template_kwargs"] = self.template_kwargs()
        kwargs.update(overrides)
        return kwargs

    def template_messages(self) -> list[dict[str, Any]]:
        """The messages as vLLM hands them to the chat template: tool-call arguments parsed into dicts,
        reasoning under both of its names."""
        out = []
        for msg in copy.deepcopy(list(self.messages)):
            for call in msg.get("tool_calls") or []:
                args = call["function"]["arguments"]
                if isinstance(args, str):
                    call["function"]["arguments"] = json.loads(args)
            if msg.get("role") == "assistant" and isinstance(msg.get("reasoning"), str):
                msg["reasoning_content"] = msg["reasoning"]
            out.append(msg)
        return out


def _expanded(messages: list[dict[str, Any]]) -> tuple[dict[str, Any], ...]:
    """The messages with every ``$repeat`` content written out."""
    out = []
    for msg in messages:
        content = msg.get("content")
        if isinstance(content, dict):
            content = content.get("before", "") + content["$repeat"] * content["times"] + content.get("after", "")
            msg = {**msg, "content": content}
        out.append(msg)
    return tuple(out)


def load_tools(data_dir: Path) -> dict[str, dict[str, Any]]:
    path = data_dir / "tools.json"
    try:
        tools = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise ConfigError(str(path), f"cannot read the tool catalogue: {exc}") from exc
    for name, tool in tools.items():
        if tool.get("type") != "function" or tool.get("function", {}).get("name") != name:
            raise ConfigError(str(path), f"tool {name!r} must be {{'type': 'function', 'function': {{'name': {name!r}, ...}}}}")
    return tools


def load_cases(data_dir: Path = DEFAULT_DATA_DIR, suites: tuple[str, ...] = SUITE_FILES) -> list[Case]:
    """Every case of the given suite files, validated; an invalid record names its file and id."""
    tools = load_tools(data_dir)
    cases: list[Case] = []
    seen: set[str] = set()
    for filename in suites:
        path = data_dir / filename
        try:
            records = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError) as exc:
            raise ConfigError(str(path), f"cannot read cases: {exc}") from exc
        for i, record in enumerate(records):
            where = f"{path} case {record.get('id', i)!r}"
            try:
                jsonschema.validate(record, CASE_SCHEMA)
            except jsonschema.ValidationError as exc:
                raise ConfigError(where, f"invalid: {exc.message} at {'/'.join(map(str, exc.absolute_path))}") from exc
            if record["id"] in seen:
                raise ConfigError(where, "duplicate case id")
            seen.add(record["id"])
            missing = [t for t in record.get("tools", []) if t not in tools]
            if missing:
                raise ConfigError(where, f"unknown tools {missing}; tools.json has {sorted(tools)}")
            case_tools = tuple(tools[t] for t in record.get("tools", []))
            calls = tuple(ExpectedCall(c["name"], c["arguments"]) for c in record.get("tool_calls", []))
            try:
                for call in calls:
                    check_matcher(call.arguments, f"{call.name} arguments")
                if "content_matches" in record:
                    check_matcher(record["content_matches"], "content_matches")
            except ValueError as exc:
                raise ConfigError(where, str(exc)) from exc
            for call in calls:
                schema = next((t["function"]["parameters"] for t in case_tools if t["function"]["name"] == call.name), None)
                if schema is None:
                    raise ConfigError(where, f"expects a call to {call.name!r}, which is not among its tools")
                try:
                    jsonschema.validate(sample(call.arguments), schema)
                except jsonschema.ValidationError as exc:
                    raise ConfigError(where, f"expected arguments of {call.name} break its schema: {exc.message}") from exc
            cases.append(Case(
                id=record["id"], suite=filename.removesuffix(".json"), category=record["category"],
                messages=_expanded(record["messages"]), tools=case_tools, tool_choice=record.get("tool_choice"),
                thinking=record.get("thinking"), tool_calls=calls, unordered=record.get("unordered", False),
                content_matches=record.get("content_matches"), max_tokens=record.get("max_tokens"),
                min_tokens=record.get("min_tokens"),
            ))
    return cases
