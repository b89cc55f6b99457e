"""The shipped tool_calling suite (pytest_glm/suites/test_tool_calling.py), collected from the repository: `pytest suites/`."""

from pytest_glm.suites.test_tool_calling import *  # noqa: F403
