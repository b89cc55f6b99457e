"""The package is layered: a module imports only its own layer and the ones below it (function-level
imports included), so a newcomer can read it bottom-up and a change to reporting cannot break serving."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).parents[2] / "pytest_glm"

#: Lowest first. A module may import from its own rank or a lower one.
LAYERS = {
    "exceptions": 0,
    "catalog": 1, "cluster": 1,
    "judging": 2, "measuring": 2,
    "reference": 3,
    "config": 4,
    "serving": 5,
    "reporting": 6,
    "session": 7,
    "plugin": 8, "factories": 8,
    "suites": 9,
}


def _layer(module: str) -> str:
    """``pytest_glm.serving.launch`` -> ``serving``; the package itself (``pytest_glm``) -> ''."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 and parts[0] == "pytest_glm" else ""


def _imports(path: Path) -> list[tuple[int, str]]:
    out = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [f"{node.module}.{a.name}" for a in node.names] if node.module == "pytest_glm" else [node.module]
            out += [(node.lineno, n) for n in names]
        elif isinstance(node, ast.Import):
            out += [(node.lineno, a.name) for a in node.names]
    return [(line, name) for line, name in out if name.startswith("pytest_glm.")]


MODULES = sorted(p for p in PACKAGE.rglob("*.py"))


def test_every_module_sits_in_a_known_layer():
    unknown = sorted({_layer("pytest_glm." + ".".join(p.relative_to(PACKAGE).with_suffix("").parts))
                      for p in MODULES} - set(LAYERS) - {"__init__"})
    assert not unknown, f"modules outside the layers {sorted(LAYERS)}: {unknown}"


def upward_imports(path: Path, own: str) -> list[str]:
    return [f"line {line}: {name} ({_layer(name)})" for line, name in _imports(path)
            if _layer(name) in LAYERS and LAYERS[_layer(name)] > LAYERS[own]]


@pytest.mark.parametrize("path", MODULES, ids=[str(p.relative_to(PACKAGE)) for p in MODULES])
def test_no_module_imports_a_higher_layer(path: Path):
    own = _layer("pytest_glm." + ".".join(path.relative_to(PACKAGE).with_suffix("").parts))
    if own == "__init__":
        return
    upward = upward_imports(path, own)
    assert not upward, f"{path.relative_to(PACKAGE)} ({own}) imports a higher layer: " + "; ".join(upward)


def test_the_check_sees_function_level_and_package_imports(tmp_path: Path):
    module = tmp_path / "m.py"
    module.write_text("from pytest_glm.catalog import models\n\ndef f():\n    from pytest_glm.serving.launch import tail\n"
                      "    from pytest_glm import plugin\n")
    assert upward_imports(module, "judging") == ["line 4: pytest_glm.serving.launch (serving)",
                                                 "line 5: pytest_glm.plugin (plugin)"]
