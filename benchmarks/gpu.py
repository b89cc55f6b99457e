"""The gate on a GPU box, with the reference model: the figures a GPU profile's thresholds are set from.

Three steps, each its own command so that each fits a short session on a borrowed machine; each writes
``OUT/<step>.json`` and prints a summary.

    python benchmarks/gpu.py bf16   --profile h200x1 [--tp 2] --out DIR
        serve glm-tiny (BF16, MTP k=1); record the start time; run the whole gate against it
        (pytest suites/ --glm-base-url, JSON report kept); fidelity rounds next to vllm bench serve; the
        decode-heavy workload with MTP; every case's greedy answer (for the FP8 comparison).
    python benchmarks/gpu.py no-mtp --profile h200x1 [--tp 2] --out DIR
        the same server without MTP: the decode-heavy workload again -> MTP speed-up (needs bf16.json).
    python benchmarks/gpu.py fp8    --profile h200x1 [--tp 2] --out DIR
        glm-tiny with --quantization fp8: the correctness suites, and agreement of every case's greedy
        answer with BF16's (needs bf16.json).

Environment on a machine where vLLM was installed with --target (no console scripts): PYTHONPATH with the
install and this repository; pytest-glm need not be installed (the plugin is loaded with -p).
"""

from __future__ import annotations

import argparse
import importlib.metadata
import json
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
sys.path.insert(0, str(ROOT))

from common import reference_server  # noqa: E402
from fidelity import measure  # noqa: E402

from pytest_glm.cases import load_cases  # noqa: E402
from pytest_glm.chat import ask  # noqa: E402
from pytest_glm.endpoint import Endpoint  # noqa: E402
from pytest_glm.load import LoadRunner, Workload, random_prompts  # noqa: E402
from pytest_glm.metrics import SpecDecodeStats, parse  # noqa: E402
from pytest_glm.slo import figures  # noqa: E402

#: The decode-heavy shape of the speed-up measurement (tokens in, tokens out, concurrency, requests).
DECODE = (256, 1024, 16, 32)


#: The latency cells measured on a GPU (reference model): three batch sizes, one round each.
MEASURE = ROOT / "benchmarks" / "gpu-measure.toml"


def gate(url: str, profile: str, out: Path, name: str, *select: str) -> dict:
    """Run the shipped suites against ``url`` in a subprocess; the JSON report's essentials."""
    report = out / f"gate-{name}.json"
    installed = any(ep.name == "glm" for ep in importlib.metadata.entry_points(group="pytest11"))
    load = [] if installed else ["-p", "pytest_glm.plugin"]  # not pip-installed: load the plugin by name
    argv = [sys.executable, "-m", "pytest", str(ROOT / "suites"), *load, "-p", "no:cacheprovider",
            "-q", f"--glm-base-url={url}", "--glm-model=glm-tiny", f"--glm-profile={profile}", "--glm-mtp"
            if name != "no-mtp" else "--glm-no-mtp", f"--glm-report={report}", f"--glm-thresholds={MEASURE}", *select]
    began = time.monotonic()
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=1500, check=False)
    (out / f"gate-{name}.log").write_text(proc.stdout[-200000:] + proc.stderr[-20000:])
    print(proc.stdout[-6000:], flush=True)
    data = json.loads(report.read_text()) if report.is_file() else {}
    return {"exit_code": proc.returncode, "seconds": round(time.monotonic() - began, 1),
            "verdict": data.get("verdict"), "tests": data.get("tests"),
            "failures": [c for s in data.get("suites", {}).values() for c in s["cases"] if c["outcome"] in ("failed", "error")],
            "figures": [f for s in data.get("suites", {}).values() for f in s["figures"]]}


def decode_heavy(url: str, model: str) -> dict:
    inp, outp, conc, n = DECODE
    runner = LoadRunner(url, model, read_timeout=300)
    runner.run(Workload("warmup", inp, 16), random_prompts(conc, inp, 320, seed=99), conc)
    before = parse(Endpoint(url, model).metrics_text())
    result = runner.run(Workload("decode_heavy", inp, outp), random_prompts(n, inp, 320, seed=1), conc)
    stats = SpecDecodeStats.from_delta(parse(Endpoint(url, model).metrics_text()) - before)
    f = figures(result)
    return {"shape": {"input": inp, "output": outp, "concurrency": conc, "requests": n}, "errors": result.errors[:3],
            "figures": {k: f[k] for k in ("median_ttft_ms", "median_tpot_ms", "median_itl_ms", "output_throughput",
                                          "duration_s", "median_e2el_ms")},
            "acceptance_rate": stats.acceptance_rate, "mean_acceptance_length": stats.mean_acceptance_length}


def answers(url: str, model: str) -> dict[str, dict]:
    client = Endpoint(url, model, request_timeout=120).client()
    out = {}
    try:
        for case in load_cases():
            try:
                a = ask(client, case, model, stream=False)
            except Exception as exc:  # noqa: BLE001 - an HTTP 500 is this case's answer
                out[case.id] = {"error": f"{type(exc).__name__}: {exc}"[:300]}
                continue
            out[case.id] = {"content": a.content, "reasoning": a.reasoning, "finish_reason": a.finish_reason,
                            "calls": [[c.name, c.parsed()] for c in a.calls]}
    finally:
        client.close()
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("step", choices=("bf16", "no-mtp", "fp8"))
    parser.add_argument("--profile", required=True)
    parser.add_argument("--tp", type=int, help="tensor-parallel size (default: the profile's GPUs)")
    parser.add_argument("--phases", default="gate,fidelity,decode,answers",
                        help="bf16 step: which phases to run (split them over calls on a machine with a short "
                             "command limit; results merge into OUT/bf16.json)")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--fidelity-rounds", type=int, default=3)
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    previous = args.out / f"{args.step}.json"
    result: dict = json.loads(previous.read_text()) if previous.is_file() else {}
    result.update({"step": args.step, "profile": args.profile, "tp": args.tp})
    phases = set(args.phases.split(","))

    def save() -> None:  # after every phase: a step cut short still leaves what it measured
        (args.out / f"{args.step}.json").write_text(json.dumps(result, indent=1, default=str))

    if args.step == "bf16":
        with reference_server(profile=args.profile, tp=args.tp) as served:
            url, model, tokenizer, result["started_in_s"] = served
            result["vllm_version"] = Endpoint(url, model).version()
            if "gate" in phases:
                result["gate"] = gate(url, args.profile, args.out, "bf16")
                save()
            if "fidelity" in phases:
                _, result["fidelity"] = measure(url, model, tokenizer, input_len=128, output_len=256,
                                                concurrency=16, num_prompts=64, rounds=args.fidelity_rounds)
                save()
            if "decode" in phases:
                result["decode_heavy"] = decode_heavy(url, model)
                save()
            if "answers" in phases:
                result["answers"] = answers(url, model)
    elif args.step == "no-mtp":
        with reference_server(profile=args.profile, tp=args.tp, mtp=False) as served:
            url, model, _, result["started_in_s"] = served
            result["decode_heavy"] = decode_heavy(url, model)
        bf16 = json.loads((args.out / "bf16.json").read_text())
        with_mtp = bf16["decode_heavy"]["figures"]
        without = result["decode_heavy"]["figures"]
        result["mtp_speedup"] = {
            "output_throughput": with_mtp["output_throughput"] / without["output_throughput"],
            "median_tpot": without["median_tpot_ms"] / with_mtp["median_tpot_ms"],
            "duration": without["duration_s"] / with_mtp["duration_s"]}
    else:
        with reference_server(profile=args.profile, tp=args.tp, extra=("--quantization", "fp8")) as served:
            url, model, _, result["started_in_s"] = served
            result["vllm_version"] = Endpoint(url, model).version()
            result["gate"] = gate(url, args.profile, args.out, "fp8", "-m", "preflight or tool_calling or reasoning or mtp")
            result["answers"] = answers(url, model)
        bf16_file = args.out / "bf16.json"
        bf16 = json.loads(bf16_file.read_text()).get("answers") if bf16_file.is_file() else None
        if bf16 is None:
            result["fp8_vs_bf16"] = f"no BF16 answers in {bf16_file}: run `bf16 --phases answers` first"
        else:
            answered = {cid: a for cid, a in result["answers"].items() if "error" not in a and "error" not in bf16.get(cid, {})}
            same = [cid for cid, a in answered.items() if bf16.get(cid) == a]
            result["fp8_vs_bf16"] = {"cases_compared": len(answered), "identical": len(same),
                                     "agreement": len(same) / max(len(answered), 1),
                                     "different": sorted(set(answered) - set(same)),
                                     "not_compared (an error on either side)": sorted(set(result["answers"]) - set(answered))}
    save()
    summary = {k: v for k, v in result.items() if k not in ("answers",)}
    if "gate" in summary:
        summary["gate"] = {k: v for k, v in summary["gate"].items() if k != "figures"}
        summary["gate"]["mtp_acceptance"] = [(f["check"], f["value"]) for f in result["gate"]["figures"]
                                             if f["figure"] == "acceptance_rate"]
        slo = [f for f in result["gate"]["figures"] if f["suite"] == "slo" and f["figure"] in
               ("median_ttft_ms", "median_tpot_ms", "median_itl_ms")]
        summary["gate"]["slo_medians"] = {f"{f['check']}:{f['figure']}": round(f["value"], 3) for f in slo}
    print(json.dumps(summary, indent=1, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
