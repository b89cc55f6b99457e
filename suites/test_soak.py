"""The shipped soak suite (pytest_glm/suites/test_soak.py), collected from the repository: `pytest suites/ --glm-soak 30m`."""

from pytest_glm.suites.test_soak import *  # noqa: F403
