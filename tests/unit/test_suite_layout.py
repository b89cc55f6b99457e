"""The repository's suites/ re-exports exactly the suites shipped in the package, so that `pytest suites/`
and `pytest --pyargs pytest_glm.suites` run the same tests."""

from __future__ import annotations

from pathlib import Path

import pytest_glm.suites

ROOT = Path(__file__).parents[2]
SHIPPED = Path(pytest_glm.suites.__file__).parent


def test_every_shipped_suite_is_re_exported_and_nothing_else():
    shipped = sorted(p.name for p in SHIPPED.glob("test_*.py"))
    here = sorted(p.name for p in (ROOT / "suites").glob("test_*.py"))
    assert shipped == here and len(shipped) == 7
    for name in here:
        text = (ROOT / "suites" / name).read_text()
        assert f"from pytest_glm.suites.{name.removesuffix('.py')} import *" in text
        assert "def test_" not in text  # the tests live in the package only


def test_the_case_data_ships_in_the_package():
    assert {p.name for p in (SHIPPED / "data").glob("*.json")} == {"tools.json", "tool_calling.json", "reasoning.json"}
