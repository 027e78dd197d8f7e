"""The package's layers: imports flow one way (cli -> stages -> reports / figures -> science -> plumbing), no circles.

The import graph is read from the source with ``ast``: every ``import`` and ``from ... import`` of a
``vstain`` module, at module level and inside functions alike.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "vstain"

PLUMBING = {"vstain", "vstain.config", "vstain.vocabulary", "vstain.layout", "vstain.io", "vstain.volume_io",
            "vstain.slide_io", "vstain.manifest", "vstain.pairs"}
LAYERS = ("plumbing", "science", "figures", "reports", "stages", "cli")
# reports (tables, sentences) and figures (drawings) are one layer: neither imports the other
SAME_LEVEL = {"reports": "figures"}
MAX_FUNCTION_LEVEL_IMPORTS = 10


def module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def layer_of(module: str) -> str:
    if module in PLUMBING:
        return "plumbing"
    if module in ("vstain.cli", "vstain.__main__"):
        return "cli"
    for layer in ("figures", "reports", "stages"):
        if module == f"vstain.{layer}" or module.startswith(f"vstain.{layer}."):
            return layer
    return "science"


MODULES = {module_name(path): path for path in sorted(PACKAGE.rglob("*.py"))}


def imported_modules(node: ast.AST, module: str) -> list[str]:
    """The vstain modules an import statement loads (``from vstain import losses`` loads vstain.losses)."""
    if isinstance(node, ast.Import):
        return [alias.name for alias in node.names if alias.name.split(".")[0] == "vstain"]
    if not isinstance(node, ast.ImportFrom):
        return []
    if node.level:  # relative import: resolve against this module's package
        package = module.split(".") if MODULES[module].name == "__init__.py" else module.split(".")[:-1]
        base = ".".join(package[: len(package) - node.level + 1] + ([node.module] if node.module else []))
    else:
        base = node.module or ""
    if base.split(".")[0] != "vstain":
        return []
    found = []
    for alias in node.names:
        candidate = f"{base}.{alias.name}"
        found.append(candidate if candidate in MODULES else base)
    return found


def import_graph() -> tuple[dict[str, set[str]], list[tuple[str, int]]]:
    """``module -> modules it imports`` and the (module, line) of every import inside a function."""
    graph: dict[str, set[str]] = {name: set() for name in MODULES}
    inside_functions = []
    for name, path in MODULES.items():
        tree = ast.parse(path.read_text(), str(path))
        for func in [n for n in ast.walk(tree) if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))]:
            for node in ast.walk(func):
                if isinstance(node, (ast.Import, ast.ImportFrom)):
                    inside_functions.append((name, node.lineno))
        for node in ast.walk(tree):
            for target in imported_modules(node, name):
                if target != name and target in MODULES:
                    graph[name].add(target)
    return graph, sorted(set(inside_functions))


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import circle of ``graph`` (depth-first search), or None."""
    state: dict[str, int] = {}  # 1: on the stack, 2: done
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                return stack[stack.index(nxt):] + [nxt]
            if nxt not in state and (cycle := visit(nxt)):
                return cycle
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (cycle := visit(node)):
            return cycle
    return None


def test_graph_reader_sees_function_level_imports_and_finds_circles():
    # the reader must not be blind: vstain.cli imports the package (for its version) at module level
    graph, _ = import_graph()
    assert "vstain" in graph["vstain.cli"]
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None
    tree = ast.parse("def f():\n    from vstain import losses\n")
    node = tree.body[0].body[0]
    assert imported_modules(node, "vstain.train") == ["vstain.losses"]


def test_no_import_circle():
    graph, _ = import_graph()
    assert find_cycle(graph) is None, " -> ".join(find_cycle(graph))


def level(layer: str) -> int:
    return LAYERS.index(SAME_LEVEL.get(layer, layer))


def test_imports_flow_down_the_layers():
    graph, _ = import_graph()
    upward = [f"{a} ({layer_of(a)}) imports {b} ({layer_of(b)})" for a, targets in graph.items() for b in targets
              if level(layer_of(b)) > level(layer_of(a))]
    assert not upward, "\n".join(upward)


def test_reports_and_figures_do_not_import_each_other():
    graph, _ = import_graph()
    assert layer_of("vstain.reports.table1") == "reports" and level("reports") == level("figures") < level("stages")
    across = [f"{a} imports {b}" for a, targets in graph.items() for b in targets
              if {layer_of(a), layer_of(b)} == {"reports", "figures"}]
    assert not across, "\n".join(across)


@pytest.mark.parametrize("module", sorted(m for m in MODULES if layer_of(m) == "science"))
def test_science_modules_derive_no_paths_and_read_no_profiles(module):
    graph, _ = import_graph()
    assert not graph[module] & {"vstain.config", "vstain.layout"}, f"{module} imports {graph[module]}"


def test_few_imports_inside_functions():
    _, inside = import_graph()
    assert len(inside) <= MAX_FUNCTION_LEVEL_IMPORTS, "\n".join(f"{m}:{line}" for m, line in inside)


def test_every_command_points_at_a_stage():
    from vstain.cli import COMMANDS

    for name, (target, _) in COMMANDS.items():
        assert target.startswith("vstain.stages."), name
        assert target.partition(":")[0] in MODULES, target
