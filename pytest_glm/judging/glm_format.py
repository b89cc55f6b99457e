"""GLM-4.x chat format facts the gate checks a deployment against (glm-facts §1.8, the worked example).

The rendered strings are what the published GLM-4.5/4.6 and GLM-4.7 chat templates produce for one
conversation (system prompt, a tool call with typed arguments, its result, the final answer), checked
there against transformers' own renderer. A deployment whose template renders something else is not
serving GLM's format.
"""

from __future__ import annotations

WEATHER = {"type": "function", "function": {
    "name": "get_weather", "description": "Get the current weather for a city.",
    "parameters": {"type": "object", "properties": {
        "city": {"type": "string", "description": "City name"},
        "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]},
        "days": {"type": "integer"}}, "required": ["city"]}}}

CALL = {"id": "c1", "type": "function",
        "function": {"name": "get_weather", "arguments": {"city": "Paris", "unit": "celsius", "days": 1}}}

WORKED = [
    {"role": "system", "content": "You are a helpful assistant."},
    {"role": "user", "content": "What is the weather in Paris?"},
    {"role": "assistant", "reasoning_content": "I should call get_weather.", "content": "", "tool_calls": [CALL]},
    {"role": "tool", "tool_call_id": "c1", "content": '{"temperature": 21, "condition": "sunny"}'},
    {"role": "assistant", "content": "It is 21 °C and sunny in Paris."},
]

RENDERED_GLM45 = "[gMASK]<sop><|system|>\n# Tools\n\nYou may call one or more functions to assist with the user query.\n\nYou are provided with function signatures within <tools></tools> XML tags:\n<tools>\n{\"type\": \"function\", \"function\": {\"name\": \"get_weather\", \"description\": \"Get the current weather for a city.\", \"parameters\": {\"type\": \"object\", \"properties\": {\"city\": {\"type\": \"string\", \"description\": \"City name\"}, \"unit\": {\"type\": \"string\", \"enum\": [\"celsius\", \"fahrenheit\"]}, \"days\": {\"type\": \"integer\"}}, \"required\": [\"city\"]}}}\n</tools>\n\nFor each function call, output the function name and arguments within the following XML format:\n<tool_call>{function-name}\n<arg_key>{arg-key-1}</arg_key>\n<arg_value>{arg-value-1}</arg_value>\n<arg_key>{arg-key-2}</arg_key>\n<arg_value>{arg-value-2}</arg_value>\n...\n</tool_call><|system|>\nYou are a helpful assistant.<|user|>\nWhat is the weather in Paris?<|assistant|>\n<think>I should call get_weather.</think>\n<tool_call>get_weather\n<arg_key>city</arg_key>\n<arg_value>Paris</arg_value>\n<arg_key>unit</arg_key>\n<arg_value>celsius</arg_value>\n<arg_key>days</arg_key>\n<arg_value>1</arg_value>\n</tool_call><|observation|>\n<tool_response>\n{\"temperature\": 21, \"condition\": \"sunny\"}\n</tool_response><|assistant|>\n<think></think>\nIt is 21 °C and sunny in Paris."
RENDERED_GLM47 = "[gMASK]<sop><|system|>\n# Tools\n\nYou may call one or more functions to assist with the user query.\n\nYou are provided with function signatures within <tools></tools> XML tags:\n<tools>\n{\"type\": \"function\", \"function\": {\"name\": \"get_weather\", \"description\": \"Get the current weather for a city.\", \"parameters\": {\"type\": \"object\", \"properties\": {\"city\": {\"type\": \"string\", \"description\": \"City name\"}, \"unit\": {\"type\": \"string\", \"enum\": [\"celsius\", \"fahrenheit\"]}, \"days\": {\"type\": \"integer\"}}, \"required\": [\"city\"]}}}\n</tools>\n\nFor each function call, output the function name and arguments within the following XML format:\n<tool_call>{function-name}<arg_key>{arg-key-1}</arg_key><arg_value>{arg-value-1}</arg_value><arg_key>{arg-key-2}</arg_key><arg_value>{arg-value-2}</arg_value>...</tool_call><|system|>You are a helpful assistant.<|user|>What is the weather in Paris?<|assistant|><think>I should call get_weather.</think><tool_call>get_weather<arg_key>city</arg_key><arg_value>Paris</arg_value><arg_key>unit</arg_key><arg_value>celsius</arg_value><arg_key>days</arg_key><arg_value>1</arg_value></tool_call><|observation|><tool_response>{\"temperature\": 21, \"condition\": \"sunny\"}</tool_response><|assistant|></think>It is 21 °C and sunny in Paris."


RENDERED = {"glm45": RENDERED_GLM45, "glm47": RENDERED_GLM47}


def next_request_prompt(family: str, thinking: bool = True) -> str:
    """The prompt for the request after the tool result (messages up to it, generation prompt added)."""
    if family == "glm45":
        head = RENDERED_GLM45[: RENDERED_GLM45.index("<|assistant|>\n<think></think>\nIt is")]
        if thinking:
            return head + "<|assistant|>"
        return head.replace("Paris?<|assistant|>", "Paris?/nothink<|assistant|>") + "<|assistant|>\n<think></think>"
    head = RENDERED_GLM47[: RENDERED_GLM47.index("<|assistant|></think>It is")]
    return head + ("<|assistant|><think>" if thinking else "<|assistant|></think>")
