"""The shipped surfaces suite (pytest_glm/suites/test_surfaces.py), collected from the repository: `pytest suites/`."""

from pytest_glm.suites.test_surfaces import *  # noqa: F403
