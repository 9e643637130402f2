"""The layering the README's layout section promises, checked on the source: core/ is the library; dashboard/,
webapp/ and scripts/ import from core/ and never from each other; inside core/, the lower layers never import the
job modules that build on them."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
FRONT_ENDS = ("dashboard", "webapp", "scripts")
# core's layers, lowest first: a module may import from its own layer and the ones before it.
CORE_LAYERS = [
    {"classes", "errors", "config", "cli", "provenance", "progress", "runtime", "metrics", "calibration", "intervals",
     "triage", "pretrained", "distributed"},
    {"data", "models", "losses"},
    {"compress", "serve", "store"},
    {"jobs"},
]


def imported_packages(path: Path) -> set[str]:
    """Dotted names this file imports at run time (imports under ``if TYPE_CHECKING:`` excluded)."""
    tree = ast.parse(path.read_text())
    skipped = {id(n) for node in ast.walk(tree) if isinstance(node, ast.If)
               and getattr(node.test, "id", None) == "TYPE_CHECKING" for n in ast.walk(node)}
    names = set()
    for node in ast.walk(tree):
        if id(node) in skipped:
            continue
        if isinstance(node, ast.Import):
            names |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
    return names


def layer_of(module: str) -> int:
    part = module.split(".")[1] if module.count(".") else ""
    return next(i for i, layer in enumerate(CORE_LAYERS) if part in layer)


@pytest.mark.parametrize("package", ["core", *FRONT_ENDS])
def test_no_imports_upward_or_sideways(package: str) -> None:
    for path in sorted((REPO / package).rglob("*.py")):
        tops = {name.split(".")[0] for name in imported_packages(path)}
        others = (set(FRONT_ENDS) - {package}) if package != "core" else set(FRONT_ENDS)
        assert not tops & others, f"{path.relative_to(REPO)} imports {sorted(tops & others)}"


def test_core_layers_only_import_downward() -> None:
    for path in sorted((REPO / "core").rglob("*.py")):
        rel = path.relative_to(REPO).with_suffix("")
        if rel.name == "__init__" and len(rel.parts) == 2:
            continue
        own = layer_of(".".join(rel.parts))
        for name in imported_packages(path):
            if name.startswith("core."):
                assert layer_of(name) <= own, f"{rel} (layer {own}) imports {name} (layer {layer_of(name)})"
