"""Client ceiling: up to how many streams does one load-runner process report what the server itself measured?

For each concurrency, one process of the load runner sends ``2 x concurrency`` requests; the server's histograms
(``/metrics``, fine buckets when this script serves glm-tiny) are snapshotted around the run. The figure is the
client's median (and mean) TPOT and ITL over the server's, per round, then the median over rounds. The ceiling
is the highest concurrency at which both stay within the tolerance (5 %); above it the load runner splits the
run over processes (pytest_glm/measuring/load_workers.py, STREAMS_PER_PROCESS).

    python benchmarks/client_ceiling.py [--concurrency 16 64 256 512] [--rounds 2] [--processes 1]
    python benchmarks/client_ceiling.py --base-url http://gpu-box:8000 --model glm-4.7-fp8
"""

from __future__ import annotations

import argparse
import contextlib
import json
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import Served, reference_server, text_prompts

from pytest_glm.measuring.histograms import difference, fetch_histograms, fine_buckets_arg, server_figures
from pytest_glm.measuring.load import LoadRunner, Workload
from pytest_glm.measuring.slo import figures

JUDGED = ("tpot", "itl")


def sweep(url: str, model: str, concurrencies: list[int], *, input_len: int, output_len: int, rounds: int,
          processes: int = 1) -> list[dict]:
    # ``processes`` client processes whatever the concurrency (one: the ceiling; more: what the split gives)
    runner = LoadRunner(url, model, processes=processes, streams_per_process=1)
    runner.run(Workload("warmup", input_len, 8), text_prompts(16, input_len, seed=999), 16)
    rows = []
    for c in concurrencies:
        for i in range(rounds):
            before = fetch_histograms(url)
            result = runner.run(Workload("ceiling", input_len, output_len),
                                text_prompts(2 * c, input_len, seed=1000 * c + i), c)
            server = server_figures(difference(fetch_histograms(url), before))
            client = figures(result)
            row: dict = {"concurrency": c, "round": i, "processes": result.processes,
                         "peak_concurrency": result.peak_concurrency,
                         "errors": len(result.errors), "client_lag_ms": result.client_lag * 1000,
                         "chunks_per_s": sum(len(r.chunk_times) for r in result.records) / result.duration}
            for m in JUDGED:
                for stat in ("median", "mean"):
                    row[f"client_{stat}_{m}_ms"] = client.get(f"{stat}_{m}_ms")
                    row[f"server_{stat}_{m}_ms"] = server.get(f"{stat}_{m}_ms")
                    ours, theirs = client.get(f"{stat}_{m}_ms"), server.get(f"{stat}_{m}_ms")
                    row[f"{stat}_{m}_ratio"] = ours / theirs if ours and theirs else float("nan")
                row[f"median_{m}_bucket_ms"] = server.get(f"median_{m}_bucket_ms")
            rows.append(row)
            print(json.dumps({k: round(v, 4) if isinstance(v, float) else v for k, v in row.items()}), flush=True)
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--base-url", help="a running server (default: serve glm-tiny here)")
    parser.add_argument("--model", help="served model name (with --base-url)")
    parser.add_argument("--concurrency", type=int, nargs="+", default=[16, 64, 256, 512])
    parser.add_argument("--input-len", type=int, default=32)
    parser.add_argument("--output-len", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--tolerance", type=float, default=0.05)
    parser.add_argument("--processes", type=int, default=1,
                        help="client processes (default 1, the ceiling of one; more: the split load runner)")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()

    server = (contextlib.nullcontext(Served(args.base_url, args.model, Path(), 0.0)) if args.base_url
              else reference_server(extra=("--custom-histogram-buckets", fine_buckets_arg(),
                                           "--max-num-seqs", str(max(args.concurrency)))))
    with server as served:
        rows = sweep(served.base_url, served.model, args.concurrency, input_len=args.input_len,
                     output_len=args.output_len, rounds=args.rounds, processes=args.processes)
    print(f"\n{args.input_len} in / {args.output_len} out, 2 x concurrency requests, {args.rounds} rounds, "
          f"{args.processes} client process(es); client / server (median over rounds)")
    print(f"{'streams':>8}{'peak':>6}{'chunks/s':>10}{'TPOT med':>10}{'ITL med':>9}{'TPOT mean':>10}{'ITL mean':>9}"
          f"{'lag ms':>8}")
    ceiling, broken = 0, False
    for c in sorted(args.concurrency):
        mine = [r for r in rows if r["concurrency"] == c]

        def med(key: str, mine: list[dict] = mine) -> float:
            return statistics.median(r[key] for r in mine)

        ratios = {k: med(k) for k in ("median_tpot_ratio", "median_itl_ratio", "mean_tpot_ratio", "mean_itl_ratio")}
        within = all(abs(v - 1) <= args.tolerance for v in ratios.values()) and not any(r["errors"] for r in mine)
        broken = broken or not within
        ceiling = ceiling if broken else c
        print(f"{c:>8}{max(r['peak_concurrency'] for r in mine):>6}{med('chunks_per_s'):>10.0f}"
              f"{ratios['median_tpot_ratio']:>10.3f}{ratios['median_itl_ratio']:>9.3f}{ratios['mean_tpot_ratio']:>10.3f}"
              f"{ratios['mean_itl_ratio']:>9.3f}{max(r['client_lag_ms'] for r in mine):>8.1f}")
    print(f"ceiling (every lower concurrency within {args.tolerance:.0%} too): {ceiling or 'below the lowest tried'}"
          f"{' (the highest tried: a lower bound)' if ceiling == max(args.concurrency) else ''}")
    if args.json:
        args.json.write_text(json.dumps({"rows": rows, "ceiling": ceiling,
                                         "args": {k: str(v) for k, v in vars(args).items()}}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
