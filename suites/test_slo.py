"""The shipped slo suite (pytest_glm/suites/test_slo.py), collected from the repository: `pytest suites/`."""

from pytest_glm.suites.test_slo import *  # noqa: F403
