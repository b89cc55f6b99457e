"""The shipped preflight suite (pytest_glm/suites/test_preflight.py), collected from the repository: `pytest suites/`."""

from pytest_glm.suites.test_preflight import *  # noqa: F403
