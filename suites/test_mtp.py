"""The shipped mtp suite (pytest_glm/suites/test_mtp.py), collected from the repository: `pytest suites/`."""

from pytest_glm.suites.test_mtp import *  # noqa: F403
