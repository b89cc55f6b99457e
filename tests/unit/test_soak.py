"""The soak's pieces that need no server: --glm-soak's duration, the sample, the drift arithmetic, and what
the soak fails on."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from pytest_glm.config import parse_duration
from pytest_glm.exceptions import ConfigError
from pytest_glm.judging.cases import load_cases
from pytest_glm.measuring.soak import (
    Drift,
    Request,
    Sample,
    Soak,
    SoakResult,
    drift,
    interval_for,
    is_sampled,
    quantile,
    rotation,
)

CASES = load_cases()


@pytest.mark.parametrize(("text", "seconds"), [
    ("90s", 90), ("10m", 600), ("1.5h", 5400), ("45", 45), ("0.5", 0.5), (" 2M ", 120), ("30 s", 30), (".5m", 30),
])
def test_durations(text, seconds):
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["", None])
def test_no_duration_is_no_soak(text):
    assert parse_duration(text) is None


@pytest.mark.parametrize("text", ["10 minutes", "1h30m", "-5s", "abc", "10d", "1e3", "m", "5ms"])
def test_bad_durations_name_the_option(text):
    with pytest.raises(ConfigError) as caught:
        parse_duration(text)
    assert str(caught.value) == (f"--glm-soak: expected a duration such as 90s, 10m, 1.5h or 45 (seconds), "
                                 f"got {text!r}")


@pytest.mark.parametrize("text", ["0", "0s", "0.0h"])
def test_a_soak_of_nothing_is_refused(text):
    with pytest.raises(ConfigError, match=r"^--glm-soak: a soak must last longer than 0 s"):
        parse_duration(text)


def test_progress_every_30_s_or_ten_times_in_a_short_soak():
    assert interval_for(1800) == 30 and interval_for(300) == 30 and interval_for(20) == 2


def test_the_rotation_is_fixed_and_holds_every_job_once():
    jobs = rotation(CASES)
    assert jobs == rotation(CASES)
    assert sorted((c.id, s) for c, s in jobs) == sorted((c.id, s) for c in CASES for s in (False, True))
    assert [(c.id, s) for c, s in jobs] != [(c.id, s) for c in CASES for s in (False, True)]  # shuffled


@pytest.mark.parametrize("length", [8, 92, 13, 1])
def test_one_in_four_is_checked_and_every_job_in_turn(length):
    """Even when the rotation's length is a multiple of 4, every job is checked once per 4 passes."""
    passes = 4
    seqs = range(length * passes)
    checked = [i for i in seqs if is_sampled(i, length, 4)]
    assert abs(len(checked) - len(seqs) / 4) <= passes
    assert {i % length for i in checked} == set(range(length))


def test_quantile_interpolates_as_numpy_does():
    values = [4.0, 1.0, 3.0, 2.0]
    assert quantile(values, 0.5) == 2.5
    assert quantile(values, 0.9) == pytest.approx(3.7)
    assert quantile([7.0], 0.9) == 7.0 and quantile([], 0.5) is None


def test_drift_compares_the_first_and_last_tenth_of_the_run():
    # 100 s run: requests started in [0, 10) took 1 s (one took 2 s), in [90, 100) 3 s (one 5 s), the middle 9 s.
    points = [(t, 1.0) for t in range(0, 10)] + [(5.5, 2.0)] + [(t, 9.0) for t in range(10, 90)]
    points += [(t, 3.0) for t in range(90, 100)] + [(99.5, 5.0)]
    moved = drift(points, 100.0)
    assert (moved.first_n, moved.last_n) == (11, 11)
    assert (moved.first_p50, moved.last_p50) == (1.0, 3.0)
    assert moved.p50_ratio == 3.0
    assert moved.first_p90 == pytest.approx(1.0) and moved.last_p90 == pytest.approx(3.0)
    assert drift([(t, 2.0) for t in range(100)], 100.0).p90_ratio == 1.0  # steady: no drift


def test_no_drift_figure_without_requests_at_both_ends():
    moved = drift([(50.0, 1.0)], 100.0)
    assert moved.p50_ratio is None and moved.p90_ratio is None and (moved.first_n, moved.last_n) == (0, 0)
    assert Drift(0.0, 1.0, 0.0, 1.0).p50_ratio is None  # a zero first tenth gives no ratio, not a crash


def test_drift_of_a_result_reads_ok_requests_and_streamed_ttfts():
    result = SoakResult(planned_s=10, concurrency=2, jobs=4, run_s=10)
    result.requests = [Request("a", True, 0.5, 1.5, ttft=0.2), Request("a", False, 0.6, 1.6),
                       Request("a", True, 0.7, 9.0, error="boom"),  # failed: not a latency
                       Request("a", True, 9.5, 12.5, ttft=0.6), Request("a", False, 9.6, 11.6)]
    assert result.latency_drift().first_p50 == 1.0 and result.latency_drift().last_p50 == 2.5
    assert result.ttft_drift().p50_ratio == pytest.approx(3.0)


def _sample(case, stream, ok, findings=(), at=1.0):
    return Sample(case, stream, at, None if findings is None else list(findings), ok, [] if ok else ["missed it"])


def test_a_clean_soak_has_no_problems():
    case = CASES[0]
    result = SoakResult(planned_s=20, concurrency=8, jobs=2, run_s=20, requests=[Request(case.id, False, 0, 1)],
                        samples=[_sample(case, False, True)])
    assert result.problems() == [] and result.unchecked == 0


def test_every_kind_of_problem_is_named():
    case = CASES[0]
    result = SoakResult(planned_s=60, concurrency=8, jobs=2, run_s=42)
    result.requests = [Request(case.id, False, 0, 1), Request(case.id, True, 1, 2, error="x: HTTP 502")]
    result.first_errors = ["x: HTTP 502"]
    result.samples = [_sample(case, True, True, ["tool parser: city='paris' where the model generated 'Paris'"]),
                      _sample(case, False, True, None)]
    result.death = "vLLM server died (exit code -9); the server log says: RuntimeError: out of memory"
    result.changes = [f"{case.id} (plain): matches alone, misses in 1 of 3 checked soak answers"]
    problems = result.problems()
    assert problems[0].startswith("the server died 0:42 into the soak: vLLM server died (exit code -9)")
    assert "RuntimeError: out of memory" in problems[0]
    assert problems[1] == "1 of 2 requests failed; first errors: x: HTTP 502"
    assert problems[2].startswith(f"1 faithfulness finding(s) in 2 checked answers: {case.id} (stream) at 0:01: "
                                  "tool parser: city='paris'")
    assert problems[3].startswith("1 behaviour verdict(s) differ from the one-at-a-time verdict")
    assert result.unchecked == 1


def test_verdicts_are_compared_with_the_one_at_a_time_ones():
    a, b = CASES[0], CASES[1]
    alone = {(a.id, False): True, (b.id, True): False}
    answers = SimpleNamespace(verdict=lambda case, stream, require_reasoning=False: SimpleNamespace(
        ok=alone[(case.id, stream)], problems=[] if alone[(case.id, stream)] else ["alone it missed"],
        inconclusive=None))
    soak = Soak(answers, SimpleNamespace(endpoint=None), [a, b], 10, 2, say=lambda line: None)
    soak.result.samples = [_sample(a, False, True, at=1), _sample(a, False, False, at=75), _sample(a, False, False, at=80),
                           _sample(b, True, False, at=3)]
    changes = soak._changes()
    assert changes == [f"{a.id} (plain): matches alone, misses in 2 of 3 checked soak answers (first at 1:15): "
                       "['missed it']"]
