"""Measuring a deployment: the async load runner, latency figures as `vllm bench serve` defines them,
and Prometheus snapshots and deltas (MTP acceptance)."""
