"""What a deployment can do that the suites need, learnt once: its served context, whether it parses tool
calls and reasoning, whether MTP runs where it is expected.

A deployment that lacks one of these fails every test that needs it, each with the same HTTP 400 or the
same finding. Instead, the first test that meets the gap (preflight's, which runs first) fails naming the
numbers and the flag to change, and every later test that needs it is skipped with that reason
(:meth:`Capabilities.refuse`).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

#: A tool so small that the request is judged on its flags alone (``max_tokens`` 1: no generation to speak of).
PROBE_TOOL = {"type": "function", "function": {"name": "probe", "parameters": {"type": "object", "properties": {}}}}


@dataclass
class Capabilities:
    """Facts about one deployment, each probed on first use. ``deployment`` has ``endpoint``, ``flags``,
    ``launched`` and ``mtp_expectation()`` (serving.deployment.Deployment)."""

    deployment: Any
    _facts: dict[str, Any] = field(default_factory=dict)
    _refused: dict[str, tuple[str, str]] = field(default_factory=dict)  # gap -> (the test that failed, why)

    def _fact(self, name: str, probe: Any) -> Any:
        if name not in self._facts:
            self._facts[name] = probe()
        return self._facts[name]

    def served_context(self) -> int:
        """``max_model_len`` as /v1/models reports it (0: not reported)."""
        return int(self._fact("context", self.deployment.endpoint.max_model_len))

    def kv_capacity(self) -> Any:
        """The server's KV-cache capacity (catalog.kv_capacity.KVCapacity): from ``/metrics``
        (``vllm:cache_config_info``), else from a launched server's log; None when neither says."""
        return self._fact("kv capacity", self._probe_kv_capacity)

    def _probe_kv_capacity(self) -> Any:
        from pytest_glm.catalog.kv_capacity import from_log, from_metrics

        try:
            found = from_metrics(self.deployment.endpoint.metrics_text())
        except Exception:  # an endpoint without /metrics: the log may say
            found = None
        log_path = getattr(self.deployment, "log_path", None)
        if found is None and log_path:
            try:
                found = from_log(Path(log_path).read_text(encoding="utf-8", errors="replace"))
            except OSError:
                found = None
        return found

    def tool_parser_problem(self) -> str | None:
        """Why tool calls cannot be asked for (``tool_choice`` auto is refused), or None."""
        return self._fact("tool parser", self._probe_tool_choice)

    def _probe_tool_choice(self) -> str | None:
        endpoint = self.deployment.endpoint
        body = {"model": endpoint.model, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 1,
                "tools": [PROBE_TOOL], "tool_choice": "auto"}
        try:
            resp = httpx.post(f"{endpoint.openai_base_url}/chat/completions", json=body, headers=endpoint._headers(),
                              timeout=endpoint.request_timeout)
        except httpx.HTTPError:
            return None  # not this probe's business: the requests themselves will say
        if resp.status_code != 400:
            return None
        try:
            message = str(resp.json().get("error", {}).get("message") or resp.text)
        except ValueError:
            message = resp.text
        if "tool" not in message.lower():
            return None
        return (f"the server refuses tool_choice 'auto' (HTTP 400: {message.strip()[:200]}): it runs without "
                f"--enable-auto-tool-choice or --tool-call-parser, so no tool call can be asked for; launch it "
                f"with --enable-auto-tool-choice --tool-call-parser {self._parser()}")

    def reasoning_parser_problem(self) -> str | None:
        """Why reasoning cannot be judged: a server this run launched without ``--reasoning-parser`` (an
        endpoint's flags are unknown; its answers' findings say it instead)."""
        flags = tuple(self.deployment.flags)
        if not self.deployment.launched or any(f.startswith("--reasoning-parser") for f in flags):
            return None
        return (f"the server was launched without --reasoning-parser, so the reasoning of every thinking-on "
                f"answer reaches the client as content; launch it with --reasoning-parser {self._parser()}")

    def mtp_problem(self) -> str | None:
        """Why the MTP checks cannot run: MTP is expected and /metrics shows no speculative decoding."""
        from pytest_glm.measuring.metrics import parse

        expected, why = self.deployment.mtp_expectation()
        if not expected:
            return None
        has = self._fact("mtp", lambda: parse(self.deployment.endpoint.metrics_text()).has_spec_decode)
        if has:
            return None
        return (f"MTP is expected ({why}), but /metrics has no speculative-decoding counters: the server runs "
                f"without MTP; launch it with --speculative-config.method mtp "
                f"--speculative-config.num_speculative_tokens 1 (or pass --glm-no-mtp if that is intended)")

    def _parser(self) -> str:
        return "glm47" if getattr(self.deployment.model, "family", "") == "glm47" else "glm45"

    def refuse(self, gap: str, reason: str, nodeid: str | None = None) -> None:
        """Fail the first test that meets ``gap`` with ``reason``; skip every later one, naming it."""
        nodeid = nodeid or os.environ.get("PYTEST_CURRENT_TEST", "?").split(" ")[0]
        first, first_reason = self._refused.setdefault(gap, (nodeid, reason))
        if first == nodeid:
            pytest.fail(reason, pytrace=False)
        pytest.skip(f"{first_reason} (failed once, in {first.split('::', 1)[-1]})")
