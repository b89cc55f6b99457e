"""Build the offline wheel kit that brings a newer vLLM (and its torch) to a GPU box with no network.

    python benchmarks/gpu_kit.py --lock benchmarks/gpu-kit-vllm-0.34.txt --out .gpukit [--chunk-mib 52]

The box has Python 3.12 and torch 2.11+cu130 with CUDA 13 libraries, and takes a limited size per transfer.
vLLM 0.33 and 0.34 pin torch 2.14, so the kit carries torch, triton and vLLM, and every other package of the
lock file: the dependency closure of vLLM resolved for CPython 3.12 on manylinux x86-64, less what the box
already has at a version that serves (the lock file's comments say what was left out and why).

Three wheels are repacked without files the serving path never loads, which saves transfers:
vLLM without FlashAttention 2 (pre-Hopper GPUs only; its import is optional in
``vllm_flash_attn/flash_attn_interface.py``) and without the ``vllm-rs`` frontend binary (only with
``VLLM_USE_RUST_FRONTEND=1``); triton without its Blackwell ``ptxas`` and the static CUPTI libraries of its
profiler. Each wheel over the chunk size is split into parts; parts and wheels are packed first-fit
decreasing into chunk folders ``OUT/kNN/cNN`` (the ``.k*/cNN`` layout benchmarks/gpu-device.sh copies), one
per transfer. ``c01`` holds ``MANIFEST``, ``SHA256SUMS`` and ``install.sh``, which reassembles the parts,
checks every wheel and installs them all with ``--no-deps``.
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import io
import re
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

#: Files dropped from a wheel on repacking, by the wheel's distribution name (see the module docstring).
DROP = {
    "vllm": re.compile(r"vllm/(vllm_flash_attn/_vllm_fa2_C\.abi3\.so|vllm-rs)$"),
    "triton": re.compile(r"triton/backends/nvidia/(bin/ptxas-blackwell|lib/cupti[^/]*/.*\.a)$"),
}

PLATFORMS = ["manylinux_2_35_x86_64", "manylinux_2_34_x86_64", "manylinux_2_31_x86_64", "manylinux_2_28_x86_64",
             "manylinux_2_27_x86_64", "manylinux_2_24_x86_64", "manylinux_2_17_x86_64", "manylinux2014_x86_64",
             "manylinux1_x86_64", "linux_x86_64", "any"]


def pins(lock: Path) -> list[str]:
    """The ``name==version`` lines of the lock file (comments and blank lines skipped)."""
    out = []
    for number, raw in enumerate(lock.read_text().splitlines(), 1):
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        if not re.fullmatch(r"[A-Za-z0-9_.\-]+==[A-Za-z0-9_.+\-]+", line):
            sys.exit(f"{lock}:{number}: expected name==version, got {raw!r}")
        out.append(line)
    return out


def download(requirements: list[str], into: Path) -> None:
    into.mkdir(parents=True, exist_ok=True)
    if not requirements:
        return
    cmd = [sys.executable, "-m", "pip", "download", "-q", "--no-deps", "--only-binary=:all:", "--python-version",
           "3.12", "--implementation", "cp", "--abi", "cp312", "--abi", "abi3", "--abi", "none", "-d", str(into)]
    for platform in PLATFORMS:
        cmd += ["--platform", platform]
    subprocess.run([*cmd, *requirements], check=True)


def repack(wheel: Path, drop: re.Pattern[str]) -> int:
    """Rewrite ``wheel`` without the files ``drop`` matches (and their RECORD rows); bytes saved."""
    before = wheel.stat().st_size
    tmp = wheel.with_suffix(".tmp")
    with zipfile.ZipFile(wheel) as src, zipfile.ZipFile(tmp, "w", zipfile.ZIP_DEFLATED) as dst:
        for info in src.infolist():
            if drop.match(info.filename):
                continue
            data = src.read(info)
            if info.filename.endswith(".dist-info/RECORD"):
                rows = [r for r in csv.reader(io.StringIO(data.decode())) if r and not drop.match(r[0])]
                buffer = io.StringIO()
                csv.writer(buffer, lineterminator="\n").writerows(rows)
                data = buffer.getvalue().encode()
            dst.writestr(info, data, compress_type=zipfile.ZIP_DEFLATED, compresslevel=6)
    tmp.replace(wheel)
    return before - wheel.stat().st_size


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def pack(wheels: list[Path], out: Path, cap: int) -> list[list[Path]]:
    """Split wheels over ``cap`` into parts, then pack everything first-fit decreasing into chunks."""
    parts_dir = out / "parts"
    parts_dir.mkdir(exist_ok=True)
    items: list[Path] = []
    for wheel in wheels:
        if wheel.stat().st_size <= cap:
            items.append(wheel)
            continue
        with open(wheel, "rb") as fh:
            for index, block in enumerate(iter(lambda: fh.read(cap), b"")):
                part = parts_dir / f"{wheel.name}.part-{index:02d}"
                part.write_bytes(block)
                items.append(part)
    items.sort(key=lambda p: (-p.stat().st_size, p.name))
    bins: list[tuple[int, list[Path]]] = []
    for item in items:
        size = item.stat().st_size
        for i, (used, files) in enumerate(bins):
            if used + size <= cap:
                bins[i] = (used + size, [*files, item])
                break
        else:
            bins.append((size, [item]))
    return [files for _, files in bins]


INSTALL = """#!/usr/bin/env bash
# Reassemble and install the kit from ../cNN/ (written by benchmarks/gpu_kit.py). Usage: bash install.sh [SITE]
# SITE: a --target folder for PYTHONPATH, or 'system' (default) to upgrade the running Python's packages in
# place. The box's torchvision and torchaudio, built for its older torch, are removed: vLLM serves text
# without them, and transformers would import them and fail beside the new torch.
set -euo pipefail
K=$(cd "$(dirname "$0")/.." && pwd); SITE=${1:-system}; T=$(mktemp -d); trap 'rm -rf "$T"' EXIT
missing=$(awk '/^c[0-9][0-9] /{print $1}' "$K/c01/MANIFEST" | while read -r c; do [ -d "$K/$c" ] || echo "$c"; done)
[ -z "$missing" ] || { echo "kit: missing chunks $missing" >&2; exit 3; }
while read -r wheel parts; do cat $(for p in $parts; do echo "$K/$p"; done) > "$T/$wheel"; done < "$K/c01/SPLIT"
for f in "$K"/c[0-9][0-9]/*.whl; do ln -sf "$f" "$T/"; done
(cd "$T" && sha256sum -c --quiet "$K/c01/SHA256SUMS")
PY=${PYTHON:-python3}
if [ "$SITE" = system ]; then
  $PY -m pip uninstall -y -q torchvision torchaudio torchcodec 2>/dev/null || true
  $PY -m pip install -q --no-index --no-deps --no-compile --upgrade "$T"/*.whl
else
  rm -rf "$SITE"; $PY -m pip install -q --no-index --no-deps --no-compile --target "$SITE" "$T"/*.whl
fi
echo "kit installed ($SITE)"
"""


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--lock", type=Path, required=True, help="pinned name==version lines")
    parser.add_argument("--out", type=Path, required=True, help="kit folder (an ignored top-level folder)")
    parser.add_argument("--chunk-mib", type=int, default=52, help="size of one transfer's chunk")
    parser.add_argument("--wheels", type=Path, help="reuse wheels already downloaded here")
    args = parser.parse_args()
    cap = args.chunk_mib << 20
    out = args.out
    wheels_dir = args.wheels or out / "wheels"
    for old in [out / "parts", *out.glob("k[0-9][0-9]")]:
        shutil.rmtree(old, ignore_errors=True)
    out.mkdir(parents=True, exist_ok=True)
    requirements = pins(args.lock)
    names = {re.sub(r"[-_.]+", "_", r.split("==")[0]).lower(): r for r in requirements}
    have = {p.name.split("-")[0].lower(): p for p in wheels_dir.glob("*.whl")} if wheels_dir.exists() else {}
    download([r for n, r in names.items() if n not in have], wheels_dir)
    wheels = []
    for name, requirement in names.items():
        version = requirement.split("==")[1]
        found = [p for p in wheels_dir.glob("*.whl") if p.name.lower().startswith(f"{name}-{version}-")]
        if not found:
            sys.exit(f"{args.lock}: no wheel downloaded for {requirement}")
        wheel = found[0]
        if name in DROP:
            target = out / "repacked" / wheel.name
            target.parent.mkdir(exist_ok=True)
            if not target.exists():
                shutil.copy(wheel, target)
                print(f"repacked {wheel.name}: {repack(target, DROP[name]) / 2**20:.0f} MiB less")
            wheel = target
        wheels.append(wheel)
    chunks = pack(wheels, out, cap)
    manifest, split, placed = [], {}, {}
    for number, files in enumerate(chunks, 1):
        chunk = f"c{number:02d}"
        folder = out / f"k{number:02d}" / chunk
        folder.mkdir(parents=True)
        for item in files:
            shutil.copy(item, folder / item.name)
            placed[item.name] = chunk
        size = sum(f.stat().st_size for f in files) / 2**20
        manifest.append(f"{chunk} {size:.1f} MiB: " + " ".join(f.name for f in files))
    for wheel in wheels:
        if wheel.name not in placed:
            split[wheel.name] = sorted(n for n in placed if n.startswith(wheel.name + ".part-"))
    first = out / "k01" / "c01"
    (first / "MANIFEST").write_text("\n".join(manifest) + "\n")
    (first / "SPLIT").write_text("".join(f"{w} {' '.join(f'{placed[p]}/{p}' for p in ps)}\n" for w, ps in split.items()))
    (first / "SHA256SUMS").write_text("".join(f"{sha256(w)}  {w.name}\n" for w in wheels))
    (first / "install.sh").write_text(INSTALL)
    total = sum(w.stat().st_size for w in wheels) / 2**20
    print("\n".join(manifest))
    print(f"{len(wheels)} wheels, {total:.0f} MiB in {len(chunks)} chunks of <= {args.chunk_mib} MiB: carry "
          f"{out.name}/k01 ... one per call (benchmarks/gpu-device.sh copies .*/kNN/cNN)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
