"""Prometheus parsing and spec-decode arithmetic, on exposition text shaped like vLLM's."""

from __future__ import annotations

import pytest

from pytest_glm.measuring.metrics import SpecDecodeStats, parse

TEXT = """# HELP vllm:spec_decode_num_drafts_total Number of spec decoding drafts.
# TYPE vllm:spec_decode_num_drafts_total counter
vllm:spec_decode_num_drafts_total{{engine="0",model_name="m"}} {d0}
vllm:spec_decode_num_drafts_total{{engine="1",model_name="m"}} {d1}
vllm:spec_decode_num_drafts_created{{engine="0",model_name="m"}} 1.7e+09
# HELP vllm:spec_decode_num_draft_tokens_total Number of draft tokens.
# TYPE vllm:spec_decode_num_draft_tokens_total counter
vllm:spec_decode_num_draft_tokens_total{{engine="0",model_name="m"}} {t0}
vllm:spec_decode_num_draft_tokens_total{{engine="1",model_name="m"}} {t1}
# HELP vllm:spec_decode_num_accepted_tokens_total Number of accepted tokens.
# TYPE vllm:spec_decode_num_accepted_tokens_total counter
vllm:spec_decode_num_accepted_tokens_total{{engine="0",model_name="m"}} {a0}
vllm:spec_decode_num_accepted_tokens_total{{engine="1",model_name="m"}} {a1}
# HELP vllm:spec_decode_num_accepted_tokens_per_pos_total Accepted tokens per draft position.
# TYPE vllm:spec_decode_num_accepted_tokens_per_pos_total counter
vllm:spec_decode_num_accepted_tokens_per_pos_total{{engine="0",model_name="m",position="0"}} {p00}
vllm:spec_decode_num_accepted_tokens_per_pos_total{{engine="0",model_name="m",position="1"}} {p01}
vllm:spec_decode_num_accepted_tokens_per_pos_total{{engine="1",model_name="m",position="0"}} {p10}
vllm:spec_decode_num_accepted_tokens_per_pos_total{{engine="1",model_name="m",position="1"}} {p11}
# HELP vllm:num_requests_running Running requests.
# TYPE vllm:num_requests_running gauge
vllm:num_requests_running{{engine="0",model_name="m"}} 3.0
"""


def snapshot(**v: float):
    values = dict(d0=0, d1=0, t0=0, t1=0, a0=0, a1=0, p00=0, p01=0, p10=0, p11=0)
    values.update(v)
    return parse(TEXT.format(**values))


def test_sums_engines_and_takes_deltas() -> None:
    before = snapshot(d0=10, d1=10, t0=20, t1=20, a0=15, a1=15, p00=9, p01=6, p10=9, p11=6)
    after = snapshot(d0=60, d1=60, t0=120, t1=120, a0=95, a1=95, p00=49, p01=46, p10=49, p11=46)
    stats = SpecDecodeStats.from_delta(after - before)
    assert (stats.drafts, stats.draft_tokens, stats.accepted) == (100, 200, 160)
    assert stats.acceptance_rate == pytest.approx(0.8)
    assert stats.mean_acceptance_length == pytest.approx(2.6)
    assert stats.position_rates() == {0: pytest.approx(0.8), 1: pytest.approx(0.8)}
    assert "acceptance rate 0.800 (160/200 draft tokens)" in stats.summary()


def test_no_drafts() -> None:
    stats = SpecDecodeStats.from_delta(snapshot() - snapshot())
    assert stats.acceptance_rate is None and stats.mean_acceptance_length is None
    assert stats.summary() == "no drafts"


def test_server_without_spec_decode() -> None:
    snap = parse('# TYPE vllm:num_requests_running gauge\nvllm:num_requests_running{engine="0"} 1.0\n')
    assert not snap.has_spec_decode
    assert snapshot().has_spec_decode
