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
     "triage", "pretrained", "world", "ray_pool", "fusion", "timing", "curves"},
    {"data", "models", "losses", "artifacts"},
    {"compress", "serve", "store"},
    {"train"},
    {"jobs"},
]


def runtime_imports(path: Path) -> list[ast.Import | ast.ImportFrom]:
    """The import statements of a file that run (inside functions too; not those under ``if TYPE_CHECKING:``)."""
    tree = ast.parse(path.read_text())
    skipped = {id(n) for node in ast.walk(tree) if isinstance(node, ast.If)
               and getattr(node.test, "id", None) == "TYPE_CHECKING" for n in ast.walk(node)}
    return [n for n in ast.walk(tree) if isinstance(n, ast.Import | ast.ImportFrom) and id(n) not in skipped]


def imported_packages(path: Path) -> set[str]:
    """Dotted names this file imports at run time."""
    names = set()
    for node in runtime_imports(path):
        if isinstance(node, ast.Import):
            names |= {a.name for a in node.names}
        elif node.module and node.level == 0:
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


def import_graph(root: Path = REPO, package: str = "core") -> dict[str, set[str]]:
    """Module -> the modules of ``package`` it imports at run time, imports inside functions included (``from a
    import b`` counts as importing ``a.b`` where that is a module)."""
    modules = {".".join(p.relative_to(root).with_suffix("").parts).removesuffix(".__init__"): p
               for p in (root / package).rglob("*.py")}
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        edges = set()
        for node in runtime_imports(path):
            if isinstance(node, ast.Import):
                edges |= {a.name for a in node.names if a.name in modules}
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0 and node.module in modules:
                subs = {f"{node.module}.{a.name}" for a in node.names} & modules.keys()
                edges |= subs or {node.module}
                if len(subs) < len(node.names):
                    edges.add(node.module)
        graph[name] = edges - {name, package}
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle (a -> b -> ... -> a) if there is any."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return path[path.index(nxt):] + [nxt]
            if nxt not in state and (cycle := visit(nxt)):
                return cycle
        path.pop()
        state[node] = 2
        return None

    for start in sorted(graph):
        if start not in state and (cycle := visit(start)):
            return cycle
    return None


@pytest.mark.parametrize("package", ["core", "webapp", "dashboard"])
def test_no_import_cycles_even_inside_functions(package: str) -> None:
    cycle = find_cycle(import_graph(package=package))
    assert cycle is None, " -> ".join(cycle)


def test_the_checks_catch_a_planted_back_import_and_a_planted_cycle(tmp_path: Path) -> None:
    """The architecture tests can fail: a low module importing a job (inside a function) and a two-module cycle."""
    pkg = tmp_path / "core"
    (pkg / "jobs").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "jobs" / "__init__.py").write_text("")
    (pkg / "metrics.py").write_text("def f():\n    from core.jobs.sweep import run_sweep\n")
    (pkg / "jobs" / "sweep.py").write_text("from core import metrics\n\ndef run_sweep():\n    pass\n")
    graph = import_graph(tmp_path)
    assert graph["core.metrics"] == {"core.jobs.sweep"}
    assert layer_of("core.jobs.sweep") > layer_of("core.metrics")  # the back-import test's rule fires on it
    assert find_cycle(graph) == ["core.jobs.sweep", "core.metrics", "core.jobs.sweep"]
