"""Latency SLOs: the seed guide's workloads at the profile's batch sizes, judged against the profile's
thresholds and, with --glm-baseline, against a stored run (the new-vLLM-wheel regression check).

One test per cell (workload x batch size). Each cell sends a warm-up wave, then ``batch x slo_rounds``
random-token prompts of exact length with ``ignore_eos`` at a concurrency of ``batch``, streamed. The
prompts are drawn anew each run, and the prefix cache's hit rate over the cell must stay below
MAX_PREFIX_HIT_RATE: the server keeps its production configuration (prefix caching on), and a cache hit
would flatter TTFT. The figures go into pytest-benchmark's record of the test (``--benchmark-save``/``--benchmark-json``), so a
run can be kept and compared later.
"""

from __future__ import annotations

import os
import zlib

import pytest

from pytest_glm.catalog import latency_grid
from pytest_glm.catalog.figures import lower_is_better
from pytest_glm.catalog.kv_capacity import beyond
from pytest_glm.measuring.load import Workload, random_prompts
from pytest_glm.measuring.metrics import parse
from pytest_glm.measuring.slo import Finding, check, figures, table
from pytest_glm.plugin import glm_config_of
from pytest_glm.reporting.baseline import EXTRA_INFO_KEY, Cell, against
from pytest_glm.reporting.plots import save_samples

pytestmark = pytest.mark.slo

#: Output tokens of each warm-up request (it only has to bring every shape of the cell through once).
WARMUP_TOKENS = 16
MIN_REQUESTS = 4

#: Share of prompt tokens the prefix cache may serve during a cell's measured wave. Random prompts share no
#: 16-token block, so a healthy cell measures 0; more means the figures are a cache's, not a prefill's.
MAX_PREFIX_HIT_RATE = 0.01

#: Mixed into each cell's prompt seed: a server kept from an earlier run (--glm-keep-server) has that run's
#: prompts in its cache.
RUN_NONCE = int.from_bytes(os.urandom(4), "big")


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "slo_cell" in metafunc.fixturenames:
        glm = glm_config_of(metafunc.config)
        thresholds = glm.profile.thresholds
        cells = (latency_grid.quick(thresholds, glm.kv_estimate()) if glm.quick  # --glm-quick: a first look
                 else latency_grid.grid(thresholds))
        params = [(Workload(name, *thresholds.workloads[name]), b) for name, b in cells]
        metafunc.parametrize("slo_cell", params, ids=[f"{w.name}-b{b}" for w, b in params])


#: Figures every cell reports, with or without a threshold.
HEADLINE = ("median_ttft_ms", "p99_ttft_ms", "median_tpot_ms", "p99_tpot_ms", "median_itl_ms", "p99_itl_ms",
            "p99_e2el_ms", "output_throughput", "goodput_ratio")


def test_latency_slo(slo_cell, glm_deployment, glm_load_runner, glm_baseline, benchmark, request, glm_record,
                     glm_plots_dir, glm_capabilities, glm_config):
    workload, batch = slo_cell
    thresholds = glm_deployment.profile.thresholds
    context = glm_capabilities.served_context()
    if context and workload.input_len + workload.output_len > context:
        glm_capabilities.refuse("context", f"{workload} needs {workload.input_len + workload.output_len} tokens of "
                                f"context; the server's max_model_len is {context} (raise --glm-max-model-len, or "
                                f"change the workload in the threshold file)")
    # The server's own KV capacity (/metrics, else its log), else the estimate --collect-only showed.
    capacity = glm_capabilities.kv_capacity() or glm_config.kv_estimate()
    if why := beyond(capacity, batch, workload.input_len, workload.output_len):
        pytest.skip(f"{workload} at batch {batch}: {why}")
    active = glm_deployment.model.active_params_b

    count = max(batch * thresholds.slo_rounds, MIN_REQUESTS)
    seed = zlib.crc32(f"{workload.name}/{batch}/{RUN_NONCE}".encode())
    prompts = random_prompts(batch + count, workload.input_len, glm_deployment.model.prompt_vocab, seed)
    warmup = Workload(f"{workload.name}-warmup", workload.input_len, min(workload.output_len, WARMUP_TOKENS))
    glm_load_runner.run(warmup, prompts[:batch], batch)
    benchmark.group = workload.name
    before = parse(glm_deployment.endpoint.metrics_text())
    result = benchmark.pedantic(glm_load_runner.run, args=(workload, prompts[batch:], batch), rounds=1, iterations=1)
    hit_rate = (parse(glm_deployment.endpoint.metrics_text()) - before).prefix_hit_rate

    if result.errors:
        pytest.fail(f"{len(result.errors)} of {len(result.records)} requests of {workload} at batch {batch} failed; "
                    f"first: {result.errors[0]}", pytrace=False)
    wrong = [r for r in result.records if (r.prompt_tokens, r.output_tokens) != (workload.input_len, workload.output_len)]
    if wrong:
        r = wrong[0]
        pytest.fail(f"{len(wrong)} requests did not get the asked lengths: the server counted {r.prompt_tokens} prompt / "
                    f"{r.output_tokens} output tokens for {workload.input_len} / {workload.output_len} with ignore_eos "
                    f"(usage from the server)", pytrace=False)

    measured = figures(result, thresholds.goodput_for(workload.name, active, batch))
    cell = Cell(name=request.node.name, workload=workload.name, input_len=workload.input_len,
                output_len=workload.output_len, batch=batch, figures=measured, model=glm_deployment.model.model_id,
                profile=glm_deployment.profile.name, vllm_version=glm_deployment.vllm_version)
    benchmark.extra_info[EXTRA_INFO_KEY] = cell.record()

    sourced = thresholds.slo_limit_sources(workload.name, batch, active)
    limits = {figure: limit for figure, (limit, _) in sourced.items()}
    check_name = f"{workload.name}-b{batch}"
    glm_record("slo", check_name, "prefix_cache_hit_rate", hit_rate, MAX_PREFIX_HIT_RATE, "<=")
    if hit_rate is not None and hit_rate > MAX_PREFIX_HIT_RATE:
        pytest.fail(f"{workload} at batch {batch}: the prefix cache served {hit_rate:.1%} of the prompt tokens of "
                    f"fresh random prompts, so these latencies are a cache's: something in front of the server "
                    f"repeats or pads prompts (limit {MAX_PREFIX_HIT_RATE:.0%})", pytrace=False)
    for figure in dict.fromkeys([*HEADLINE, *limits]):
        limit = limits.get(figure)
        op = "" if limit is None else ("<=" if lower_is_better(figure) else ">=")
        source = sourced[figure][1] if figure in sourced else ""
        glm_record("slo", check_name, figure, measured.get(figure), limit, op, " ms" if figure.endswith("_ms") else "",
                   source)
    if result.retried:  # sent again after the server closed their kept-alive connection (see pytest_glm.measuring.load)
        glm_record("slo", check_name, "retried_requests", result.retried, None, "", "")
    lag_ms = result.client_lag * 1000
    glm_record("slo", check_name, "client_lag_ms", lag_ms, thresholds.client_lag_ms, "<=", " ms")
    if lag_ms > thresholds.client_lag_ms:
        pytest.fail(f"{workload} at batch {batch}: the load runner itself was held up (its event loop woke up to "
                    f"{lag_ms:.0f} ms late; limit client_lag_ms = {thresholds.client_lag_ms:g}), so these latencies "
                    f"are partly the client's and are not judged. Give pytest the CPU it needs: a server on the "
                    f"same small machine started from another login session or cgroup, or other heavy jobs, "
                    f"starve it", pytrace=False)
    if glm_plots_dir is not None:
        done = result.completed
        save_samples(glm_plots_dir, check_name, workload.name, batch, [r.ttft * 1000 for r in done],
                     [g * 1000 for r in done for g in r.itls])
    findings: list[Finding | str] = list(check(measured, limits))
    if glm_baseline is not None:
        findings += _against_baseline(cell, glm_baseline, thresholds.baseline_tolerance)
    elif not limits:
        pytest.skip(f"no SLO thresholds for {workload.name} at batch {batch} on profile {glm_deployment.profile.name} "
                    f"and no --glm-baseline: figures recorded, nothing to judge (set [slo.{workload.name}] in "
                    f"--glm-thresholds, or a tier: --glm-slo-tier interactive)")
    if findings:
        judges = " + ".join(dict.fromkeys(src for _, src in sourced.values())) or "--glm-baseline"
        head = (f"{workload} at batch {batch}, {len(result.records)} requests, vLLM {glm_deployment.vllm_version}: "
                f"{len(findings)} figure(s) out of bounds (limits: {judges})")
        pytest.fail("\n".join([head, *(f"  - {f}" for f in findings), table(measured)]), pytrace=False)


def _against_baseline(cell: Cell, stored: dict[str, Cell], tolerance) -> list[Finding | str]:
    base = stored.get(cell.name)
    if base is None:
        return [f"the baseline has no record of {cell.name} (it holds: {', '.join(sorted(stored))})"]
    if why := cell.comparable_with(base):
        return [f"the baseline is not comparable: {why}"]
    found: list[Finding | str] = list(against(cell.figures, base.figures, tolerance))
    if found:
        found.append(f"baseline: vLLM {base.vllm_version or '?'}, {base.model or '?'} on {base.profile or '?'}; "
                     f"this run: vLLM {cell.vllm_version}, {cell.model} on {cell.profile}")
    return found
