"""Serving a deployment: the `vllm serve` command for model x profile x vLLM version, the launched process
(own process group, reaper, always stopped), and the HTTP endpoint of anything already running."""
