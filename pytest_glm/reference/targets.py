"""What a GLM model writes after the prompt for a case: the training target of the reference models.

The layouts follow glm-facts §1.9: GLM-4.5/4.6 write ``\\n<think>...</think>``, a newline before content and
each call, and ``NAME\\n<arg_key>K</arg_key>\\n<arg_value>V</arg_value>\\n`` inside a call; GLM-4.7 starts
inside the think block (the prompt opened it) and writes everything compactly. Generation ends with
``<|observation|>`` after tool calls (the tool result comes next) and ``<|user|>`` after an answer.
"""

from __future__ import annotations

import json
from typing import Any

from pytest_glm.cases import Case, ExpectedCall
from pytest_glm.models import render_template


def argument_text(value: Any) -> str:
    """An argument value as GLM writes it: strings raw, everything else as the template's ``tojson``."""
    return value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)


def _call(call: ExpectedCall, family: str) -> str:
    if family == "glm45":
        pairs = "".join(f"<arg_key>{k}</arg_key>\n<arg_value>{argument_text(v)}</arg_value>\n"
                        for k, v in call.arguments.items())
        return f"\n<tool_call>{call.name}\n{pairs}</tool_call>"
    pairs = "".join(f"<arg_key>{k}</arg_key><arg_value>{argument_text(v)}</arg_value>" for k, v in call.arguments.items())
    return f"<tool_call>{call.name}{pairs}</tool_call>"


def completion(case: Case, family: str) -> str:
    """The text the reference model of ``family`` is trained to generate for ``case``, stop token included."""
    thinking = case.thinking is not False
    calls = "".join(_call(c, family) for c in case.tool_calls)
    stop = "<|observation|>" if case.tool_calls else "<|user|>"
    if family == "glm45":
        think = f"\n<think>{case.reasoning}</think>" if thinking else ""
        content = f"\n{case.content}" if case.content else ""
        return f"{think}{content}{calls}{stop}"
    think = f"{case.reasoning}</think>" if thinking else ""
    return f"{think}{case.content}{calls}{stop}"


def prompt(case: Case, template: str) -> str:
    """The prompt vLLM renders for ``case`` with ``template`` (generation prompt included)."""
    tools = list(case.tools) or None
    return render_template(template, case.template_messages(), tools=tools, add_generation_prompt=True,
                           **case.template_kwargs())
