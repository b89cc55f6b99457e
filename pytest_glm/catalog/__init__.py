"""What the gate knows before anything runs: the GLM model registry, hardware profiles and their
thresholds, the latency figures' names, and what each vLLM version does. Pure data and lookups."""
