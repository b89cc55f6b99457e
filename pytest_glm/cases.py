"""Correctness cases: conversations with the answer a GLM model should give, read from ``suites/data``.

One file per suite (``tool_calling.json``, ``reasoning.json``), one record per case, tools referenced by
name from ``tools.json``. The same records drive the suites (what to send, what to check) and the
reference models' training (what to answer), so a new case is one retrain away.
"""

from __future__ import annotations

import copy
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jsonschema

from pytest_glm.exceptions import ConfigError

#: Where the shipped suites keep their data (a repository checkout).
DEFAULT_DATA_DIR = Path(__file__).resolve().parents[1] / "suites" / "data"

SUITE_FILES = ("tool_calling.json", "reasoning.json")

_MESSAGE = {
    "type": "object",
    "required": ["role"],
    "properties": {"role": {"enum": ["system", "user", "assistant", "tool"]}},
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
        "reasoning": {"type": "string"},
        "content": {"type": "string"},
        "tool_calls": {"type": "array", "items": {
            "type": "object", "required": ["name", "arguments"], "additionalProperties": False,
            "properties": {"name": {"type": "string"}, "arguments": {"type": "object"}}}},
    },
}


@dataclass(frozen=True)
class ExpectedCall:
    name: str
    arguments: dict[str, Any]


@dataclass(frozen=True)
class Case:
    """One conversation and its expected answer.

    :param thinking: None for the model's default (thinking on), False to send ``enable_thinking: false``.
    :param reasoning: what the reference model thinks (thinking on); real models think their own thoughts.
    :param content: the expected final text ('' when the answer is tool calls only).
    :param tool_calls: the expected calls, in order.
    """

    id: str
    suite: str
    category: str
    messages: tuple[dict[str, Any], ...]
    tools: tuple[dict[str, Any], ...] = ()
    tool_choice: str | dict[str, Any] | None = None
    thinking: bool | None = None
    reasoning: str = ""
    content: str = ""
    tool_calls: tuple[ExpectedCall, ...] = field(default=())

    @property
    def expects_call(self) -> bool:
        return bool(self.tool_calls)

    @property
    def named_tool_choice(self) -> bool:
        """A specific function was forced; OpenAI's API then ends with finish_reason 'stop'."""
        return isinstance(self.tool_choice, dict)

    def tool_schema(self, name: str) -> dict[str, Any] | None:
        for tool in self.tools:
            if tool["function"]["name"] == name:
                return tool["function"].get("parameters")
        return None

    def template_kwargs(self) -> dict[str, Any]:
        return {} if self.thinking is None else {"enable_thinking": self.thinking}

    def request(self, model: str, **overrides: Any) -> dict[str, Any]:
        """Keyword arguments for ``client.chat.completions.create``: greedy, as the case was written."""
        messages = copy.deepcopy(list(self.messages))
        for msg in messages:  # vLLM renamed reasoning_content to reasoning; send both so every version sees it
            if msg.get("role") == "assistant" and isinstance(msg.get("reasoning"), str):
                msg.setdefault("reasoning_content", msg["reasoning"])
        kwargs: dict[str, Any] = {"model": model, "messages": messages, "temperature": 0, "max_tokens": 1024}
        if self.tools:
            kwargs["tools"] = copy.deepcopy(list(self.tools))
        if self.tool_choice is not None:
            kwargs["tool_choice"] = self.tool_choice
        if self.thinking is not None:
            kwargs["extra_body"] = {"chat_template_kwargs": self.template_kwargs()}
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


def load_tools(data_dir: Path) -> dict[str, dict[str, Any]]:
    path = data_dir / "tools.json"
    try:
        tools = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise ConfigError(str(path), f"cannot read the tool catalogue: {exc}") from None
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
            raise ConfigError(str(path), f"cannot read cases: {exc}") from None
        for i, record in enumerate(records):
            where = f"{path} case {record.get('id', i)!r}"
            try:
                jsonschema.validate(record, CASE_SCHEMA)
            except jsonschema.ValidationError as exc:
                raise ConfigError(where, f"invalid: {exc.message} at {'/'.join(map(str, exc.absolute_path))}") from None
            if record["id"] in seen:
                raise ConfigError(where, "duplicate case id")
            seen.add(record["id"])
            missing = [t for t in record.get("tools", []) if t not in tools]
            if missing:
                raise ConfigError(where, f"unknown tools {missing}; tools.json has {sorted(tools)}")
            case_tools = tuple(tools[t] for t in record.get("tools", []))
            calls = tuple(ExpectedCall(c["name"], c["arguments"]) for c in record.get("tool_calls", []))
            for call in calls:
                schema = next((t["function"]["parameters"] for t in case_tools if t["function"]["name"] == call.name), None)
                if schema is None:
                    raise ConfigError(where, f"expects a call to {call.name!r}, which is not among its tools")
                try:
                    jsonschema.validate(call.arguments, schema)
                except jsonschema.ValidationError as exc:
                    raise ConfigError(where, f"expected arguments of {call.name} break its schema: {exc.message}") from None
            cases.append(Case(
                id=record["id"], suite=filename.removesuffix(".json"), category=record["category"],
                messages=tuple(record["messages"]), tools=case_tools, tool_choice=record.get("tool_choice"),
                thinking=record.get("thinking"), reasoning=record.get("reasoning", ""),
                content=record.get("content", ""), tool_calls=calls,
            ))
    return cases
