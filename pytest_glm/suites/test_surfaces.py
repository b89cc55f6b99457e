"""Surfaces: do ``/v1/responses`` (Codex-style clients) and ``/v1/messages`` (Anthropic-style clients) say
exactly what chat completions says, streamed and not?

Every tool-calling and reasoning case goes through each surface, non-streamed and streamed, with the same
greedy request. The non-streamed chat answer, verified against the model's own token ids by the
faithfulness checks, is the oracle: the same calls in order (names exact, argument values equal), the same
reasoning and content up to edge whitespace, the same ending and token count; streamed, also a whole
stream (its completion event, every announced item completed, nothing after it, deltas that reassemble to
the done items). :mod:`pytest_glm.judging.surfaces` says what legitimately differs on vLLM and how it is
handled. ``test_surface_agreement`` records per surface how many answers differed.

The long-output cases (``min_tokens``) are left out: thousands of tokens each, five times over, test
nothing here that the short ones do not. A surface the endpoint does not serve is skipped, with its name.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from pytest_glm.judging.case_answers import per_answer
from pytest_glm.judging.cases import load_cases
from pytest_glm.judging.surfaces import LAYERS, SURFACES, SurfaceAnswers, SurfaceVerdict
from pytest_glm.judging.verdicts import explain

pytestmark = pytest.mark.surfaces

CASES = [c for c in load_cases() if c.min_tokens is None]


@pytest.fixture(scope="module")
def glm_surfaces(glm_endpoint, glm_deployment) -> Iterator[SurfaceAnswers]:
    """Each (surface, case, streamed) asked once per run, as the chat answers are."""
    cache = SurfaceAnswers(glm_endpoint, glm_deployment)
    yield cache
    cache.close()


def _explain(case, verdict: SurfaceVerdict, chat) -> str:
    assert verdict.answer is not None
    text = explain(case, verdict.answer.answer, [str(f) for f in verdict.findings])
    return f"{text}\n  chat said: {chat.get(case, False).brief()}"


@pytest.mark.parametrize("surface", SURFACES)
@per_answer(CASES)
def test_says_what_chat_says(surface, case, stream, glm_answers, glm_surfaces):
    glm_surfaces.get(surface, case, stream)  # skips an unserved surface, fails a refused request
    verdict = glm_surfaces.judge(surface, case, stream, glm_answers)
    if verdict.inconclusive:
        pytest.skip(f"inconclusive: {verdict.inconclusive}")
    assert not verdict.findings, _explain(case, verdict, glm_answers)


def test_surface_agreement(glm_answers, glm_surfaces, glm_record):
    """Per surface: how many of its answers differed from chat, failed, or could not be judged."""
    lines, failures = [], []
    for surface in SURFACES:
        verdicts = [(c, s, glm_surfaces.judge(surface, c, s, glm_answers)) for c in CASES for s in (False, True)]
        if surface in glm_surfaces.unserved:
            lines.append(f"{LAYERS[surface]}: skipped: {glm_surfaces.unserved[surface]}")
            continue
        differed = [f"{c.id} ({'stream' if s else 'plain'}): " + (v.failed or "; ".join(map(str, v.findings)))
                    for c, s, v in verdicts if v.failed or v.findings]
        inconclusive = sum(v.inconclusive is not None for _, _, v in verdicts)
        glm_record("surfaces", surface, "differing_answers", len(differed), 0, "<=")
        glm_record("surfaces", surface, "inconclusive_answers", inconclusive)
        glm_record("surfaces", surface, "answers", len(verdicts))
        lines.append(f"{LAYERS[surface]}: {len(differed)} of {len(verdicts)} answers differed from chat, "
                     f"{inconclusive} inconclusive")
        failures += [f"{LAYERS[surface]}: {d}" for d in differed]
    print("\n".join(lines))
    if len(glm_surfaces.unserved) == len(SURFACES):
        pytest.skip("; ".join(glm_surfaces.unserved.values()))
    assert not failures, f"{len(failures)} surface answer(s) differ from chat:\n" + "\n".join(failures)
