"""The shipped suites: ``pytest --pyargs pytest_glm.suites --glm-model zai-org/GLM-4.7-FP8``.

One module per suite (preflight, tool_calling, reasoning, mtp, slo); the cases are in ``data/``. The
repository's ``suites/`` re-exports these modules, so ``pytest suites/`` runs the same tests.
"""
