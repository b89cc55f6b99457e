"""The shipped reasoning suite (pytest_glm/suites/test_reasoning.py), collected from the repository: `pytest suites/`."""

from pytest_glm.suites.test_reasoning import *  # noqa: F403
