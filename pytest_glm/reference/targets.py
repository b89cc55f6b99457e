"""What a reference model writes after the prompt for a case: its training target.

The answers (reasoning, content, calls) live in a data file per model (``answers/<model>.json``), apart
from the cases, which hold what a healthy model must do rather than one way of doing it. ``glm-tiny`` and
``glm-tiny-47`` share ``answers/glm-tiny.json``; ``glm-tiny-variant`` answers the same cases differently
but correctly, as a real GLM plausibly would.

The layouts follow glm-facts §1.9: GLM-4.5/4.6 write ``\\n<think>...</think>``, a newline before content and
each call, and ``NAME\\n<arg_key>K</arg_key>\\n<arg_value>V</arg_value>\\n`` inside a call; GLM-4.7 starts
inside the think block (the prompt opened it) and writes everything compactly. Generation ends with
``<|observation|>`` after tool calls (the tool result comes next) and ``<|user|>`` after an answer. An empty
reasoning with thinking on is GLM-4.5's dynamic thinking: ``\\n<think></think>``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import jsonschema

from pytest_glm.catalog.models import render_template
from pytest_glm.exceptions import ConfigError
from pytest_glm.judging.cases import Case


@dataclass(frozen=True)
class TrainedCall:
    name: str
    arguments: dict[str, Any]


@dataclass(frozen=True)
class TrainedAnswer:
    """One answer a reference model is trained to give."""

    reasoning: str = ""
    content: str = ""
    tool_calls: tuple[TrainedCall, ...] = ()


def default_answers_file(model: str = "glm-tiny") -> Path:
    name = "glm-tiny" if model == "glm-tiny-47" else model
    return Path(str(resources.files("pytest_glm.reference").joinpath("answers", f"{name}.json")))


def load_answers(path: Path, cases: list[Case]) -> dict[str, TrainedAnswer]:
    """Every case's answer from ``path``; an answer missing, extra, or breaking its case's tools is named."""
    try:
        records = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise ConfigError(str(path), f"cannot read the answers: {exc}") from exc
    by_id = {c.id: c for c in cases}
    missing = [i for i in by_id if i not in records]
    extra = [i for i in records if i not in by_id]
    if missing or extra:
        raise ConfigError(str(path), f"answers must cover exactly the cases: missing {missing}, unknown {extra}")
    out = {}
    for case_id, record in records.items():
        case = by_id[case_id]
        calls = tuple(TrainedCall(c["name"], c["arguments"]) for c in record.get("tool_calls", []))
        for call in calls:
            schema = case.tool_schema(call.name)
            if schema is None:
                raise ConfigError(str(path), f"{case_id}: calls {call.name!r}, which is not among the case's tools")
            try:
                jsonschema.validate(call.arguments, schema)
            except jsonschema.ValidationError as exc:
                raise ConfigError(str(path), f"{case_id}: arguments of {call.name} break its schema: {exc.message}") from exc
        out[case_id] = TrainedAnswer(record.get("reasoning", ""), record.get("content", ""), calls)
    return out


def argument_text(value: Any) -> str:
    """An argument value as GLM writes it: strings raw, everything else as the template's ``tojson``."""
    return value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)


def _call(call: TrainedCall, family: str) -> str:
    if family == "glm45":
        pairs = "".join(f"<arg_key>{k}</arg_key>\n<arg_value>{argument_text(v)}</arg_value>\n"
                        for k, v in call.arguments.items())
        return f"\n<tool_call>{call.name}\n{pairs}</tool_call>"
    pairs = "".join(f"<arg_key>{k}</arg_key><arg_value>{argument_text(v)}</arg_value>" for k, v in call.arguments.items())
    return f"<tool_call>{call.name}{pairs}</tool_call>"


def completion(case: Case, answer: TrainedAnswer, family: str) -> str:
    """The text a reference model of ``family`` is trained to generate for ``case``, stop token included."""
    thinking = case.thinking is not False
    calls = "".join(_call(c, family) for c in answer.tool_calls)
    stop = "<|observation|>" if answer.tool_calls else "<|user|>"
    if family == "glm45":
        think = f"\n<think>{answer.reasoning}</think>" if thinking else ""
        content = f"\n{answer.content}" if answer.content else ""
        return f"{think}{content}{calls}{stop}"
    think = f"{answer.reasoning}</think>" if thinking else ""
    return f"{think}{answer.content}{calls}{stop}"


def prompt(case: Case, template: str) -> str:
    """The prompt vLLM renders for ``case`` with ``template`` (generation prompt included)."""
    tools = list(case.tools) or None
    return render_template(template, case.template_messages(), tools=tools, add_generation_prompt=True,
                           **case.template_kwargs())
