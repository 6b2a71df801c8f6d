"""The package layering, read from every import statement (top level or inside functions).

The operator and the local runner are two thin drivers of one core: they import the core, never each
other; the core, the API models and the steps import neither runtime nor the command line, so a step
pod and a laptop run the same code. Test infrastructure (kubeforge.testing) is never imported by the
product.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import kubeforge

ROOT = Path(kubeforge.__file__).parent
# package -> packages it must never import
FORBIDDEN: dict[str, tuple[str, ...]] = {
    "api": ("core", "local", "operator", "cli", "steps", "testing"),
    "core": ("local", "operator", "cli", "testing"),
    "steps": ("local", "operator", "cli", "testing"),
    "store": ("local", "operator", "cli", "core", "testing"),
    "local": ("operator", "cli", "testing"),
    "operator": ("local", "cli", "testing"),
    "datasets": ("local", "operator", "cli", "testing"),
    "evaluation": ("local", "operator", "cli", "testing"),
    "serving": ("local", "operator", "cli", "testing"),
    "models": ("local", "operator", "cli", "testing"),
    "cli": ("testing",),
}


def imported_packages(path: Path) -> set[tuple[str, int]]:
    """(kubeforge sub-package, line) of every import in a module."""
    tree = ast.parse(path.read_text(), str(path))
    out = set()
    for node in ast.walk(tree):
        names: list[str] = []
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
        for name in names:
            parts = name.split(".")
            if parts[0] == "kubeforge" and len(parts) > 1:
                out.add((parts[1], node.lineno))
    return out


@pytest.mark.parametrize("package", sorted(FORBIDDEN))
def test_no_package_imports_what_it_must_not(package: str) -> None:
    files = sorted((ROOT / package).rglob("*.py"))
    assert files, f"kubeforge.{package} has no modules"
    bad = [f"{f.relative_to(ROOT)}:{line} imports kubeforge.{target}"
           for f in files for target, line in imported_packages(f) if target in FORBIDDEN[package]]
    assert bad == []


def test_the_checker_sees_imports_inside_functions(tmp_path: Path) -> None:
    module = tmp_path / "m.py"
    module.write_text("def f():\n    from kubeforge.cli.step import x\n")
    assert imported_packages(module) == {("cli", 2)}
