"""Client overhead: how many streamed chunks per second the load runner ingests, next to ``vllm bench serve``'s
client, against a local stub that streams one-token chunks as fast as it can.

The stub runs in its own process (tests/helpers/stream_stub.py); each client in turn holds CONCURRENCY
streams open (512 by default) over the same prompts and output length, A B A B... The figure is chunks
ingested per second of wall time; the target is a ratio plugin / vllm bench of at least 1.

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

from pytest_glm.measuring.load import LoadRunner, Workload  # noqa: E402
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
        runner = LoadRunner(url, "stub", read_timeout=300)
        for i in range(args.rounds):
            result = runner.run(Workload("overhead", args.input_len, args.output_len), prompts, args.concurrency)
            chunks = sum(len(r.chunk_times) for r in result.records)
            ours = chunks / result.duration
            theirs_json = vllm_bench_serve(url, "stub", tokenizer, prompts=prompts, output_len=args.output_len,
                                           concurrency=args.concurrency)
            theirs = theirs_json["total_output_tokens"] / theirs_json["duration"]  # the stub sends a token a chunk
            rows.append({"round": i, "plugin_chunks_per_s": ours, "vllm_bench_chunks_per_s": theirs,
                         "plugin_errors": len(result.errors), "vllm_bench_failed": theirs_json.get("failed", 0),
                         "peak_concurrency_vllm_bench": theirs_json.get("max_concurrent_requests")})
            print(json.dumps(rows[-1]), flush=True)
    finally:
        stub.terminate()
        stub.wait(10)

    ours = statistics.median(r["plugin_chunks_per_s"] for r in rows)
    theirs = statistics.median(r["vllm_bench_chunks_per_s"] for r in rows)
    print(f"\n{args.concurrency} concurrent streams, {args.num_prompts} requests x {args.output_len} chunks, "
          f"{args.rounds} rounds each (medians)")
    print(f"plugin load runner: {ours:10.0f} chunks/s\nvllm bench serve:   {theirs:10.0f} chunks/s\n"
          f"ratio: {ours / theirs:.2f}")
    if args.json:
        args.json.write_text(json.dumps({"rounds": rows, "plugin": ours, "vllm_bench": theirs, "ratio": ours / theirs}))
    return 0 if ours >= theirs and not any(r["plugin_errors"] for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
