"""The answers of the correctness cases, asked once per run, and their two verdicts.

The per-case tests, the aggregate gates and the load comparison judge the same responses. Each answer
gets two verdicts of different kinds (docs/checks.md):

- *served faithfully* (exact): the server's tool calls, reasoning and content equal this project's own
  parse of the token ids the model generated (:mod:`pytest_glm.judging.faithfulness`);
- *behaves* (tolerant): the model did what the case asks, judged with matchers and counted as rates
  (:mod:`pytest_glm.judging.verdicts`).
"""

from __future__ import annotations

import dataclasses
import json
from typing import Any

import openai
import pytest

from pytest_glm.catalog.versions import known_defect, served_defects
from pytest_glm.judging import faithfulness
from pytest_glm.judging.answers import Answer
from pytest_glm.judging.cases import Case
from pytest_glm.judging.chat import ask, ask_concurrently, rejection
from pytest_glm.judging.verdicts import Verdict, explain, judge, leaked_markup, stream_differences, unchecked_serving


class AnswerCache:
    """Ask each (case, streamed) once per run; later tests read the cached answer and its verdicts."""

    def __init__(self, endpoint: Any, deployment: Any = None, *, known_defects_fail: bool = False,
                 capabilities: Any = None) -> None:
        self.endpoint = endpoint
        self.deployment = deployment
        self.capabilities = capabilities  # serving.capabilities.Capabilities, or None (nothing refused)
        self._prompt_tokens: dict[str, int] = {}
        self.family = getattr(getattr(deployment, "model", None), "family", None)
        self.known_defects_fail = known_defects_fail
        self._client = endpoint.client()
        self._answers: dict[tuple[str, bool], Answer] = {}
        self._findings: dict[tuple[str, bool], list[faithfulness.Finding] | None] = {}
        self._verdicts: dict[tuple[str, bool, bool], Verdict] = {}
        self._served_defects: dict[tuple[str, bool], str | None] = {}
        self._tags: dict[str, int] | None = None

    def get(self, case: Case, stream: bool) -> Answer:
        key = (case.id, stream)
        if key not in self._answers:
            gap = self.cannot_ask(case)
            if gap is not None:
                self.capabilities.refuse(*gap)
            try:
                self._answers[key] = ask(self._client, case, self.endpoint.model, stream=stream)
            except (openai.APIStatusError, openai.APIError) as exc:
                pytest.fail(f"case {case.id}: {rejection(exc, self.deployment)}", pytrace=False)
        return self._answers[key]

    def cannot_ask(self, case: Case) -> tuple[str, str] | None:
        """(gap, reason) when the deployment lacks what ``case`` needs: context for its prompt and
        ``max_tokens``, a tool-call parser for its tools, a reasoning parser for thinking on; else None."""
        caps = self.capabilities
        if caps is None:
            return None
        if case.tools and case.tool_choice in (None, "auto") and (why := caps.tool_parser_problem()):
            return "tool parser", why
        if case.thinking is not False and (why := caps.reasoning_parser_problem()):
            return "reasoning parser", why
        served = caps.served_context()
        if served and self.request_tokens(case, at_most=served) > served:
            need = self.request_tokens(case)
            return "context", (f"case {case.id} needs {need} tokens of context ({need - case.request_max_tokens} of "
                               f"prompt + max_tokens {case.request_max_tokens}), but the server serves "
                               f"max_model_len {served}: launch it with a longer --max-model-len "
                               f"(--glm-max-model-len), at least what preflight names")
        return None

    def askable(self, cases: list[Case]) -> list[Case]:
        """The cases this deployment can be asked (the others are refused once, by their own tests)."""
        return [c for c in cases if self.cannot_ask(c) is None]

    def request_tokens(self, case: Case, at_most: int | None = None) -> int:
        """Prompt tokens (the server's own rendering) plus ``max_tokens``; with ``at_most``, an upper bound
        (the text's length in characters) is returned when it already fits, saving the /tokenize call."""
        if case.id not in self._prompt_tokens:
            request = case.request(self.endpoint.model)
            bound = len(json.dumps([request["messages"], request.get("tools")], ensure_ascii=False)) + 64
            if at_most is not None and bound + case.request_max_tokens <= at_most:
                return bound + case.request_max_tokens
            self._prompt_tokens[case.id] = len(self.endpoint.tokenize(
                messages=request["messages"], tools=request.get("tools"), add_generation_prompt=True,
                chat_template_kwargs=case.template_kwargs() or None))
        return self._prompt_tokens[case.id] + case.request_max_tokens

    def tag_ids(self) -> dict[str, int]:
        if self._tags is None:
            self._tags = faithfulness.tag_token_ids(self.endpoint)
        return self._tags

    def findings_of(self, case: Case, answer: Answer) -> list[faithfulness.Finding] | None:
        """How ``answer`` differs from what its token ids say (None: the server sent no ids)."""
        if answer.token_ids is None or self.family is None:
            return None
        text = self.endpoint.detokenize(answer.token_ids)
        return faithfulness.judge(case, answer, text, self.family, self.tag_ids())

    def findings(self, case: Case, stream: bool) -> list[faithfulness.Finding] | None:
        """The findings of the cached answer, known defects of the served vLLM left out (:meth:`known`)."""
        key = (case.id, stream)
        if key not in self._findings:
            self._findings[key] = self.findings_of(case, self.get(case, stream))
        return self.unexcused(case, self._findings[key])

    def unexcused(self, case: Case, findings: list[faithfulness.Finding] | None) -> list[faithfulness.Finding] | None:
        """``findings`` without those a known defect of the served vLLM explains."""
        return None if findings is None else [f for f in findings if self._excused(case, str(f)) is None]

    def known(self, case: Case, stream: bool) -> list[str]:
        """The findings of the cached answer that a known defect of the served vLLM explains, each with it.
        An answer without token ids has no findings: its behaviour problems are listed when a known defect's
        served signature explains them all (:meth:`_served_defect`), saying so."""
        if self.findings(case, stream) is None:
            note = self._served_defect(case, stream)
            return [] if note is None else [
                f"{p} [known defect of vLLM {self._version()}, recognised without token ids by what was served: "
                f"{note}]" for p in self.verdict(case, stream).problems]
        return [f"{f} [known defect of vLLM {self._version()}: {note}]" for f in self._findings[(case.id, stream)] or []
                if (note := self._excused(case, str(f))) is not None]

    def _version(self) -> str:
        return str(getattr(self.deployment, "vllm_version", "") or "")

    def _build(self) -> str | None:
        return getattr(getattr(self.deployment, "profile", None), "accelerator", None)

    def _excused(self, case: Case, finding: str) -> str | None:
        if self.known_defects_fail or self.deployment is None:
            return None
        return known_defect(self._version(), case.id, finding, self.family, self._build())

    def _served_defect(self, case: Case, stream: bool) -> str | None:
        """Without token ids: the known defect whose signature is in what was served and whose undoing
        leaves an answer with nothing wrong (so a wrong value beside it is never excused), or None. Judged
        once per answer (every per-case test and aggregate asks)."""
        key = (case.id, stream)
        if key not in self._served_defects:
            self._served_defects[key] = self._find_served_defect(case, stream)
        return self._served_defects[key]

    def _find_served_defect(self, case: Case, stream: bool) -> str | None:
        problems = self.verdict(case, stream).problems
        if self.known_defects_fail or self.deployment is None or not problems:
            return None
        answer = self.get(case, stream)
        for defect in served_defects(self._version(), case.id, problems, self.family, self._build()):
            assert defect.served_undo is not None
            try:
                parsed = [c.parsed() for c in answer.calls]
            except ValueError:
                continue
            calls = [dataclasses.replace(c, arguments=json.dumps(defect.served_undo(args), ensure_ascii=False))
                     if isinstance(args, dict) else c for c, args in zip(answer.calls, parsed, strict=True)]
            if not self.judge(case, dataclasses.replace(answer, calls=calls), None).problems:
                return defect.note
        return None

    def fully_excused(self, case: Case, stream: bool) -> bool:
        """Everything wrong with this answer is a known defect (the aggregate gates leave it out)."""
        return bool(self.known(case, stream)) and not self.findings(case, stream)

    def verdict(self, case: Case, stream: bool, *, require_reasoning: bool = False) -> Verdict:
        """The behaviour verdict of a cached answer, judged once (a ``$python`` matcher runs a program)."""
        key = (case.id, stream, require_reasoning)
        if key not in self._verdicts:
            self._verdicts[key] = self.judge(case, self.get(case, stream), self.findings(case, stream),
                                             require_reasoning=require_reasoning)
        return self._verdicts[key]

    def judge(self, case: Case, answer: Answer, findings: list[faithfulness.Finding] | None, *,
              require_reasoning: bool = False) -> Verdict:
        """The behaviour verdict of any answer, told what the faithfulness checks found in it."""
        return judge(case, answer, family=self.family, require_reasoning=require_reasoning,
                     served_faithfully=None if findings is None else not findings)

    def serving_problems(self, case: Case, stream: bool) -> list[str]:
        """The faithfulness findings; without token ids, the weaker checks that need none. Streamed, also
        what only the pair shows (the call ids' shape)."""
        findings = self.findings(case, stream)
        answer = self.get(case, stream)
        pair = [str(f) for f in faithfulness.id_shape_findings(self.get(case, False), answer)] if stream else []
        if findings is not None:
            return [str(f) for f in findings] + pair
        problems = self._unchecked_problems(case, stream, answer)
        return problems + pair

    def _unchecked_problems(self, case: Case, stream: bool, answer: Answer) -> list[str]:
        """The checks that need no token ids (an endpoint that returns none)."""
        problems = unchecked_serving(answer)
        leaked = leaked_markup(answer.content)
        if leaked:
            problems.append(f"content contains raw {leaked[0]!r}: markup leaked past the parser")
        if stream:
            problems += [f"stream differs from non-streamed: {d}" for d in stream_differences(self.get(case, False), answer)]
        return problems

    def coverage(self) -> float | None:
        """Share of the answers so far that came with token ids (what the exact checks need)."""
        answers = list(self._answers.values())
        return sum(a.token_ids is not None for a in answers) / len(answers) if answers else None

    def close(self) -> None:
        self._client.close()


#: How an answer excused by a known vLLM defect is reported (the report counts these apart).
KNOWN_DEFECT = "known defect of the served vLLM"


def per_answer(cases: list[Case]) -> Any:
    """Parametrise a test over every answer of ``cases``, non-streamed and streamed (ids ``case-plain`` and
    ``case-stream``)."""

    def parametrise(test: Any) -> Any:
        test = pytest.mark.parametrize("case", cases, ids=[c.id for c in cases])(test)
        return pytest.mark.parametrize("stream", [False, True], ids=["plain", "stream"])(test)

    return parametrise


def assert_served_faithfully(glm_answers: AnswerCache, case: Case, stream: bool) -> None:
    """Fails on any finding; one that only a known defect of the served vLLM explains is reported as
    that defect (xfail "known defect of vLLM ..."), unless ``--glm-known-defects fail``."""
    problems = glm_answers.serving_problems(case, stream)
    assert not problems, explain(case, glm_answers.get(case, stream), problems)
    known = glm_answers.known(case, stream)
    if known:
        pytest.xfail(KNOWN_DEFECT + ": " + explain(case, glm_answers.get(case, stream), known))


def assert_behaves(glm_answers: AnswerCache, case: Case, stream: bool, *, require_reasoning: bool = False) -> None:
    """A behaviour miss is the model's, not the deployment's: it is tolerated here (xfail, with the
    explanation) and counted by the suite's rate gates, which fail the run past their thresholds."""
    answer = glm_answers.get(case, stream)
    verdict = glm_answers.verdict(case, stream, require_reasoning=require_reasoning)
    if verdict.problems and glm_answers.fully_excused(case, stream):
        pytest.xfail(KNOWN_DEFECT + " (the behaviour cannot be judged on what it served): "
                     + explain(case, answer, glm_answers.known(case, stream)))
    if verdict.inconclusive:
        pytest.skip(f"inconclusive: {verdict.inconclusive}")
    if verdict.problems:
        pytest.xfail("model behaviour miss (counted in the suite's rates): " + explain(case, answer, verdict.problems))


def replay_under_load(glm_answers: AnswerCache, cases: list[Case], concurrency: int, *,
                      require_reasoning: bool = False) -> tuple[list[str], list[str]]:
    """Replay every case (streamed and not) ``concurrency`` at a time. Returns (what was served
    unfaithfully or failed, which behaviour verdicts changed from the one-at-a-time ones). Batching and MTP
    drafting must never make the deployment alter the model's output; a greedy model may well choose
    otherwise in a batch (batch variance), so behaviour changes are reported, not failed."""
    jobs = [(c, s) for c in glm_answers.askable(cases) for s in (False, True)]
    broken, changed = [], []
    for (case, stream), result in zip(jobs, ask_concurrently(glm_answers.endpoint, jobs, concurrency), strict=True):
        mode = "stream" if stream else "plain"
        if isinstance(result, str):
            broken.append(f"{case.id} ({mode}): request failed under load: {result}")
            continue
        findings = glm_answers.unexcused(case, glm_answers.findings_of(case, result))
        if findings:
            broken.append(f"{case.id} ({mode}): " + "; ".join(map(str, findings)))
        before = glm_answers.verdict(case, stream, require_reasoning=require_reasoning)
        after = glm_answers.judge(case, result, findings, require_reasoning=require_reasoning)
        if before.ok != after.ok:
            changed.append(f"{case.id} ({mode}): {'matches' if before.ok else 'misses'} alone, "
                           f"{'matches' if after.ok else 'misses'} at concurrency {concurrency}: "
                           f"{after.problems or before.problems or after.inconclusive}")
            if findings is None:  # no ids to tell the model's choice from the server's doing
                broken.append(changed[-1])
    return broken, changed
