"""What a GLM model generated, parsed from its own output text: the oracle of the faithfulness checks.

Written from the GLM-4.x output format (glm-facts §1.3-§1.9), independently of any server's parser:

- **Reasoning.** GLM-4.7 answers inside the think block its prompt opened (``<|assistant|><think>``), so
  its output runs ``reasoning</think>answer``. GLM-4.5/4.6 open it themselves: ``\\n<think>reasoning</think>``,
  and may leave it empty or out (dynamic thinking). With thinking off the prompt already closed it, and
  everything generated is the answer.
- **Tool calls.** ``<tool_call>NAME<arg_key>K</arg_key><arg_value>V</arg_value>...</tool_call>``, with
  newlines after the name and each tag in GLM-4.5's layout and none in GLM-4.7's; both are read either way.
  A string argument is written raw; any other value as JSON. The request's tool schema says which: a
  value of a declared non-string type is read as JSON, of a declared string type as its raw text, and of
  an undeclared type it stays ambiguous (both readings are faithful).
- **Stop.** Generation ends with ``<|observation|>`` (a tool result comes next), ``<|user|>`` or
  ``<|endoftext|>``; output without one was cut (``max_tokens``).
- **Content** is what remains outside the think block and the calls.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any

STOP_TOKENS = ("<|observation|>", "<|user|>", "<|endoftext|>")
THINK_OPEN, THINK_CLOSE = "<think>", "</think>"
CALL_OPEN, CALL_CLOSE = "<tool_call>", "</tool_call>"
_PAIR = re.compile(r"<arg_key>(.*?)</arg_key>\s*<arg_value>(.*?)</arg_value>", re.DOTALL)


@dataclass(frozen=True)
class GeneratedCall:
    """One call as the model wrote it.

    :param arguments: each value read by the tool's schema (see the module docstring).
    :param raw: each value's text exactly as generated.
    :param ambiguous: keys whose type the schema leaves open: the raw text and its JSON reading are both
        faithful renderings.
    """

    name: str
    arguments: dict[str, Any]
    raw: dict[str, str]
    ambiguous: frozenset[str] = frozenset()


@dataclass
class GeneratedOutput:
    """The model's output, split the way GLM's format defines it.

    :param reasoning: the think block's text, or None when the model wrote none (thinking off, or a
        GLM-4.5/4.6 answer that skipped it).
    :param stop: the stop token that ended generation, or None when it was cut.
    :param thinking_closed: the think block was closed (False: the output ended inside the reasoning).
    :param malformed: markup that does not follow the format (an unclosed call, a pair without a value).
    """

    reasoning: str | None
    content: str
    calls: list[GeneratedCall] = field(default_factory=list)
    stop: str | None = None
    thinking_closed: bool = True
    malformed: list[str] = field(default_factory=list)
    unclosed_call: str | None = None  # the text of a call never closed, at the end of the content

    def content_readings(self) -> tuple[str, ...]:
        """The content a faithful server may return: as generated, or without an unclosed call's text
        (vLLM drops it, others keep it)."""
        if self.unclosed_call is None:
            return (self.content,)
        return (self.content, self.content[: len(self.content) - len(self.unclosed_call)])

    @property
    def thought(self) -> bool:
        """The model wrote a non-empty think body."""
        return bool(self.reasoning and self.reasoning.strip())


def _declared_types(schema: dict[str, Any] | None, key: str) -> list[str] | None:
    """The JSON types the tool's schema declares for argument ``key`` (None: not declared, or open)."""
    prop = ((schema or {}).get("properties") or {}).get(key)
    types = _schema_types(prop, schema or {}, depth=0)
    return sorted(types) if types else None


_ALL_TYPES = frozenset(("string", "number", "integer", "boolean", "null", "array", "object"))


def _schema_types(node: Any, root: dict[str, Any], depth: int) -> set[str] | None:
    """The types a (sub)schema allows, as clients write them: ``type`` (a name or a list), ``enum`` and
    ``const`` values, ``anyOf``/``oneOf``/``allOf`` branches (Pydantic's ``Optional``), local ``$ref`` into
    ``$defs``/``definitions`` (Pydantic and Zod nested models), OpenAPI's ``nullable``. None: any type
    (no ``type``, e.g. a parameter with only a description, or a reference this cannot follow)."""
    if not isinstance(node, dict) or depth > 16:
        return None
    ref = node.get("$ref")
    if isinstance(ref, str):
        return _schema_types(_resolve(ref, root), root, depth + 1)
    found: set[str] | None = None
    kind = node.get("type")
    if isinstance(kind, str):
        found = {kind}
    elif isinstance(kind, list) and all(isinstance(k, str) for k in kind):
        found = set(kind)
    values = node["enum"] if isinstance(node.get("enum"), list) else [node["const"]] if "const" in node else None
    if found is None and values:
        found = {_json_kind(v) for v in values}
    for combinator in ("anyOf", "oneOf"):
        branches = node.get(combinator)
        if isinstance(branches, list) and branches:
            kinds = [_schema_types(b, root, depth + 1) for b in branches]
            if any(k is None for k in kinds):
                return None  # one branch allows anything
            union = set().union(*kinds)  # type: ignore[arg-type]
            found = union if found is None else found & union
    for branch in node.get("allOf") or []:
        narrowed = _schema_types(branch, root, depth + 1)
        if narrowed is not None:
            found = narrowed if found is None else found & narrowed
    if found is not None and node.get("nullable") is True:
        found.add("null")
    return found & _ALL_TYPES if found is not None else None


def _resolve(ref: str, root: dict[str, Any]) -> Any:
    """A local JSON pointer (``#/$defs/Name``) into the tool's parameters; None when it leads nowhere."""
    if not ref.startswith("#"):
        return None
    node: Any = root
    for part in ref[1:].split("/")[1:] if ref != "#" else []:
        part = part.replace("~1", "/").replace("~0", "~")
        if not isinstance(node, dict) or part not in node:
            return None
        node = node[part]
    return node


def _json_kind(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "number"
    if isinstance(value, str):
        return "string"
    return "array" if isinstance(value, list) else "object"


def _fits(value: Any, types: list[str]) -> bool:
    kind = _json_kind(value)
    return kind in types or (kind == "integer" and "number" in types) or (
        kind == "number" and "integer" in types and float(value).is_integer())


def read_value(raw: str, types: list[str] | None) -> tuple[Any, bool]:
    """(the value GLM meant by ``raw``, whether it is ambiguous) for an argument of these declared types."""
    try:
        as_json: Any = json.loads(raw)
        parsed = True
    except ValueError:
        as_json, parsed = raw, False
    if types is None:
        return (as_json if parsed else raw), parsed
    if types == ["string"]:
        return raw, False
    others = [t for t in types if t != "string"]
    if parsed and _fits(as_json, others):
        return as_json, "string" in types
    lenient = _lenient(raw)
    if lenient is not _NOT_A_VALUE and _fits(lenient, others):
        return lenient, True  # e.g. Python's True for a boolean: a server may coerce it or keep the text
    return raw, False


_NOT_A_VALUE = object()


def _lenient(raw: str) -> Any:
    """What a forgiving reader makes of a value that is not JSON: Python's literals, zero-padded numbers."""
    text = raw.strip()
    if text in ("True", "False", "None"):
        return {"True": True, "False": False, "None": None}[text]
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            continue
    return _NOT_A_VALUE


def call_name(body: str) -> str:
    """The function name a ``<tool_call>`` body starts with (up to its first argument)."""
    first = body.find("<arg_key>")
    return (body if first < 0 else body[:first]).strip()


def parse_call(body: str, schema: dict[str, Any] | None) -> tuple[GeneratedCall, list[str]]:
    """One ``<tool_call>`` body (the text between the tags)."""
    first = body.find("<arg_key>")
    name = call_name(body)
    malformed = []
    args: dict[str, Any] = {}
    raw: dict[str, str] = {}
    ambiguous = set()
    rest = body[len(body) if first < 0 else first:]
    end = 0
    for match in _PAIR.finditer(rest):
        if rest[end:match.start()].strip():
            malformed.append(f"text between argument pairs of {name}: {rest[end:match.start()][:80]!r}")
        end = match.end()
        key, value = match.group(1).strip(), match.group(2)
        if key in raw:
            malformed.append(f"{name} repeats argument {key!r}")
        raw[key] = value
        args[key], unclear = read_value(value, _declared_types(schema, key))
        if unclear:
            ambiguous.add(key)
    if rest[end:].strip():
        malformed.append(f"unparsed text in the call to {name}: {rest[end:][:80]!r}")
    return GeneratedCall(name, args, raw, frozenset(ambiguous)), malformed


def parse_output(text: str, family: str, *, thinking: bool, tools: list[dict[str, Any]] | tuple[dict[str, Any], ...] = (),
                 parse_tools: bool = True) -> GeneratedOutput:
    """Split ``text`` (the detokenized generated ids, special tokens kept) as GLM's format defines it.

    :param family: ``glm45`` (GLM-4.5/4.5-Air/4.6) or ``glm47`` (GLM-4.7/4.7-Flash).
    :param thinking: the request left thinking on (the template's default).
    :param tools: the request's tools, whose schemas type the argument values.
    :param parse_tools: False when the request's ``tool_choice`` was ``none`` (no call is parsed then).
    """
    stop = next((s for s in STOP_TOKENS if text.endswith(s)), None)
    body = text[: len(text) - len(stop)] if stop else text
    reasoning: str | None = None
    closed = True
    if thinking:
        start: int | None = 0  # GLM-4.7: the prompt opened the think block
        at = body.find(THINK_OPEN)
        if at >= 0 and not body[:at].strip():
            start = at + len(THINK_OPEN)  # GLM-4.5/4.6 open it themselves (GLM-4.7 may repeat it)
        elif family != "glm47":
            start = None
        if start is not None:
            end = body.find(THINK_CLOSE, start)
            first_call = body.find(CALL_OPEN, start) if parse_tools and tools else -1
            if end < 0 and first_call >= 0:
                # A call ends the reasoning the model never closed (GLM does this; servers read it so).
                reasoning, body = body[start:first_call], body[first_call:]
            elif end < 0:
                reasoning, body, closed = body[start:], "", False
            else:
                reasoning, body = body[start:end], body[end + len(THINK_CLOSE):]
    out = GeneratedOutput(reasoning, "", stop=stop, thinking_closed=closed)
    if not parse_tools or not tools:
        out.content = body
        return out
    schemas = {t["function"]["name"]: t["function"].get("parameters") for t in tools}
    content: list[str] = []
    pos = 0
    while True:
        at = body.find(CALL_OPEN, pos)
        if at < 0:
            content.append(body[pos:])
            break
        content.append(body[pos:at])
        end = body.find(CALL_CLOSE, at)
        if end < 0:  # cut inside a call: no call; servers keep its text as content, or drop it
            out.malformed.append(f"a tool call is not closed: {body[at:at + 80]!r}")
            out.unclosed_call = body[at:]
            content.append(body[at:])
            break
        inner = body[at + len(CALL_OPEN):end]
        call, problems = parse_call(inner, schemas.get(call_name(inner)))
        out.calls.append(call)
        out.malformed += problems
        pos = end + len(CALL_CLOSE)
    out.content = "".join(content)
    return out
