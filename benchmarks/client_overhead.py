"""Client overhead: how many streamed chunks per second the load runner ingests, next to ``vllm bench serve``'s
client, against a local stub that streams one-token chunks as fast as it can.

The stub runs in its own process (tests/helpers/stream_stub.py); each client in turn holds CONCURRENCY
streams open (512 by default: ``--max-concurrency`` for vllm bench serve) over the same prompts and output
length, A B, B A, ... The figure is chunks ingested per second of wall time, the median over rounds and the
median of the per-round ratios; the target is plugin / vllm bench of at least 1.

Both clients must carry the same load, so the concurrency each actually reached is printed, counted the same way
for both: the most requests in flight at one instant, from each request's start and end (vllm bench's with
``--save-detailed``). vllm bench's own "peak concurrent requests" counts every request active during a one-second
bucket, so with requests shorter than a second it reads far above ``--max-concurrency`` (879-1017 at 512) while
the instantaneous peak is 512; it is printed too, as ``vllm_bench_reported_peak``.

    python benchmarks/client_overhead.py [--concurrency 512] [--num-prompts 1024] [--output-len 200]
"""

from __future__ import annotations

import argparse
import json
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
sys.path.insert(0, str(ROOT))

from common import cache_dir, text_prompts, vllm_bench_serve  # noqa: E402

from pytest_glm.measuring.load import LoadRunner, Workload, peak_in_flight  # noqa: E402
from pytest_glm.reference import ensure_reference_model  # noqa: E402
from pytest_glm.serving.launch import free_port  # noqa: E402


def wait_port(port: int, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.1)
    raise RuntimeError(f"the stub did not listen on {port} within {timeout:.0f} s")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--concurrency", type=int, default=512)
    parser.add_argument("--num-prompts", type=int, default=1024)
    parser.add_argument("--input-len", type=int, default=32)
    parser.add_argument("--output-len", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()

    port = free_port()
    stub = subprocess.Popen([sys.executable, str(ROOT / "tests" / "helpers" / "stream_stub.py"), "--port", str(port)])
    rows = []
    try:
        wait_port(port)
        url = f"http://127.0.0.1:{port}"
        tokenizer = ensure_reference_model("glm-tiny", cache_dir())
        prompts = text_prompts(args.num_prompts, args.input_len, seed=0)
        runner = LoadRunner(url, "stub", read_timeout=300, processes=1)  # one client process against the other

        def plugin() -> dict:
            result = runner.run(Workload("overhead", args.input_len, args.output_len), prompts, args.concurrency)
            return {"plugin_chunks_per_s": sum(len(r.chunk_times) for r in result.records) / result.duration,
                    "plugin_errors": len(result.errors), "plugin_peak": result.peak_concurrency}

        def vllm_bench() -> dict:
            theirs = vllm_bench_serve(url, "stub", tokenizer, prompts=prompts, output_len=args.output_len,
                                      concurrency=args.concurrency, detailed=True)
            spans = [(s, s + t) for s, t in zip(theirs["start_times"], theirs["latencies"], strict=True)]
            return {"vllm_bench_chunks_per_s": theirs["total_output_tokens"] / theirs["duration"],  # a token a chunk
                    "vllm_bench_failed": theirs.get("failed", 0), "vllm_bench_peak": peak_in_flight(spans),
                    "vllm_bench_reported_peak": theirs.get("max_concurrent_requests")}

        for i in range(args.rounds):
            order = (plugin, vllm_bench) if i % 2 == 0 else (vllm_bench, plugin)  # neither always runs second
            row: dict = {"round": i}
            for run in order:
                row.update(run())
            row["ratio"] = row["plugin_chunks_per_s"] / row["vllm_bench_chunks_per_s"]
            rows.append(row)
            print(json.dumps(row), flush=True)
    finally:
        stub.terminate()
        stub.wait(10)

    ours = statistics.median(r["plugin_chunks_per_s"] for r in rows)
    theirs = statistics.median(r["vllm_bench_chunks_per_s"] for r in rows)
    paired = statistics.median(r["ratio"] for r in rows)
    same_load = all(r["plugin_peak"] == r["vllm_bench_peak"] == args.concurrency for r in rows)
    print(f"\n{args.concurrency} concurrent streams, {args.num_prompts} requests x {args.output_len} chunks, "
          f"{args.rounds} rounds each, interleaved (medians)")
    print(f"plugin load runner: {ours:10.0f} chunks/s, peak in flight {sorted({r['plugin_peak'] for r in rows})}\n"
          f"vllm bench serve:   {theirs:10.0f} chunks/s, peak in flight {sorted({r['vllm_bench_peak'] for r in rows})}"
          f" (its own one-second count: {sorted({r['vllm_bench_reported_peak'] for r in rows})})\n"
          f"ratio of medians: {ours / theirs:.3f}, median of per-round ratios: {paired:.3f}"
          f"{'' if same_load else '; NOT the same load: the peaks differ from the concurrency asked'}")
    if args.json:
        args.json.write_text(json.dumps({"rounds": rows, "plugin": ours, "vllm_bench": theirs, "ratio": ours / theirs,
                                         "paired_ratio": paired, "same_load": same_load}))
    return 0 if paired >= 1 and same_load and not any(r["plugin_errors"] for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
