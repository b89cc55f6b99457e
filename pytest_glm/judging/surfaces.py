"""The correctness cases through the two other API surfaces GLM agents use: ``/v1/responses`` (Codex-style
clients) and ``/v1/messages`` (Anthropic-style clients), judged exactly against the chat answer.

vLLM serves both on the same engine, chat template and parsers as chat completions, so the same greedy
request renders the same prompt and generates the same tokens. The chat answer is the oracle: the
faithfulness checks verify it against the model's own token ids. A surface must say what it says: the same
calls in the same order (names exact, argument values equal by :func:`~pytest_glm.judging.matchers.same_json`),
the same reasoning and content up to edge whitespace, the same way of ending and the same number of
generated tokens. Streamed, the stream must also be whole: it ends with its completion event, every item
(block) it announces is completed, nothing comes after the completion, and the deltas reassemble to the
items the stream itself says are done.

Real GLM serving bugs this catches: a responses stream that stopped after its first output item, and a
named ``tool_choice`` that emitted no call on one surface while chat did.

How a case is sent, and what on vLLM 0.32 legitimately differs from chat (each handled here, not failed):

- tools are sent with exactly the chat tool's keys: vLLM renders every key of the tool into the prompt
  (a Responses client's ``"strict": false`` renders as ``strict: false``, where chat rendered nothing, and
  the model then answers a different prompt);
- thinking off is each surface's own switch, not ``chat_template_kwargs``: ``reasoning.effort: "none"``
  on responses, ``thinking: {"type": "disabled"}`` on messages (vLLM maps both onto ``enable_thinking``);
- the messages API returns a call's arguments as a parsed object (``input``), not the model's JSON text, so
  only their values can be compared there; streamed, ``input_json_delta`` carries the text;
- named ``tool_choice`` ends a chat answer with ``finish_reason`` "stop"; responses has only a status
  ("completed", or "incomplete" at ``max_output_tokens``), messages says ``tool_use``: the chat finish is
  compared as what it means (stop, a call, or cut at the token limit).
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest

from pytest_glm.judging.answers import Answer, Call
from pytest_glm.judging.cases import Case
from pytest_glm.judging.chat import rejection
from pytest_glm.judging.faithfulness import Finding
from pytest_glm.judging.matchers import same_json

SURFACES = ("responses", "messages")
ROUTES = {"responses": "/v1/responses", "messages": "/v1/messages"}
LAYERS = {"responses": "responses API", "messages": "messages API"}

#: The events that end a stream: a Responses stream ends with one of its terminal ``response.*`` events, a
#: Messages stream with ``message_stop``.
RESPONSES_TERMINAL = ("response.completed", "response.incomplete", "response.failed")
MESSAGES_TERMINAL = ("message_stop",)

#: HTTP statuses that mean "this route is not served here" (not: "this request is wrong").
UNSERVED_STATUSES = (404, 405, 501)


# -- requests ----------------------------------------------------------------------------------------------


def _text(content: Any) -> str:
    """A chat message's content as text (a list of parts: its text parts, joined, as the template does)."""
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    return "".join(p.get("text", "") for p in content if isinstance(p, dict) and p.get("type") == "text")


def _leading_system(case: Case) -> tuple[str | None, list[dict[str, Any]]]:
    messages = list(case.messages)
    if messages and messages[0]["role"] == "system":
        return _text(messages[0].get("content")), messages[1:]
    return None, messages


def _named(case: Case) -> str | None:
    """The function a named ``tool_choice`` forces, or None."""
    return case.tool_choice["function"]["name"] if isinstance(case.tool_choice, dict) else None


def responses_request(case: Case, model: str) -> dict[str, Any]:
    """The body of a ``POST /v1/responses`` for ``case``, as a Codex-style client writes it: a leading system
    message as ``instructions``; an earlier assistant turn as a ``reasoning`` item, a ``message`` item and one
    ``function_call`` item per call (vLLM folds them back into one assistant message), a tool result as a
    ``function_call_output``; flat tools; greedy, not stored."""
    instructions, messages = _leading_system(case)
    items: list[dict[str, Any]] = []
    for msg in messages:
        role = msg["role"]
        if role == "assistant":
            if isinstance(msg.get("reasoning"), str) and msg["reasoning"]:
                items.append({"type": "reasoning", "summary": [],
                              "content": [{"type": "reasoning_text", "text": msg["reasoning"]}]})
            if _text(msg.get("content")):
                items.append({"type": "message", "role": "assistant", "status": "completed",
                              "content": [{"type": "output_text", "text": _text(msg["content"]), "annotations": []}]})
            for call in msg.get("tool_calls") or []:
                args = call["function"]["arguments"]
                items.append({"type": "function_call", "call_id": call["id"], "name": call["function"]["name"],
                              "arguments": args if isinstance(args, str) else json.dumps(args, ensure_ascii=False)})
        elif role == "tool":
            items.append({"type": "function_call_output", "call_id": msg.get("tool_call_id", ""),
                          "output": _text(msg.get("content"))})
        else:
            items.append({"type": "message", "role": role, "content": _text(msg.get("content"))})
    body: dict[str, Any] = {"model": model, "input": items, "temperature": 0, "top_p": 1,
                            "max_output_tokens": case.request_max_tokens, "store": False}
    if instructions is not None:
        body["instructions"] = instructions
    if case.tools:
        # exactly the chat tool's keys: vLLM renders each key into the prompt (see the module docstring)
        body["tools"] = [{"type": "function", **t["function"]} for t in case.tools]
    if case.tool_choice is not None:
        name = _named(case)
        body["tool_choice"] = {"type": "function", "name": name} if name else case.tool_choice
    if case.thinking is False:
        body["reasoning"] = {"effort": "none"}
    return body


def messages_request(case: Case, model: str) -> dict[str, Any]:
    """The body of a ``POST /v1/messages`` for ``case``, as an Anthropic-style client writes it: a leading
    system message as ``system``; an earlier assistant turn as ``thinking``, ``text`` and ``tool_use`` blocks;
    tool results as ``tool_result`` blocks of one user message (with the user text that follows them);
    tools with ``input_schema``; greedy."""
    system, messages = _leading_system(case)
    out: list[dict[str, Any]] = []
    for msg in messages:
        role = msg["role"]
        if role == "assistant":
            blocks: list[dict[str, Any]] = []
            if isinstance(msg.get("reasoning"), str) and msg["reasoning"]:
                blocks.append({"type": "thinking", "thinking": msg["reasoning"], "signature": ""})
            if _text(msg.get("content")):
                blocks.append({"type": "text", "text": _text(msg["content"])})
            for call in msg.get("tool_calls") or []:
                args = call["function"]["arguments"]
                blocks.append({"type": "tool_use", "id": call["id"], "name": call["function"]["name"],
                               "input": json.loads(args) if isinstance(args, str) and args.strip() else args or {}})
            out.append({"role": "assistant", "content": blocks or ""})
            continue
        if role == "tool":
            block: dict[str, Any] = {"type": "tool_result", "tool_use_id": msg.get("tool_call_id", ""),
                                     "content": _text(msg.get("content"))}
        elif role == "user":
            block = {"type": "text", "text": _text(msg.get("content"))}
        else:  # a system message inside the conversation: vLLM takes it as it is
            out.append({"role": role, "content": _text(msg.get("content"))})
            continue
        last = out[-1] if out else None
        if last is not None and last["role"] == "user" and isinstance(last["content"], list) \
                and last["content"][-1]["type"] == "tool_result":
            last["content"].append(block)  # results of one turn, and the user text after them: one message
        elif role == "user":
            out.append({"role": "user", "content": block["text"]})
        else:
            out.append({"role": "user", "content": [block]})
    body: dict[str, Any] = {"model": model, "messages": out, "max_tokens": case.request_max_tokens,
                            "temperature": 0, "top_p": 1}
    if system is not None:
        body["system"] = system
    if case.tools:
        body["tools"] = [{"name": f["name"], "input_schema": f.get("parameters") or {"type": "object"},
                          **{k: f[k] for k in ("description", "strict") if k in f}}
                         for f in (t["function"] for t in case.tools)]
    if case.tool_choice is not None:
        name = _named(case)
        body["tool_choice"] = ({"type": "tool", "name": name} if name else
                               {"type": {"auto": "auto", "required": "any", "none": "none"}[str(case.tool_choice)]})
    if case.thinking is False:
        body["thinking"] = {"type": "disabled"}
    return body


REQUESTS = {"responses": responses_request, "messages": messages_request}


# -- answers -----------------------------------------------------------------------------------------------


@dataclass
class StreamFacts:
    """What only a stream shows: its events, whether it ended properly, what it announced and completed, and
    where its own accounts of an item disagree (the deltas against the item's done event or the final
    response)."""

    events: list[str] = field(default_factory=list)
    completed: bool = False  # ended with its completion event
    announced: list[str] = field(default_factory=list)  # items (blocks) opened, in order
    done: list[str] = field(default_factory=list)  # items (blocks) closed
    after_completion: list[str] = field(default_factory=list)  # events that came after the completion event
    errors: list[str] = field(default_factory=list)  # error events, a failed response
    mismatches: list[str] = field(default_factory=list)


@dataclass
class SurfaceAnswer:
    """One surface's answer, reduced to the project's :class:`Answer`, with what the surface said as itself
    (the responses ``status``, the messages ``stop_reason``) and, streamed, the stream's facts."""

    surface: str
    answer: Answer
    status: str | None = None
    stream: StreamFacts | None = None

    def brief(self) -> str:
        text = f"{self.surface}: {self.answer.brief()} status={self.status!r}"
        if self.stream is not None:
            text += f" events={len(self.stream.events)} completed={self.stream.completed}"
        return text


def _responses_finish(status: str | None, incomplete: Any, calls: list[Call]) -> str | None:
    if status == "incomplete":
        reason = incomplete.get("reason") if isinstance(incomplete, dict) else None
        return "length" if reason in (None, "max_output_tokens") else str(reason)
    if status == "completed":
        return "tool_calls" if calls else "stop"
    return status


def _item_text(item: dict[str, Any], part_type: str) -> str:
    return "".join(p.get("text") or "" for p in item.get("content") or [] if p.get("type") == part_type)


def from_responses(body: dict[str, Any], *, streamed: bool = False) -> SurfaceAnswer:
    """A non-streamed Responses object (or the one a stream's completion event carries)."""
    answer = Answer(streamed=streamed)
    reasoning: list[str] = []
    content: list[str] = []
    for item in body.get("output") or []:
        kind = item.get("type")
        if kind == "reasoning":
            reasoning.append(_item_text(item, "reasoning_text")
                             or "".join(s.get("text") or "" for s in item.get("summary") or []))
        elif kind == "message":
            content.append(_item_text(item, "output_text"))
        elif kind == "function_call":
            answer.calls.append(Call(item.get("call_id"), item.get("name") or "", item.get("arguments") or ""))
    answer.reasoning, answer.content = "".join(reasoning), "".join(content)
    status = body.get("status")
    answer.finish_reason = _responses_finish(status, body.get("incomplete_details"), answer.calls)
    usage = body.get("usage") or {}
    answer.completion_tokens = usage.get("output_tokens")
    answer.reasoning_tokens = (usage.get("output_tokens_details") or {}).get("reasoning_tokens")
    return SurfaceAnswer("responses", answer, status=status)


_STOP_REASONS = {"end_turn": "stop", "stop_sequence": "stop", "tool_use": "tool_calls", "max_tokens": "length"}


def from_messages(body: dict[str, Any]) -> SurfaceAnswer:
    """A non-streamed Messages object. Its calls' arguments are objects; they are written back as JSON text
    (values compare; the model's own spelling is not there to compare)."""
    answer = Answer()
    for block in body.get("content") or []:
        kind = block.get("type")
        if kind == "thinking":
            answer.reasoning += block.get("thinking") or ""
        elif kind == "text":
            answer.content += block.get("text") or ""
        elif kind == "tool_use":
            answer.calls.append(Call(block.get("id"), block.get("name") or "",
                                     json.dumps(block.get("input") or {}, ensure_ascii=False)))
    stop = body.get("stop_reason")
    answer.finish_reason = _STOP_REASONS.get(str(stop), stop)
    answer.completion_tokens = (body.get("usage") or {}).get("output_tokens")
    return SurfaceAnswer("messages", answer, status=stop)


@dataclass
class _Item:
    kind: str
    key: str
    name: str = ""
    call_id: str | None = None
    parts: list[str] = field(default_factory=list)
    start_input: Any = None
    closed: bool = False

    @property
    def text(self) -> str:
        return "".join(self.parts)


#: A Responses stream's delta events (-> the kind of item they feed) and done events (-> their text field).
_RESPONSES_DELTAS = {"response.reasoning_text.delta": "reasoning", "response.reasoning_summary_text.delta": "reasoning",
                     "response.output_text.delta": "message", "response.function_call_arguments.delta": "function_call"}
_RESPONSES_DONES = {"response.reasoning_text.done": "text", "response.output_text.done": "text",
                    "response.function_call_arguments.done": "arguments"}
#: A Messages stream's delta types -> their text field.
_MESSAGES_DELTAS = {"thinking_delta": "thinking", "text_delta": "text", "input_json_delta": "partial_json"}


class ResponsesStream:
    """Feed a Responses stream's events in order (``add(type, data)``); :meth:`result` gives the answer the
    deltas make, and the stream's facts."""

    def __init__(self) -> None:
        self.facts = StreamFacts()
        self.items: dict[int, _Item] = {}
        self.final: SurfaceAnswer | None = None
        self._by_id: dict[str, int] = {}

    def _item(self, data: dict[str, Any], event: str) -> _Item | None:
        index = data.get("output_index")
        if index is None and data.get("item_id") in self._by_id:
            index = self._by_id[data["item_id"]]
        item = self.items.get(index) if isinstance(index, int) else None
        if item is None:
            self.facts.mismatches.append(f"{event} for output item {index} ({data.get('item_id')}), which was never "
                                         f"announced (response.output_item.added)")
        return item

    def add(self, event: str, data: dict[str, Any]) -> None:
        facts = self.facts
        kind = data.get("type", event) if isinstance(data, dict) else event
        facts.events.append(kind)
        if facts.completed:
            facts.after_completion.append(kind)
            return
        if kind == "error":
            facts.errors.append(str(data.get("message") or data.get("error") or data))
        elif kind == "response.output_item.added":
            self._added(data)
        elif kind in _RESPONSES_DELTAS:
            item = self._item(data, kind)
            if item is not None:
                if item.closed:
                    facts.mismatches.append(f"{kind} for output item {item.key} after its response.output_item.done")
                item.parts.append(data.get("delta") or "")
        elif kind in _RESPONSES_DONES:
            item = self._item(data, kind)
            said = data.get(_RESPONSES_DONES[kind])
            if item is not None and isinstance(said, str) and said != item.text:
                facts.mismatches.append(f"the deltas of output item {item.key} ({item.kind}) reassemble to "
                                        f"{_short(item.text)}, its {kind} says {_short(said)}")
        elif kind == "response.output_item.done":
            self._done(data)
        elif kind in RESPONSES_TERMINAL:
            facts.completed = True
            response = data.get("response") or {}
            if kind == "response.failed" or response.get("status") == "failed":
                facts.errors.append(f"the response failed: {response.get('error')}")
            self.final = from_responses(response, streamed=True)

    def _added(self, data: dict[str, Any]) -> None:
        index, item = data.get("output_index"), data.get("item") or {}
        key = f"{index} ({item.get('id')})"
        if not isinstance(index, int) or index in self.items:
            self.facts.mismatches.append(f"output item {key} announced twice, or without an index")
            return
        self.items[index] = _Item(item.get("type") or "", key, item.get("name") or "", item.get("call_id"))
        if item.get("id"):
            self._by_id[item["id"]] = index
        self.facts.announced.append(key)

    def _done(self, data: dict[str, Any]) -> None:
        item_data = data.get("item") or {}
        item = self._item({"output_index": data.get("output_index"), "item_id": item_data.get("id")},
                          "response.output_item.done")
        if item is None:
            return
        if item.closed:
            self.facts.mismatches.append(f"output item {item.key} completed twice")
        item.closed = True
        self.facts.done.append(item.key)
        said = {"reasoning": lambda: _item_text(item_data, "reasoning_text"),
                "message": lambda: _item_text(item_data, "output_text"),
                "function_call": lambda: item_data.get("arguments") or ""}.get(item.kind, lambda: item.text)()
        if said != item.text and not (item.kind == "reasoning" and not item.parts):
            self.facts.mismatches.append(f"the deltas of output item {item.key} ({item.kind}) reassemble to "
                                         f"{_short(item.text)}, its response.output_item.done says {_short(said)}")
        if item.kind == "function_call" and (item_data.get("name") or item.name) != item.name:
            self.facts.mismatches.append(f"output item {item.key} was announced as {item.name!r} and completed as "
                                         f"{item_data.get('name')!r}")

    def result(self) -> SurfaceAnswer:
        answer = Answer(streamed=True, chunks=len(self.facts.events))
        for _, item in sorted(self.items.items()):
            if item.kind == "reasoning":
                answer.reasoning += item.text
            elif item.kind == "message":
                answer.content += item.text
            elif item.kind == "function_call":
                answer.calls.append(Call(item.call_id, item.name, item.text))
        status = None
        if self.final is not None:
            status = self.final.status
            answer.finish_reason = _responses_finish(status, None, answer.calls) if status != "incomplete" \
                else self.final.answer.finish_reason
            answer.completion_tokens = self.final.answer.completion_tokens
            answer.reasoning_tokens = self.final.answer.reasoning_tokens
            for diff in answer_differences(self.final.answer, answer, "the completed response"):
                self.facts.mismatches.append(f"the deltas say {diff}")
        return SurfaceAnswer("responses", answer, status=status, stream=self.facts)


class MessagesStream:
    """Feed a Messages stream's events in order (``add(type, data)``); :meth:`result` gives the answer its
    blocks make, and the stream's facts."""

    def __init__(self) -> None:
        self.facts = StreamFacts()
        self.blocks: dict[int, _Item] = {}
        self.stop_reason: str | None = None
        self.output_tokens: int | None = None

    def add(self, event: str, data: dict[str, Any]) -> None:
        facts = self.facts
        kind = data.get("type", event) if isinstance(data, dict) else event
        facts.events.append(kind)
        if facts.completed:
            facts.after_completion.append(kind)
            return
        index = data.get("index")
        if kind == "error":
            facts.errors.append(str((data.get("error") or {}).get("message") or data))
        elif kind == "content_block_start":
            block = data.get("content_block") or {}
            if not isinstance(index, int) or index in self.blocks:
                facts.mismatches.append(f"content block {index} started twice, or without an index")
                return
            key = f"{index} ({block.get('type')})"
            self.blocks[index] = _Item(block.get("type") or "", key, block.get("name") or "", block.get("id"),
                                       start_input=block.get("input"))
            facts.announced.append(key)
        elif kind == "content_block_delta":
            delta = data.get("delta") or {}
            block = self.blocks.get(index) if isinstance(index, int) else None
            if block is None:
                facts.mismatches.append(f"a {delta.get('type')} for content block {index}, which was never started")
            elif block.closed:
                facts.mismatches.append(f"a {delta.get('type')} for content block {block.key} after its "
                                        f"content_block_stop")
            elif delta.get("type") in _MESSAGES_DELTAS:
                block.parts.append(delta.get(_MESSAGES_DELTAS[delta["type"]]) or "")
        elif kind == "content_block_stop":
            block = self.blocks.get(index) if isinstance(index, int) else None
            if block is None or block.closed:
                facts.mismatches.append(f"content_block_stop for content block {index}, which was not open")
                return
            block.closed = True
            facts.done.append(block.key)
        elif kind == "message_delta":
            self.stop_reason = (data.get("delta") or {}).get("stop_reason") or self.stop_reason
            self.output_tokens = (data.get("usage") or {}).get("output_tokens", self.output_tokens)
        elif kind in MESSAGES_TERMINAL:
            facts.completed = True

    def result(self) -> SurfaceAnswer:
        answer = Answer(streamed=True, chunks=len(self.facts.events))
        for _, block in sorted(self.blocks.items()):
            if block.kind == "thinking":
                answer.reasoning += block.text
            elif block.kind == "text":
                answer.content += block.text
            elif block.kind == "tool_use":
                arguments = block.text if block.parts else json.dumps(block.start_input or {}, ensure_ascii=False)
                answer.calls.append(Call(block.call_id, block.name, arguments))
        if self.facts.events and self.facts.events[0] != "message_start":
            self.facts.mismatches.append(f"the stream began with {self.facts.events[0]}, not message_start")
        answer.finish_reason = _STOP_REASONS.get(self.stop_reason or "", self.stop_reason)
        answer.completion_tokens = self.output_tokens
        return SurfaceAnswer("messages", answer, status=self.stop_reason, stream=self.facts)


STREAMS: dict[str, type[ResponsesStream] | type[MessagesStream]] = {"responses": ResponsesStream,
                                                                   "messages": MessagesStream}


def reduce_stream(surface: str, events: Iterable[tuple[str, Any]]) -> SurfaceAnswer:
    """The answer and facts of a recorded stream: ``(event name, parsed data)`` pairs in order."""
    stream = STREAMS[surface]()
    for name, data in events:
        stream.add(name, data if isinstance(data, dict) else {"type": name, "raw": data})
    return stream.result()


# -- the wire ----------------------------------------------------------------------------------------------


def sse_events(lines: Iterable[str]) -> Iterator[tuple[str, Any]]:
    """Server-sent events from a stream's lines: ``(event name, parsed JSON data)``; a data line that is no
    JSON comes as its text, the ``[DONE]`` sentinel of OpenAI-style streams is dropped."""
    name, data = "", list[str]()
    for line in itertools.chain(lines, [""]):  # lazily: a live stream is read as it comes
        if not line:
            if data:
                text = "\n".join(data)
                if text.strip() != "[DONE]":
                    try:
                        parsed: Any = json.loads(text)
                    except ValueError:
                        parsed = text
                    yield name or (parsed.get("type", "") if isinstance(parsed, dict) else ""), parsed
            name, data = "", list[str]()
        elif line.startswith("event:"):
            name = line[6:].strip()
        elif line.startswith("data:"):
            data.append(line[5:].removeprefix(" "))


class SurfaceError(Exception):
    """A surface rejected a request: its HTTP status and body (read like an OpenAI SDK error by
    :func:`~pytest_glm.judging.chat.rejection`)."""

    def __init__(self, status_code: int, body: Any) -> None:
        self.status_code, self.body = status_code, body
        super().__init__(f"HTTP {status_code}: {body}")

    @property
    def unserved(self) -> bool:
        """The route is not served (as opposed to this request being refused): a 405 or 501, or a 404 that
        names no API error (a missing route says ``{"detail": "Not Found"}``)."""
        if self.status_code not in UNSERVED_STATUSES:
            return False
        body = self.body
        named = isinstance(body, dict) and isinstance(body.get("error"), dict) and body["error"].get("message")
        return self.status_code != 404 or not named


def _body(resp: httpx.Response) -> Any:
    try:
        return resp.json()
    except ValueError:
        return resp.text


def ask_surface(endpoint: Any, surface: str, case: Case, *, stream: bool, client: httpx.Client | None = None,
                **overrides: Any) -> SurfaceAnswer:
    """One greedy request for ``case`` through ``surface``, with the case's timeout; raises
    :class:`SurfaceError` when the server refuses it."""
    body = {**REQUESTS[surface](case, endpoint.model), **overrides}
    if stream:
        body["stream"] = True
    headers = {"Authorization": f"Bearer {endpoint.api_key}"} if endpoint.api_key else {}
    if surface == "messages" and endpoint.api_key:  # vLLM reads the bearer token; Anthropic gateways this one
        headers["x-api-key"] = endpoint.api_key
    timeout = httpx.Timeout(case.request_timeout(float(endpoint.request_timeout)))
    own = client is None
    http = client or httpx.Client()
    url = endpoint.base_url + ROUTES[surface]
    try:
        if not stream:
            resp = http.post(url, json=body, headers=headers, timeout=timeout)
            if resp.status_code != 200:
                raise SurfaceError(resp.status_code, _body(resp))
            data = resp.json()
            return from_responses(data) if surface == "responses" else from_messages(data)
        with http.stream("POST", url, json=body, headers=headers, timeout=timeout) as resp:
            if resp.status_code != 200:
                resp.read()
                raise SurfaceError(resp.status_code, _body(resp))
            return reduce_stream(surface, sse_events(resp.iter_lines()))
    finally:
        if own:
            http.close()


# -- the comparison ----------------------------------------------------------------------------------------


def _short(value: Any, limit: int = 120) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _parsed(arguments: str) -> Any:
    return json.loads(arguments) if arguments.strip() else {}


def _ending(answer: Answer) -> str:
    """What an answer's finish means, in chat's words: ``length`` (cut at the token limit), ``tool_calls``
    (it ends with a call; chat says "stop" for a named tool_choice) or ``stop``."""
    if answer.finish_reason in ("stop", "tool_calls"):
        return "tool_calls" if answer.calls else "stop"
    return str(answer.finish_reason)


def answer_differences(expected: Answer, actual: Answer, reference: str = "chat") -> list[str]:
    """How ``actual`` says something else than ``expected`` (what ``reference`` returned): calls (count, order,
    names, argument values by :func:`same_json`), reasoning and content (up to edge whitespace)."""
    out = []
    names = [[c.name for c in a.calls] for a in (expected, actual)]
    if names[0] != names[1]:
        out.append(f"{len(actual.calls)} call(s) {names[1]} where {reference} returned {len(expected.calls)}: {names[0]}")
    else:
        for i, (want, got) in enumerate(zip(expected.calls, actual.calls, strict=True)):
            try:
                got_args = _parsed(got.arguments)
            except ValueError as exc:
                out.append(f"call {i} ({got.name}): the arguments are not JSON ({exc}): {_short(got.arguments)}")
                continue
            try:
                want_args = _parsed(want.arguments)
            except ValueError:
                want_args = want.arguments
            if not same_json(want_args, got_args):
                out.append(f"call {i} ({got.name}): the arguments {_short(got_args)} where {reference} returned "
                           f"{_short(want_args)}")
    for part in ("reasoning", "content"):
        want_text, got_text = getattr(expected, part).strip(), getattr(actual, part).strip()
        if want_text != got_text:
            out.append(f"the {part} {_short(got_text)} where {reference} returned {_short(want_text)}"
                       if got_text else f"no {part} where {reference} returned {len(want_text)} characters of it: "
                                        f"{_short(want_text)}")
    return out


def surface_findings(case: Case, chat: Answer, surface: SurfaceAnswer) -> list[Finding]:
    """Every way the surface's answer differs from the (token-verified) chat answer to the same greedy
    request, and, streamed, every way the stream is not whole. Each finding names its layer."""
    layer = LAYERS[surface.surface] + (" (stream)" if surface.stream is not None else "")
    answer = surface.answer
    found = [Finding(layer, d) for d in answer_differences(chat, answer)]
    if (case.named_tool_choice or case.tool_choice == "required") and not answer.calls:
        forced = f"tool_choice {_named(case) or 'required'}"
        found.append(Finding(layer, f"{forced} forces a call, and the {surface.surface} API returned none"))
    name = _named(case)
    if name and any(c.name != name for c in answer.calls):
        found.append(Finding(layer, f"tool_choice names {name!r}, the {surface.surface} API called "
                                    f"{[c.name for c in answer.calls]}"))
    ids = [c.id for c in answer.calls]
    if any(not i for i in ids):
        found.append(Finding(layer, "a call has no id (call_id / tool_use id)"))
    elif len(set(ids)) != len(ids):
        found.append(Finding(layer, f"call ids are not unique: {ids}"))
    facts = surface.stream
    if facts is None or facts.completed:  # a cut stream has no ending to compare
        ending = _ending(chat)
        if answer.finish_reason != ending:
            said = "status" if surface.surface == "responses" else "stop_reason"
            found.append(Finding(layer, f"ends as {answer.finish_reason!r} ({said} {surface.status!r}) where chat "
                                        f"ended as {ending!r} (finish_reason {chat.finish_reason!r})"))
        if chat.completion_tokens is not None and answer.completion_tokens is not None \
                and chat.completion_tokens != answer.completion_tokens:
            found.append(Finding(layer, f"usage says {answer.completion_tokens} output tokens where chat generated "
                                        f"{chat.completion_tokens} for the same greedy request"))
    if facts is not None:
        found += _stream_findings(layer, surface.surface, facts)
    return found


def _stream_findings(layer: str, surface: str, facts: StreamFacts) -> list[Finding]:
    terminal = " or ".join(RESPONSES_TERMINAL[:2] if surface == "responses" else MESSAGES_TERMINAL)
    out = [Finding(layer, f"error event: {e}") for e in facts.errors]
    if not facts.completed:
        last = facts.events[-1] if facts.events else "nothing"
        out.append(Finding(layer, f"the stream ended without {terminal}, after {len(facts.events)} event(s) "
                                  f"(the last: {last}; items announced {len(facts.announced)}, completed "
                                  f"{len(facts.done)})"))
    open_items = [k for k in facts.announced if k not in facts.done]
    if open_items:
        what = "output item(s)" if surface == "responses" else "content block(s)"
        out.append(Finding(layer, f"{what} {', '.join(open_items)} announced and never completed"))
    if facts.after_completion:
        out.append(Finding(layer, f"{len(facts.after_completion)} event(s) after the completion event: "
                                  f"{', '.join(facts.after_completion[:4])}"))
    out += [Finding(layer, m) for m in facts.mismatches]
    return out


# -- one run's answers -------------------------------------------------------------------------------------


@dataclass
class SurfaceVerdict:
    """The judgement of one surface answer: its findings, or why it cannot be judged (None: it can)."""

    answer: SurfaceAnswer | None
    findings: list[Finding] = field(default_factory=list)
    inconclusive: str | None = None
    failed: str | None = None  # the request itself failed: why


class SurfaceAnswers:
    """Ask each (surface, case, streamed) once per run and judge it against the chat answer. A surface whose
    route the endpoint does not serve is found out by its first request and skipped from then on."""

    def __init__(self, endpoint: Any, deployment: Any = None, http: httpx.Client | None = None) -> None:
        self.endpoint = endpoint
        self.deployment = deployment
        self.unserved: dict[str, str] = {}
        self._answers: dict[tuple[str, str, bool], SurfaceAnswer | str] = {}
        self._http = http or httpx.Client()

    def ask(self, surface: str, case: Case, stream: bool) -> SurfaceAnswer | str:
        """The cached answer, or why the request failed (a surface found unserved is not asked again)."""
        if surface in self.unserved:
            return self.unserved[surface]
        key = (surface, case.id, stream)
        if key not in self._answers:
            try:
                self._answers[key] = ask_surface(self.endpoint, surface, case, stream=stream, client=self._http)
            except SurfaceError as exc:
                if exc.unserved:
                    self.unserved[surface] = (f"the endpoint does not serve the {LAYERS[surface]} (POST "
                                              f"{ROUTES[surface]}: HTTP {exc.status_code})")
                    return self.unserved[surface]
                self._answers[key] = f"{LAYERS[surface]}: {rejection(exc, self.deployment)}"
            except httpx.HTTPError as exc:
                self._answers[key] = f"{LAYERS[surface]}: the request failed: {type(exc).__name__}: {exc}"
        return self._answers[key]

    def get(self, surface: str, case: Case, stream: bool) -> SurfaceAnswer:
        """The cached answer; skips the test for an unserved surface, fails it for a refused request."""
        answer = self.ask(surface, case, stream)
        if surface in self.unserved:
            pytest.skip(self.unserved[surface])
        if isinstance(answer, str):
            pytest.fail(f"case {case.id}: {answer}", pytrace=False)
        return answer

    def judge(self, surface: str, case: Case, stream: bool, chat: Any) -> SurfaceVerdict:
        """Compare with the non-streamed chat answer of ``chat`` (an :class:`AnswerCache`). That answer is
        the oracle only while it is what the model generated: one the faithfulness checks found wrong
        (a known vLLM defect included) leaves the surface's answer inconclusive here; the chat suites
        report it."""
        answer = self.ask(surface, case, stream)
        if surface in self.unserved:
            return SurfaceVerdict(None, inconclusive=self.unserved[surface])
        if isinstance(answer, str):
            return SurfaceVerdict(None, failed=answer)
        wrong = [str(f) for f in chat.findings(case, False) or []] + chat.known(case, False)
        if wrong:
            return SurfaceVerdict(answer, inconclusive="the chat answer it is compared with is not what the model "
                                                       "generated (test_tool_calling / test_reasoning report it): "
                                                       + "; ".join(wrong))
        return SurfaceVerdict(answer, surface_findings(case, chat.get(case, False), answer))

    def close(self) -> None:
        self._http.close()
