"""What a run leaves behind, with the real reference deployment: the terminal tables, the JSON report, the
figures on JUnit XML and the plots; and the API key in none of them, nor in the server log."""

from __future__ import annotations

import json
import re
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from tests.integration.servers import SUITES

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("no_leftover_server")]

vllm = pytest.importorskip("vllm", reason="vLLM is not installed (pip install '.[cpu]')")
pytest.importorskip("matplotlib", reason="the plots extra is not installed (pip install '.[plots]')")

SECRET = "sk-glm-hygiene-7Q2vX9"
SELECTION = "preflight or (test_tool_calling and single) or (acceptance and prose) or balanced-b4 or decode_heavy-b1"


def test_report_junit_plots_and_no_secret_anywhere(pytester: pytest.Pytester, tmp_path: Path) -> None:
    report, junit, plots, log = tmp_path / "gate.json", tmp_path / "gate.xml", tmp_path / "plots", tmp_path / "vllm.log"
    pytester._monkeypatch.setenv("GLM_API_KEY", SECRET)
    result = pytester.runpytest_subprocess(
        str(SUITES), "-k", SELECTION, "-p", "no:cacheprovider", "-v", "-s", "--glm-model=glm-tiny",
        f"--glm-report={report}", f"--junitxml={junit}", f"--glm-plots={plots}", f"--glm-server-log={log}",
        timeout=900)
    out = result.stdout.str() + result.stderr.str()
    assert result.ret == pytest.ExitCode.OK, out[-4000:]

    # terminal: one table per suite, then the deployment
    for suite in ("preflight", "tool_calling", "mtp", "slo"):
        assert f"pytest-glm: {suite} — pass" in out
    assert "pytest-glm: deployment under test" in out and "vLLM: 0.32.0" in out
    assert any(re.fullmatch(r"balanced-b4\s+p99_ttft_ms\s+[\d.]+ ms\s+<= [\d.]+\s+pass\s+\(reference cpu.reference.toml\)",
                            line.strip())
               for line in out.splitlines())  # the reference model's measured limit, named as the limit's source

    data = json.loads(report.read_text())
    assert data["verdict"] == "pass" and data["deployment"]["vllm_version"] == "0.32.0"
    assert data["deployment"]["mtp"] is True and "--speculative-config.method" in data["deployment"]["serve_flags"]
    assert {"preflight", "tool_calling", "mtp", "slo"} <= set(data["suites"])
    mtp = {f["figure"]: f for f in data["suites"]["mtp"]["figures"]}
    assert mtp["acceptance_rate"]["passed"] is True and mtp["acceptance_rate"]["limit"] == 0.8
    assert all(c["outcome"] == "passed" for c in data["suites"]["tool_calling"]["cases"])

    properties = [json.loads(p.get("value")) for p in ET.parse(junit).iter("property") if p.get("name") == "glm"]
    assert {p["suite"] for p in properties} == {"mtp", "slo"}
    assert any(p["figure"] == "median_itl_ms" and p["check"] == "balanced-b4" for p in properties)

    pngs = {p.name for p in plots.glob("*.png")}
    assert pngs == {"latency-balanced.png", "latency-decode_heavy.png", "mtp-acceptance.png"}
    assert all((plots / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" for name in pngs)

    leaked = [str(p) for p in [report, junit, log, *plots.rglob("*")] if p.is_file() and SECRET.encode() in p.read_bytes()]
    assert SECRET not in out and not leaked, f"the API key leaked into: {leaked or 'the terminal'}"
