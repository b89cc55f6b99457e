"""The gate on a GPU box, with the reference models: one command that plans its own device time.

    python benchmarks/gpu.py --profile h200x1 --out DIR [--budget 1200] [--phases ...] [--tp 2]

It starts every server the chosen phases need at once (each waits for ``/health``), then runs the phases
one after another while the other servers sit idle, most important first, and writes ``DIR/summary.json``
after every phase, so a run cut short by its machine's lease still leaves what it measured. A phase whose
estimated duration no longer fits ``--budget`` (seconds from the start) is skipped and recorded as such.

Servers (all on the profile's GPUs; ``--share-gpu`` gives each a fixed 4 GiB KV cache and skips vLLM's memory
profiling, which is what lets several start side by side on one device):

    bf16      glm-tiny, BF16, MTP k=1: the profile's serving command
    no-mtp    glm-tiny without MTP (the speed-up's other side)
    fp8       glm-tiny with --quantization fp8 (online FP8 of the BF16 checkpoint), MTP k=1
    bf16-47   glm-tiny-47 (GLM-4.7 format, glm47 tool parser), MTP k=1

Phases, in the order they run:

    gate      the whole gate against bf16 (JSON report gate-bf16.json)
    fp8       the correctness suites against fp8; every case's greedy answer from bf16 and fp8 compared;
              the decode-heavy workload on both (FP8 / BF16 latency)
    speedup   the decode-heavy workload with MTP (bf16) and without (no-mtp): the MTP speed-up
    fidelity  the load runner next to vllm bench serve on bf16, interleaved rounds
    gate47    the whole gate against bf16-47 (gate-bf16-47.json)
    slo2 slo3 the latency suite again against bf16 (slo-2.json, slo-3.json): runs for the thresholds
    correct   the gate without its latency suite against bf16 (gate-correct.json): a new vLLM's verdict
    shape-flash, shape-air-fp8
              shape runs (--glm-weights dummy: the real architecture, random weights) of GLM-4.7-Flash
              (BF16) and GLM-4.5-Air-FP8: the gate launches the model itself, preflight, the latency cells of
              gpu-measure.toml and the MTP path (shape-flash.json, shape-air-fp8.json); no server of the
              table above is needed. ``--beside`` shares the GPU with a reference server running meanwhile.

Environment on a machine where vLLM was installed with --target (no console scripts): PYTHONPATH with the
install and this repository; pytest-glm need not be installed (the plugin is loaded with -p).
"""

from __future__ import annotations

import argparse
import concurrent.futures
import importlib.metadata
import json
import subprocess
import sys
import time
import traceback
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
sys.path.insert(0, str(ROOT))

from common import Served, cache_dir, launch_reference  # noqa: E402
from fidelity import measure  # noqa: E402

from pytest_glm.judging.cases import load_cases  # noqa: E402
from pytest_glm.judging.chat import ask  # noqa: E402
from pytest_glm.measuring.load import LoadRunner, Workload, random_prompts  # noqa: E402
from pytest_glm.measuring.metrics import SpecDecodeStats, parse  # noqa: E402
from pytest_glm.measuring.slo import figures  # noqa: E402
from pytest_glm.reference import ensure_reference_model  # noqa: E402
from pytest_glm.serving.endpoint import Endpoint  # noqa: E402

#: The decode-heavy shape of the speed-up and FP8 latency measurements (tokens in, out, concurrency, requests).
DECODE = (256, 1024, 16, 32)

#: The latency cells measured on a GPU (reference model): three batch sizes, one round each.
MEASURE = ROOT / "benchmarks" / "gpu-measure.toml"

#: name -> (reference model, launch keyword arguments)
SERVERS = {
    "bf16": ("glm-tiny", {}),
    "no-mtp": ("glm-tiny", {"mtp": False}),
    "fp8": ("glm-tiny", {"extra": ("--quantization", "fp8")}),
    "bf16-47": ("glm-tiny-47", {}),
}

#: phase -> (servers it needs, seconds it took on one H200 on 2026-12-03: what the budget check uses)
PHASES = {
    "gate": (("bf16",), 310),
    "fp8": (("fp8", "bf16"), 190),
    "speedup": (("bf16", "no-mtp"), 20),
    "fidelity": (("bf16",), 115),
    "gate47": (("bf16-47",), 370),
    "slo2": (("bf16",), 295),
    "slo3": (("bf16",), 295),
    "correct": (("bf16",), 200),
    "shape-flash": ((), 520),
    "shape-air-fp8": ((), 480),
}

#: shape phase -> (registry model, GPU memory share, cells left out to fit a 30-minute session: 8000 output
#: tokens take about 50 s a request at batch 1 (four requests, one after another) and minutes at batch 64)
SHAPES = {
    "shape-flash": ("zai-org/GLM-4.7-Flash", 0.8, "not decode_heavy-b64 and not decode_heavy-b1"),
    "shape-air-fp8": ("zai-org/GLM-4.5-Air-FP8", 0.95, "not decode_heavy"),
}

#: Flags that let several servers start on one GPU at once: vLLM's memory profiling reads the device's free
#: memory before and after, and another server allocating meanwhile breaks it; a fixed KV cache skips it.
SHARE_GPU = ("--gpu-memory-utilization", "0.15", "--kv-cache-memory-bytes", str(4 << 30))


def pytest_suites() -> list[str]:
    """The command that runs the shipped suites here, the plugin loaded by name when it is not pip-installed."""
    installed = any(ep.name == "glm" for ep in importlib.metadata.entry_points(group="pytest11"))
    load = [] if installed else ["-p", "pytest_glm.plugin"]
    return [sys.executable, "-m", "pytest", str(ROOT / "suites"), *load, "-p", "no:cacheprovider", "-q"]


def gate(served: Served, model: str, profile: str, out: Path, name: str, mtp: bool, *select: str) -> dict:
    """Run the shipped suites against a served model in a subprocess; the JSON report's essentials."""
    report = out / f"{name}.json"
    argv = [*pytest_suites(), f"--glm-base-url={served.base_url}", f"--glm-model={model}", f"--glm-profile={profile}",
            "--glm-mtp" if mtp else "--glm-no-mtp", f"--glm-report={report}", f"--glm-thresholds={MEASURE}", *select]
    began = time.monotonic()
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=1500, check=False)
    (out / f"{name}.log").write_text(proc.stdout[-200000:] + proc.stderr[-20000:])
    print(proc.stdout[-3000:], flush=True)
    data = json.loads(report.read_text()) if report.is_file() else {}
    return {"exit_code": proc.returncode, "seconds": round(time.monotonic() - began, 1),
            "verdict": data.get("verdict"), "tests": data.get("tests"),
            "failures": [c for s in data.get("suites", {}).values() for c in s["cases"] if c["outcome"] in ("failed", "error")],
            "mtp_acceptance": {f["check"]: f["value"] for s in data.get("suites", {}).values() for f in s["figures"]
                               if f["figure"] == "acceptance_rate"},
            "slo_medians": {f"{f['check']}:{f['figure']}": f["value"] for f in data.get("suites", {}).get("slo", {}).get("figures", [])
                            if f["figure"] in ("median_ttft_ms", "median_tpot_ms", "median_itl_ms")}}


def shape(phase: str, profile: str, out: Path) -> dict:
    """A shape run of a registry model, launched by the gate itself (vLLM's --load-format dummy)."""
    model, share, deselect = SHAPES[phase]
    report = out / f"{phase}.json"
    argv = [*pytest_suites(), "-rA", f"--glm-model={model}", f"--glm-profile={profile}", "--glm-weights=dummy", f"--glm-report={report}",
            f"--glm-thresholds={MEASURE}", f"--glm-gpu-memory-utilization={share}", "--glm-startup-timeout=1500",
            f"--glm-server-log={out / 'servers' / (phase + '.log')}", "-k", deselect]
    began = time.monotonic()
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=2400, check=False)
    (out / f"{phase}.log").write_text(proc.stdout[-400000:] + proc.stderr[-20000:])
    print(proc.stdout[-3000:], flush=True)
    data = json.loads(report.read_text()) if report.is_file() else {}
    slo = data.get("suites", {}).get("slo", {})
    return {"exit_code": proc.returncode, "time_to_verdict_s": round(time.monotonic() - began, 1),
            "verdict": data.get("verdict"), "tests": data.get("tests"), "deployment": data.get("deployment"),
            "failures": [c for s in data.get("suites", {}).values() for c in s["cases"] if c["outcome"] in ("failed", "error")],
            "slo_figures": slo.get("figures", []),
            "mtp": data.get("suites", {}).get("mtp", {}).get("figures", [])}


def decode_heavy(served: Served) -> dict:
    """The decode-heavy workload once (after a short warm-up), with the server's spec-decode counters."""
    inp, outp, conc, n = DECODE
    runner = LoadRunner(served.base_url, served.model, read_timeout=300)
    endpoint = Endpoint(served.base_url, served.model)
    runner.run(Workload("warmup", inp, 16), random_prompts(conc, inp, 320, seed=99), conc)
    before = parse(endpoint.metrics_text())
    result = runner.run(Workload("decode_heavy", inp, outp), random_prompts(n, inp, 320, seed=1), conc)
    stats = SpecDecodeStats.from_delta(parse(endpoint.metrics_text()) - before)
    f = figures(result)
    return {"shape": {"input": inp, "output": outp, "concurrency": conc, "requests": n}, "errors": result.errors[:3],
            "figures": {k: f.get(k) for k in ("median_ttft_ms", "median_tpot_ms", "median_itl_ms", "output_throughput",
                                              "duration_s", "median_e2el_ms")},
            "acceptance_rate": stats.acceptance_rate, "mean_acceptance_length": stats.mean_acceptance_length}


def answers(served: Served) -> dict[str, dict]:
    """Every case's greedy answer (non-streamed), or the error it got."""
    client = Endpoint(served.base_url, served.model, request_timeout=120).client()
    out = {}
    try:
        for case in load_cases():
            try:
                a = ask(client, case, served.model, stream=False)
            except Exception as exc:  # an HTTP 500 is this case's answer
                out[case.id] = {"error": f"{type(exc).__name__}: {exc}"[:300]}
                continue
            out[case.id] = {"content": a.content, "reasoning": a.reasoning, "finish_reason": a.finish_reason,
                            "calls": [[c.name, c.parsed()] for c in a.calls]}
    finally:
        client.close()
    return out


def agreement(base: dict[str, dict], other: dict[str, dict]) -> dict:
    """How many cases both sides answered, and how many of those identically."""
    answered = {cid: a for cid, a in other.items() if "error" not in a and "error" not in base.get(cid, {"error": 1})}
    same = sorted(cid for cid, a in answered.items() if base[cid] == a)
    return {"cases_compared": len(answered), "identical": len(same), "agreement": len(same) / max(len(answered), 1),
            "different": sorted(set(answered) - set(same)),
            "not_compared (an error on either side)": sorted(set(other) - set(answered))}


def ratio(a: float | None, b: float | None) -> float | None:
    return a / b if a is not None and b else None


def run_phase(phase: str, servers: dict[str, Served], args: argparse.Namespace, result: dict) -> None:
    out, profile = args.out, args.profile
    if phase == "gate":
        result["gate"] = gate(servers["bf16"], "glm-tiny", profile, out, "gate-bf16", True)
    elif phase == "gate47":
        result["gate47"] = gate(servers["bf16-47"], "glm-tiny-47", profile, out, "gate-bf16-47", True)
    elif phase == "correct":
        result["correct"] = gate(servers["bf16"], "glm-tiny", profile, out, "gate-correct", True, "-m", "not slo")
    elif phase in SHAPES:
        result[phase] = shape(phase, profile, out)
    elif phase in ("slo2", "slo3"):
        result[phase] = gate(servers["bf16"], "glm-tiny", profile, out, f"slo-{phase[-1]}", True, "-m", "slo")
    elif phase == "fp8":
        fp8 = {"gate": gate(servers["fp8"], "glm-tiny", profile, out, "gate-fp8", True,
                            "-m", "preflight or tool_calling or reasoning or mtp")}
        base, quant = answers(servers["bf16"]), answers(servers["fp8"])
        fp8["agreement"] = agreement(base, quant)
        fp8["answers"] = {"bf16": base, "fp8": quant}
        fp8["decode_heavy"] = {"fp8": decode_heavy(servers["fp8"]), "bf16": decode_heavy(servers["bf16"])}
        f8, b16 = fp8["decode_heavy"]["fp8"]["figures"], fp8["decode_heavy"]["bf16"]["figures"]
        fp8["fp8_over_bf16"] = {k: ratio(f8[k], b16[k]) for k in f8}
        result["fp8"] = fp8
    elif phase == "speedup":
        on, off = decode_heavy(servers["bf16"]), decode_heavy(servers["no-mtp"])
        result["speedup"] = {"mtp": on, "no_mtp": off, "mtp_speedup": {
            "output_throughput": ratio(on["figures"]["output_throughput"], off["figures"]["output_throughput"]),
            "median_tpot": ratio(off["figures"]["median_tpot_ms"], on["figures"]["median_tpot_ms"]),
            "duration": ratio(off["figures"]["duration_s"], on["figures"]["duration_s"])}}
    elif phase == "fidelity":
        served = servers["bf16"]
        rounds, summary = measure(served.base_url, served.model, served.tokenizer, input_len=128, output_len=256,
                                  concurrency=16, num_prompts=64, rounds=args.fidelity_rounds)
        result["fidelity"] = {"rounds": rounds, "summary": summary}


def start_servers(names: list[str], args: argparse.Namespace, result: dict) -> tuple[dict, dict]:
    """Start the servers side by side; (name -> Served, name -> process) of those that came up."""
    logs = args.out / "servers"
    logs.mkdir(parents=True, exist_ok=True)
    extra_all = SHARE_GPU if args.share_gpu and (len(names) > 1 or args.beside) else ()

    def launch(name: str):
        model, kwargs = SERVERS[name]
        kwargs = {**kwargs, "extra": (*kwargs.get("extra", ()), *extra_all)}
        return launch_reference(model, args.profile, tp=args.tp, log_dir=logs, name=name, **kwargs)

    for model in dict.fromkeys(SERVERS[n][0] for n in names):  # built here: transformers' lazy imports race in threads
        ensure_reference_model(model, cache_dir())
    served, procs = {}, {}
    with concurrent.futures.ThreadPoolExecutor(len(names)) as pool:
        futures = {name: pool.submit(launch, name) for name in names}
        for name, future in futures.items():
            try:
                procs[name], served[name] = future.result()
                result["servers"][name] = {"started_in_s": round(served[name].started_in, 1),
                                           "vllm_version": Endpoint(served[name].base_url, served[name].model).version(),
                                           "command": procs[name].command.display()}
            except Exception as exc:  # a server that cannot start skips its phases, not the run
                result["servers"][name] = {"error": str(exc)[:4000]}
    return served, procs


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--profile", required=True)
    parser.add_argument("--tp", type=int, help="tensor-parallel size (default: the profile's GPUs)")
    parser.add_argument("--phases", default=",".join(PHASES), help=f"comma-separated, from {', '.join(PHASES)}")
    parser.add_argument("--budget", type=float, default=1200, help="seconds from the start; phases that would "
                        "end later are skipped (default 1200)")
    parser.add_argument("--share-gpu", action=argparse.BooleanOptionalAction, default=True,
                        help="start the servers side by side with a fixed KV cache each (default on)")
    parser.add_argument("--beside", action="store_true",
                        help="another process uses the GPU meanwhile (a shape run): share it even with one server")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--fidelity-rounds", type=int, default=3)
    args = parser.parse_args()
    began = time.monotonic()
    phases = [p for p in PHASES if p in args.phases.split(",")]
    if unknown := set(args.phases.split(",")) - set(PHASES):
        parser.error(f"--phases: unknown {', '.join(sorted(unknown))} (known: {', '.join(PHASES)})")
    args.out.mkdir(parents=True, exist_ok=True)
    result: dict = {"profile": args.profile, "tp": args.tp, "phases": {}, "servers": {},
                    "share_gpu": list(SHARE_GPU) if args.share_gpu else None}

    def save() -> None:  # after every phase: a run cut short still leaves what it measured
        result["elapsed_s"] = round(time.monotonic() - began, 1)
        (args.out / "summary.json").write_text(json.dumps(result, indent=1, default=str))

    names = list(dict.fromkeys(s for p in phases for s in PHASES[p][0]))
    served, procs = start_servers(names, args, result) if names else ({}, {})
    (args.out / "SERVERS-UP").write_text(json.dumps(sorted(served)))  # what a run beside this one waits for
    result["servers_up_after_s"] = round(time.monotonic() - began, 1)
    save()
    try:
        for phase in phases:
            needs, estimate = PHASES[phase]
            elapsed = time.monotonic() - began
            if missing := [n for n in needs if n not in served]:
                result["phases"][phase] = f"skipped: server {', '.join(missing)} did not start"
            elif elapsed + estimate > args.budget:
                result["phases"][phase] = f"skipped: {elapsed:.0f} s + ~{estimate} s is past the budget of {args.budget:.0f} s"
            else:
                print(f"== {phase} (at {elapsed:.0f} s)", flush=True)
                try:
                    run_phase(phase, served, args, result)
                    result["phases"][phase] = f"done in {time.monotonic() - began - elapsed:.0f} s"
                except Exception:  # record it, go on with the next phase
                    result["phases"][phase] = "failed: " + traceback.format_exc()[-3000:]
            print(f"   {phase}: {str(result['phases'][phase])[:300]}", flush=True)
            save()
    finally:
        for proc in procs.values():
            proc.stop()
        save()
    brief = {k: v for k, v in result.items() if k != "fp8"}
    if "fp8" in result:
        brief["fp8"] = {k: v for k, v in result["fp8"].items() if k != "answers"}
    print(json.dumps(brief, indent=1, default=str)[:20000])
    return 0


if __name__ == "__main__":
    sys.exit(main())
