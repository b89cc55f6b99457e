"""pytest-glm: an acceptance gate for GLM-4.x deployments served by vLLM.

The plugin lives in :mod:`pytest_glm.plugin` (entry point ``pytest11``); kept free of imports here so
that helper processes (``python -m pytest_glm.serving.reaper``) start fast.
"""

__version__ = "0.1.0"
