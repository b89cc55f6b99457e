"""The root cause of a failed vLLM server, read from its multi-process log, and the known causes it matches.

``data/vllm_logs/`` holds logs that vLLM 0.32.0 (CPU build) wrote when it failed to start (how each was
made: its README). The known-cause samples below quote the message vLLM raises, read in its source; where
that source is vLLM's own, a test checks that the quoted words are still there.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

from pytest_glm.catalog.failures import KNOWN_CAUSES, explain, hints
from pytest_glm.serving.log_cause import (
    API_SERVER,
    ENGINE_CORE,
    WORKER,
    exceptions,
    read_log,
    role,
    root_cause,
)

LOGS = Path(__file__).parent / "data" / "vllm_logs"


def log(name: str) -> str:
    return (LOGS / name).read_text(encoding="utf-8")


# -- recorded logs ---------------------------------------------------------------------------------------
def test_truncated_checkpoint_is_the_workers_safetensors_error() -> None:
    cause = root_cause(log("truncated_checkpoint.log"))
    assert cause is not None
    assert cause.headline == ("Worker: SafetensorError: Error while deserializing header: incomplete metadata, "
                              "file not fully covered")
    assert cause.frames[-1] == ('vllm/model_executor/model_loader/weight_utils.py:1208 in '
                                'safetensors_weights_iterator: with safe_open(st_file, framework="pt") as f:')
    assert all("<genexpr>" not in frame for frame in cause.frames)
    assert cause.known is not None and cause.known.name == "truncated-checkpoint"
    assert "--glm-cache-dir" in cause.known.hint


def test_every_process_of_the_recorded_log_is_read_apart() -> None:
    """The worker's, the engine core's (prefixed, then again unprefixed after "Process EngineCore:") and
    the API server's unprefixed traceback at the end, each in its own process."""
    found = {causes[0].process: [c.exception for c in causes] for causes in exceptions(log("truncated_checkpoint.log")).values()}
    assert set(found) == {"Worker", "EngineCore", "APIServer"}
    assert found["EngineCore"] == ["Exception: WorkerProc initialization failed due to an exception in a background "
                                   "process. See stack trace for root cause."] * 2
    assert found["APIServer"] == ["RuntimeError: Engine core initialization failed. See root cause above. Failed "
                                  "core proc(s): {'EngineCore': 1}"]


def test_tensor_and_data_parallel_labels() -> None:
    """With --tensor-parallel-size/--data-parallel-size the processes are Worker_TP0, EngineCore_DP0..."""
    text = (log("truncated_checkpoint.log").replace("(Worker pid=", "(Worker_TP0 pid=")
            .replace("(EngineCore pid=", "(EngineCore_DP0 pid=").replace("Process EngineCore:", "Process EngineCore_DP0:"))
    cause = root_cause(text)
    assert cause is not None and cause.headline.startswith("Worker_TP0: SafetensorError: ")


def test_missing_weights_in_the_worker() -> None:
    cause = root_cause(log("no_weights.log"))
    assert cause is not None and cause.process == "Worker" and cause.error == "RuntimeError"
    assert cause.message.startswith("Cannot find any model weights with `")
    assert cause.known is not None and cause.known.name == "no-weights"


def test_port_in_use_in_the_api_server() -> None:
    cause = root_cause(log("port_in_use.log"))
    assert cause is not None and cause.headline == "APIServer: OSError: [Errno 98] Address already in use"
    assert cause.frames[-1] == "vllm/entrypoints/launchers/launcher.py:348 in create_server_socket: sock.bind(addr)"
    assert cause.known is not None and cause.known.name == "port-in-use"


def test_pydantic_wrapped_error_says_the_reason_not_the_count() -> None:
    """vLLM's config classes are pydantic dataclasses: "1 validation error for ModelConfig", the reason below."""
    cause = root_cause(log("unknown_architecture.log"))
    assert cause is not None and cause.error == "ValidationError"
    assert cause.message.startswith("Model architectures ['Glm9ForCausalLM'] are not supported for now.")
    assert len(cause.message) <= 240
    assert cause.known is not None and cause.known.name == "unknown-architecture"


def test_a_worker_killed_while_serving() -> None:
    """SIGKILL of the worker of a serving server: the engine core's error names the dead process."""
    for latest in (True, False):
        cause = root_cause(log("worker_killed.log"), latest=latest)
        assert cause is not None and cause.headline == ("EngineCore: Worker proc VllmWorker-0 died unexpectedly "
                                                        "(exit code: None), shutting down executor.")
        assert cause.known is not None and cause.known.name == "worker-died"


def test_read_log_keeps_the_end_of_a_long_log(tmp_path: Path) -> None:
    path = tmp_path / "vllm.log"
    path.write_text("x" * 100 + "\nend\n")
    assert read_log(path, max_bytes=10).endswith("end\n") and len(read_log(path, max_bytes=10)) == 10
    assert read_log(tmp_path / "missing.log") == ""


# -- ranking ---------------------------------------------------------------------------------------------
def test_roles() -> None:
    assert [role(p) for p in ("Worker", "Worker_TP1", "VllmWorker-0", "Worker_PP0_TP1_EP0")] == [WORKER] * 4
    assert [role(p) for p in ("EngineCore", "EngineCore_DP3")] == [ENGINE_CORE] * 2
    assert [role(p) for p in ("APIServer", "ApiServer_0", "")] == [API_SERVER] * 3


def test_a_root_cause_error_ranks_below_any_other() -> None:
    """vLLM's own "see the root cause above" errors only point at another one; an API server's own error
    beats an engine core's pointer."""
    text = ("(APIServer pid=1) ERROR 12-04 05:00:00 [serving.py:9] ValueError: the API server's own error\n"
            "(EngineCore pid=2) ERROR 12-04 05:00:01 [core.py:1] Exception: see stack trace for root cause.\n")
    cause = root_cause(text)
    assert cause is not None and cause.headline == "APIServer: ValueError: the API server's own error"


def test_only_a_pointer_is_still_reported() -> None:
    """An engine core killed outright leaves no traceback: the API server's error and its exit code are all."""
    cause = root_cause("(APIServer pid=1) INFO 12-04 05:00:00 [api_utils.py:1] starting\n"
                       + api_traceback("RuntimeError: Engine core initialization failed. See root cause above. "
                                       "Failed core proc(s): {'EngineCore': -9}"))
    assert cause is not None and cause.propagated and cause.known is not None
    assert cause.known.name == "engine-killed"


def test_first_or_latest_exception_of_a_process() -> None:
    text = ("(APIServer pid=1) ERROR 12-04 05:00:00 [serving.py:9] ValueError: first\n"
            "(APIServer pid=1) INFO 12-04 05:00:01 [launcher.py:9] 127.0.0.1 \"POST /v1/chat/completions\" 500\n"
            "(APIServer pid=1) ERROR 12-04 05:00:02 [serving.py:9] KeyError: 'second'\n")
    assert root_cause(text).exception == "ValueError: first"  # type: ignore[union-attr]
    assert root_cause(text, latest=True).exception == "KeyError: 'second'"  # type: ignore[union-attr]


def test_chained_traceback_reports_its_first_exception_and_matches_all() -> None:
    text = "\n".join([
        "Traceback (most recent call last):",
        '  File "/venv/lib/python3.11/site-packages/transformers/configuration_utils.py", line 9, in get',
        "    raise ValueError(msg)",
        "ValueError: The repository /m contains custom code which must be executed to correctly load the model. "
        "requires you to execute the configuration file",
        "",
        "The above exception was the direct cause of the following exception:",
        "",
        "Traceback (most recent call last):",
        '  File "/venv/lib/python3.11/site-packages/vllm/transformers_utils/config.py", line 423, in parse',
        "    raise RuntimeError(err_msg) from e",
        "RuntimeError: Failed to load the model config. If the model is a custom model not yet available in the "
        "HuggingFace transformers library, consider setting `trust_remote_code=True` in LLM or using the "
        "`--trust-remote-code` flag in the CLI.",
    ])
    cause = root_cause(text)
    assert cause is not None and cause.error == "ValueError" and "RuntimeError: Failed to load the model" in cause.text
    assert cause.known is not None and cause.known.name == "trust-remote-code"


def test_no_exception_no_cause() -> None:
    assert root_cause("(APIServer pid=1) INFO 12-04 05:00:00 [launcher.py:9] Starting vLLM API server\n"
                      "(APIServer pid=1) WARNING 12-04 05:00:00 [x.py:1] ValueError: only a warning\n") is None
    assert root_cause("") is None


def test_warning_lines_and_startup_noise_are_no_cause() -> None:
    """A healthy start's log: its warnings name exceptions (`OSError: [Errno 24]`) without raising one."""
    healthy = "\n".join(line for line in log("truncated_checkpoint.log").splitlines()[:45])
    assert "OSError: [Errno 24]" in healthy
    assert root_cause(healthy) is None


def test_bare_lines_and_usage_errors() -> None:
    """A process that prints its error without a traceback (the test fake), argparse's usage error."""
    fake = "fake-vllm exit: serve m\nINFO loading model\nValueError: fake start-up failure for the test\n"
    assert root_cause(fake).headline == "ValueError: fake start-up failure for the test"  # type: ignore[union-attr]
    usage = "usage: api_server.py [-h] [--host HOST]\napi_server.py: error: unrecognized arguments: --no-such-flag\n"
    cause = root_cause(usage)
    assert cause is not None and cause.message == "api_server.py: error: unrecognized arguments: --no-such-flag"
    assert cause.known is not None and cause.known.name == "unknown-flag"


# -- known causes: one sample each, quoted from where it is raised ---------------------------------------
W, E = "(Worker_TP0 pid=311) ERROR 12-04 04:58:53 [multiproc_executor.py:953]", "(EngineCore_DP0 pid=302) ERROR 12-04 04:58:54 [core.py:1510]"
ENGINE_POINTER = ("Exception: WorkerProc initialization failed due to an exception in a background process. "
                  "See stack trace for root cause.")
API_POINTER = "RuntimeError: Engine core initialization failed. See root cause above. Failed core proc(s): {'EngineCore_DP0': 1}"


def api_traceback(exception: str) -> str:
    return "\n".join(["Traceback (most recent call last):",
                      '  File "/venv/lib/python3.11/site-packages/vllm/v1/engine/utils.py", line 1431, in wait',
                      "    raise RuntimeError(", exception]) + "\n"


def prefixed(prefix: str, intro: str, exception: str) -> list[str]:
    return [f"{prefix} {intro}", f"{prefix} Traceback (most recent call last):",
            f'{prefix}   File "/venv/lib/python3.11/site-packages/vllm/v1/worker/gpu_worker.py", line 594, in load_model',
            f"{prefix}     self.model_runner.load_model(load_dummy_weights=load_dummy_weights)",
            *(f"{prefix} {line}" for line in exception.splitlines())]


def failure(where: str, exception: str) -> str:
    """A start-up that fails in ``where`` (worker, engine, engine-line, api), as vLLM 0.32 logs it: the failing process's
    traceback, then each process above it reporting the one below."""
    lines = ["(APIServer pid=290) INFO 12-04 04:58:37 [api_utils.py:286] non-default args: {'model': '/m'}"]
    if where == "worker":
        lines += prefixed(W, "WorkerProc failed to start.", exception) + prefixed(E, "EngineCore failed to start.",
                                                                                   ENGINE_POINTER)
    elif where == "engine":
        lines += prefixed(E, "EngineCore failed to start.", exception)
    elif where == "engine-line":  # an error logged, not raised
        lines += [f"(EngineCore_DP0 pid=302) ERROR 12-04 05:09:53 [multiproc_executor.py:315] {exception}"]
    if where == "api":
        return "\n".join(lines) + "\n" + api_traceback(exception)
    return "\n".join(lines) + "\n" + api_traceback(API_POINTER)


#: name -> (the process that raises it, the exception as logged, the vLLM file that raises it and words of
#: its message there; None where the message is another package's).
SAMPLES: dict[str, tuple[str, str, tuple[str, str] | None]] = {
    "truncated-checkpoint": ("worker", "safetensors._safetensors_rust.SafetensorError: Error while deserializing "
                             "header: invalid header length", None),
    "no-weights": ("worker", "RuntimeError: Cannot find any model weights with `/models/GLM-4.7-FP8`",
                   ("model_executor/model_loader/default_loader.py", "Cannot find any model weights with")),
    "no-config": ("api", "ValueError: Invalid repository ID or local directory specified: '/models/glm'.",
                  ("transformers_utils/config.py", "Invalid repository ID or local directory specified:")),
    "missing-file": ("worker", "FileNotFoundError: [Errno 2] No such file or directory: "
                     "'/models/glm/model-00002-of-00040.safetensors'", None),
    "weights-do-not-fit-config": ("worker", "AssertionError: Attempted to load weight (torch.Size([151552, 4096])) "
                                  "into parameter (torch.Size([151360, 4096]))",
                                  ("model_executor/model_loader/weight_utils.py", "Attempted to load weight (")),
    "unknown-architecture": ("api", "ValueError: Model architectures ['Glm4MoeLiteForCausalLM'] are not supported "
                             "for now. Supported architectures: dict_keys(['AfmoeForCausalLM'])",
                             ("model_executor/models/registry.py", "are not supported for now. ")),
    "trust-remote-code": ("api", "RuntimeError: Failed to load the model config. If the model is a custom model "
                          "not yet available in the HuggingFace transformers library, consider setting "
                          "`trust_remote_code=True` in LLM or using the `--trust-remote-code` flag in the CLI.",
                          ("transformers_utils/config.py", "`--trust-remote-code` flag in the CLI.")),
    "tokenizer": ("api", "OSError: Can't load tokenizer for '/models/glm'. If you were trying to load it from "
                  "'https://huggingface.co/models', make sure you don't have a local directory with the same name.",
                  None),
    "tokenizer-vocab-mismatch": ("api", "vllm.exceptions.VLLMValidationError: Token id 151552 is out of vocabulary "
                                 "(parameter=prompt)", ("renderers/base.py", "is out of vocabulary")),
    "no-chat-template": ("api", "vllm.renderers.chat_utils.ChatTemplateResolutionError: As of transformers v4.44, "
                         "default chat template is no longer allowed, so you must provide a chat template if the "
                         "tokenizer does not define one.", ("renderers/hf.py", "default chat template is no longer ")),
    "structured-output-backend": ("engine", "ModuleNotFoundError: No module named 'xgrammar'",
                                  ("v1/structured_output/backend_xgrammar.py", 'LazyLoader("xgr", globals(), "xgrammar")')),
    "kv-cache-too-small": ("engine", "ValueError: To serve at least one request with the model's max seq len "
                           "(131072), (24.00 GiB KV cache is needed, which is larger than the available KV cache "
                           "memory (9.34 GiB). Based on the available memory, the estimated maximum model length is "
                           "51008. Try increasing `gpu_memory_utilization`",
                           ("v1/core/kv_cache_utils.py", "cache is needed, which is larger than the available KV cache ")),
    "no-kv-cache-memory": ("engine", "ValueError: No available memory for the cache blocks. Try increasing "
                           "`gpu_memory_utilization` when initializing the engine",
                           ("v1/core/kv_cache_utils.py", "No available memory for the cache blocks. ")),
    "memory-taken": ("worker", "ValueError: Free memory on device cuda:0 (20.1/139.8 GiB) on startup is less than "
                     "desired GPU memory utilization (0.9, 125.8 GiB). Decrease GPU memory utilization or reduce GPU "
                     "memory used by other processes.", ("v1/worker/utils.py", "is less than desired GPU memory utilization ")),
    "max-model-len-too-long": ("api", "pydantic_core._pydantic_core.ValidationError: 1 validation error for "
                               "ModelConfig\n  Value error, User-specified max_model_len (262144) is greater than the "
                               "derived max_model_len (max_position_embeddings=202752 or model_max_length=None in "
                               "model's config.json). To allow overriding this maximum, set the env var "
                               "VLLM_ALLOW_LONG_MAX_MODEL_LEN=1. [type=value_error, input_value=ArgsKwargs((), {}), "
                               "input_type=ArgsKwargs]",
                               ("config/model.py", "than the derived max_model_len (")),
    "worker-died": ("engine-line", "Worker proc VllmWorker-0 died unexpectedly (exit code: -9), shutting down executor.",
                    ("v1/executor/multiproc_executor.py", '"Worker proc %s died unexpectedly (exit code: %s), "')),
    "engine-killed": ("none", "RuntimeError: Engine core initialization failed. See root cause above. Failed core "
                      "proc(s): {'EngineCore_DP0': -9}", ("v1/engine/utils.py", "Failed core proc(s): ")),
    "torchvision-mismatch": ("api", "RuntimeError: operator torchvision::nms does not exist", None),
    "no-vllm-metadata": ("api", "importlib.metadata.PackageNotFoundError: No package metadata was found for vllm", None),
    "unknown-flag": ("api", "argparse.ArgumentError: argument --tool-call-parser: invalid choice: 'glm47' "
                     "(choose from 'glm45', 'hermes')", None),
    "cpu-mtp-triton": ("worker", "TypeError: Cannot inspect kernel parameters for function "
                       "<function _compute_slot_mapping_kernel at 0x7f>", None),
    "port-in-use": ("api", "OSError: [Errno 98] Address already in use",
                    ("entrypoints/launchers/launcher.py", "sock.bind(addr)")),
    "gpu-out-of-memory": ("worker", "torch.OutOfMemoryError: CUDA out of memory. Tried to allocate 1.75 GiB. GPU 0 "
                          "has a total capacity of 139.80 GiB of which 1.02 GiB is free.",
                          ("v1/worker/gpu_model_runner.py", "Failed to load model - not enough GPU memory. ")),
    "out-of-memory": ("worker", "RuntimeError: DefaultCPUAllocator: not enough memory: you tried to allocate "
                      "8589934592 bytes.", None),
}


def test_every_known_cause_has_a_sample() -> None:
    assert [c.name for c in KNOWN_CAUSES] == list(SAMPLES)
    assert len({c.name for c in KNOWN_CAUSES}) == len(KNOWN_CAUSES)


@pytest.mark.parametrize("name", list(SAMPLES))
def test_known_cause(name: str) -> None:
    where, exception, _ = SAMPLES[name]
    text = failure("api" if where == "none" else where, exception)
    cause = root_cause(text)
    assert cause is not None
    expected = {"worker": "Worker_TP0", "engine": "EngineCore_DP0", "engine-line": "EngineCore_DP0", "api": "APIServer",
                "none": "APIServer"}[where]
    assert cause.process == expected, cause
    assert cause.known is not None and cause.known.name == name, (cause.text, cause.known)
    assert cause.error == ("" if where == "engine-line" else exception.split(":", 1)[0].rsplit(".", 1)[-1])
    assert cause.known.hint and cause.known.explanation and cause.known.source


def _vllm_source() -> Path | None:
    spec = importlib.util.find_spec("vllm")
    return Path(next(iter(spec.submodule_search_locations))) if spec and spec.submodule_search_locations else None


@pytest.mark.parametrize("name", [n for n, (_, _, quote) in SAMPLES.items() if quote])
def test_the_sample_is_quoted_from_vllms_source(name: str) -> None:
    """The words each sample rests on are in the vLLM file that raises them (a reworded message shows here)."""
    root = _vllm_source()
    if root is None:
        pytest.skip("vLLM is not installed")
    relative, words = SAMPLES[name][2]  # type: ignore[misc]
    assert relative in next(c.source for c in KNOWN_CAUSES if c.name == name)
    assert words in (root / relative).read_text(encoding="utf-8"), f"{words!r} not in vllm/{relative}"


def test_explain_and_hints() -> None:
    assert explain("nothing wrong here") is None and hints("INFO: Started server process") == []
    both = hints("OSError: [Errno 98] Address already in use\nCUDA out of memory")
    assert [h.split(":")[0] for h in both] == ["the port is taken", "the model does not fit"]


# -- where the root cause is shown -----------------------------------------------------------------------
def server(log_path: Path):  # type: ignore[no-untyped-def]
    from pytest_glm.serving.command import ServeCommand, VLLMEntry
    from pytest_glm.serving.launch import ServerProcess

    return ServerProcess(ServeCommand("/models/glm-tiny", ("--enforce-eager",)), VLLMEntry("vllm", False), log_path,
                         host="127.0.0.1", port=8000, startup_timeout=60)


def test_a_failed_start_says_its_root_cause_first() -> None:
    text = str(server(LOGS / "truncated_checkpoint.log")._failure("vLLM exited during start-up (exit code 1)"))
    lines = text.splitlines()
    assert lines[0] == ("vLLM failed to start: Worker: SafetensorError: Error while deserializing header: "
                        "incomplete metadata, file not fully covered")
    assert lines[1].startswith("  at vllm/model_executor/model_loader/") and lines[2].startswith("  at ")
    assert lines[3].startswith("cause: a .safetensors file of the checkpoint is truncated")
    assert lines[4].startswith("hint: download or copy the checkpoint again")
    assert lines[5:7] == ["vLLM exited during start-up (exit code 1)", "command: vllm serve /models/glm-tiny --enforce-eager"]
    assert lines[7] == "--- last lines of the vLLM log ---"
    assert len(lines) == 8 + 12 + 1 and lines[-1].startswith("full log: ")
    assert text.count("SafetensorError") == 1  # the 12-line tail is the API server's traceback


def test_a_server_that_died_says_its_root_cause_first() -> None:
    text = str(server(LOGS / "worker_killed.log").died())
    assert text.splitlines()[0] == ("vLLM server died (exit code None): EngineCore: Worker proc VllmWorker-0 died "
                                    "unexpectedly (exit code: None), shutting down executor.")
    assert "hint: look for a segfault or the OOM killer" in text


def test_without_a_root_cause_the_report_is_as_before(tmp_path: Path) -> None:
    path = tmp_path / "vllm.log"
    path.write_text("".join(f"INFO still loading... {i}\n" for i in range(50)))
    text = str(server(path)._failure("vLLM did not become healthy within 3 s", "raise --glm-startup-timeout"))
    lines = text.splitlines()
    assert lines[:3] == ["vLLM did not become healthy within 3 s", "raise --glm-startup-timeout",
                         "command: vllm serve /models/glm-tiny --enforce-eager"]
    assert len(lines) == 4 + 40 + 1


def test_server_error_is_the_latest_incidents_root_cause(tmp_path: Path) -> None:
    """For an HTTP 5xx: the error of the request that just failed, not one of an earlier request, named with
    its process when the API server only relayed it."""
    from pytest_glm.catalog.models import resolve_model
    from pytest_glm.catalog.profiles import PROFILES
    from pytest_glm.serving.deployment import Deployment
    from pytest_glm.serving.endpoint import Endpoint

    path = tmp_path / "vllm.log"
    deployment = Deployment(model=resolve_model("glm-tiny"), profile=PROFILES["cpu"], endpoint=Endpoint("http://x", "m"),
                            vllm_version="0.32.0", command=None, launched=True, mtp=True, log_path=str(path))
    path.write_text("(APIServer pid=8) ERROR 12-04 05:00:00 [serving.py:830] ValueError: an earlier request\n"
                    "(APIServer pid=8) INFO 12-04 05:00:00 [launcher.py:9] 127.0.0.1 \"POST /v1/chat/completions\" 500\n"
                    "(APIServer pid=8) ERROR 12-04 05:00:05 [serving.py:830] Error in chat completion\n"
                    "(APIServer pid=8) ERROR 12-04 05:00:05 [serving.py:830] Traceback (most recent call last):\n"
                    '(APIServer pid=8) ERROR 12-04 05:00:05 [serving.py:830]   File "/v/vllm/x.py", line 1, in f\n'
                    "(APIServer pid=8) ERROR 12-04 05:00:05 [serving.py:830] ModuleNotFoundError: No module named "
                    "'lmformatenforcer'\n")
    assert deployment.server_error() == "ModuleNotFoundError: No module named 'lmformatenforcer'"
    path.write_text(log("worker_killed.log"))
    assert deployment.server_error().startswith("EngineCore: Worker proc VllmWorker-0 died unexpectedly")
    path.write_text("(APIServer pid=8) INFO 12-04 05:00:00 [launcher.py:9] all well\n")
    assert deployment.server_error() == ""
