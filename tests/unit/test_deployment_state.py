"""A Deployment has one serialisation (to_state), read back by xdist workers and kept-server records, and
rendered by the JSON report and the terminal; the API key is in none of them."""

from __future__ import annotations

import json

from pytest_glm.catalog.models import resolve_model
from pytest_glm.catalog.profiles import PROFILES
from pytest_glm.config import option_defaults, resolve
from pytest_glm.serving.command import ServeCommand
from pytest_glm.serving.deployment import Deployment
from pytest_glm.serving.endpoint import Endpoint


def _deployment() -> Deployment:
    command = ServeCommand(model="/m/glm-tiny", args=("--tool-call-parser", "glm45", "--api-key", "sk-secret"),
                           env={"VLLM_TARGET_DEVICE": "cpu"}, mtp=True, served_model_name="glm-tiny")
    return Deployment(model=resolve_model("glm-tiny"), profile=PROFILES["cpu"],
                      endpoint=Endpoint("http://127.0.0.1:1234", "glm-tiny", "sk-secret", 120.0), vllm_version="0.32.0",
                      command=command, launched=True, mtp=True, log_path="/tmp/v.log", started_in=30.5, memory_gib=3.85,
                      server_pid=4242)


def test_state_round_trips_every_field_without_the_key() -> None:
    original = _deployment()
    state = original.to_state()
    assert json.loads(json.dumps(state)) == state and "sk-secret" not in json.dumps(state["endpoint"])
    config = resolve({**option_defaults(), "profile": "cpu", "api_key": "sk-worker"})
    back = Deployment.from_state(state, config)
    for name in ("model", "vllm_version", "command", "launched", "mtp", "log_path", "started_in", "memory_gib",
                 "reused", "server_pid", "nodes", "node_runner", "death_file"):
        assert getattr(back, name) == getattr(original, name), name
    assert back.profile.name == "cpu" and back.endpoint.base_url == original.endpoint.base_url
    assert back.endpoint.api_key == "sk-worker"  # each process reads its own key


def test_the_report_and_the_terminal_render_the_state() -> None:
    d = _deployment()
    report = d.to_report()
    assert set(report) == {"model", "family", "precision", "profile", "hardware", "endpoint", "served_model", "how",
                           "vllm_version", "vllm_notes", "mtp", "variants", "command", "flag_reasons", "serve_flags", "started_in_s", "memory_gib",
                           "weights", "shape_run", "nodes", "node_runner"}
    assert (report["weights"], report["shape_run"]) == ("real", None)
    assert report["model"] == "glm-tiny" and report["how"] == "launched" and report["memory_gib"] == 3.85
    assert "sk-secret" not in json.dumps(report["serve_flags"]) + report["command"]
    lines = d.describe()
    assert lines[0] == "model: glm-tiny (family glm45, bf16)" and "server ready in 30.5 s, 3.85 GiB resident" in lines
    assert any(line.startswith("endpoint: http://127.0.0.1:1234 [launched]") for line in lines)


def test_a_multi_node_deployment_names_each_node() -> None:
    nodes = ({"rank": 0, "role": "head", "host": "10.0.0.1", "command": "vllm serve m --nnodes 2 --node-rank 0",
              "log_path": "/tmp/n0.log", "pid": 11},
             {"rank": 1, "role": "follower", "host": "10.0.0.2", "command": "vllm serve m --nnodes 2 --node-rank 1 "
              "--headless", "log_path": "/tmp/n1.log", "pid": 12})
    d = _deployment()
    d.nodes, d.node_runner, d.death_file = nodes, "ssh", "/tmp/died.json"
    back = Deployment.from_state(d.to_state(), resolve({**option_defaults(), "profile": "cpu"}))
    assert back.nodes == nodes and back.death_file == "/tmp/died.json"
    report = d.to_report()
    assert [n["host"] for n in report["nodes"]] == ["10.0.0.1", "10.0.0.2"] and "pid" not in report["nodes"][0]
    lines = d.describe()
    assert "nodes: 2 (ssh runner), vLLM's multi-node runtime" in lines
    assert "  node 1 (10.0.0.2, follower): vllm serve m --nnodes 2 --node-rank 1 --headless" in lines
