"""pytest-glm as users install it: a wheel (and an sdist) in a fresh virtualenv, the shipped suites run with
``pytest --pyargs pytest_glm.suites`` from outside the checkout, against the reference model.

The fresh virtualenv gets only pytest-glm from the built artefact (``--no-deps``); its dependencies (vLLM,
torch, pytest...) are borrowed from the project's environment through a path file, so the test checks
the package (its modules, suites, case data, weights, templates, entry point) without reinstalling
gigabytes of vLLM. The path file adds that directory without running its own path files, so the
checkout's editable install stays out of the fresh environment.
"""

from __future__ import annotations

import re
import site
import subprocess
import sys
import sysconfig
import venv
from pathlib import Path

import pytest

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("no_leftover_server")]

vllm = pytest.importorskip("vllm", reason="vLLM is not installed (pip install '.[cpu]')")

ROOT = Path(__file__).parents[2]


def _build(kind: str, out: Path) -> Path:
    """Build the project's wheel or sdist with setuptools' own PEP 517 backend (no download)."""
    code = (f"from setuptools import build_meta; import sys; "
            f"print(build_meta.build_{kind}(sys.argv[1]))")
    done = subprocess.run([sys.executable, "-c", code, str(out)], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    return out / done.stdout.strip().splitlines()[-1]


def _fresh_env(path: Path, artefact: Path) -> Path:
    """A new virtualenv holding ``artefact`` alone, dependencies borrowed from this environment."""
    venv.EnvBuilder(with_pip=True, clear=True).create(path)
    python = path / "bin" / "python"
    purelib = subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                             capture_output=True, text=True, check=True).stdout.strip()
    borrowed = [p for p in {*site.getsitepackages(), sysconfig.get_paths()["purelib"]} if Path(p).is_dir()]
    (Path(purelib) / "borrowed-dependencies.pth").write_text("\n".join(borrowed) + "\n")
    done = subprocess.run([str(python), "-m", "pip", "install", "-q", "--no-deps",
                           str(artefact)], capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    return python


def _where(python: Path, outside: Path) -> str:
    done = subprocess.run([str(python), "-c", "import pytest_glm; print(pytest_glm.__file__)"], cwd=outside,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout.strip()


def test_wheel_runs_the_shipped_suites_from_outside_the_checkout(tmp_path: Path) -> None:
    wheel = _build("wheel", tmp_path)
    python = _fresh_env(tmp_path / "env", wheel)
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    assert _where(python, outside).startswith(str(tmp_path / "env")), "pytest_glm was not imported from the wheel"
    done = subprocess.run([str(python), "-m", "pytest", "--pyargs", "pytest_glm.suites", "-p", "no:cacheprovider",
                           "-q", "--glm-model", "glm-tiny", "-k",
                           "preflight or single.weather or mtp_acceptance or balanced-b1"],
                          cwd=outside, capture_output=True, text=True, timeout=900)
    out = done.stdout
    assert done.returncode == 0, out[-4000:] + done.stderr[-2000:]
    assert "pytest-glm: tool_calling — pass" in out and "pytest-glm: preflight — pass" in out
    assert "pytest-glm: mtp — pass" in out and "pytest-glm: slo — pass" in out
    assert " failed" not in out.splitlines()[-1]


def test_sdist_installs_with_its_suites_and_data(tmp_path: Path) -> None:
    sdist = _build("sdist", tmp_path)
    assert sdist.name.endswith(".tar.gz")
    python = _fresh_env(tmp_path / "env", sdist)
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    installed = Path(_where(python, outside)).parent
    for needed in ("suites/data/tool_calling.json", "suites/test_tool_calling.py", "reference/answers/glm-tiny.json",
                   "reference/weights/glm-tiny-variant.safetensors", "reference/templates/glm47.jinja",
                   "catalog/thresholds/cpu.reference.toml"):
        assert (installed / needed).is_file(), f"{needed} is missing from the sdist install"
    done = subprocess.run([str(python), "-m", "pytest", "--pyargs", "pytest_glm.suites", "--collect-only", "-q",
                           "-p", "no:cacheprovider"], cwd=outside, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-2000:]
    here = subprocess.run([sys.executable, "-m", "pytest", "suites/", "--collect-only", "-q", "-p", "no:cacheprovider"],
                          cwd=ROOT, capture_output=True, text=True, timeout=300)
    collected = re.findall(r"(\d+) tests? collected", done.stdout)
    assert collected and collected == re.findall(r"(\d+) tests? collected", here.stdout), (done.stdout[-500:], here.stdout[-500:])
