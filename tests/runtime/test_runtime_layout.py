"""The runtime's modules import each other without a cycle, and never the linter's."""

from __future__ import annotations

import ast
import pathlib

from amplint.runtime import findings

RUNTIME_DIR = pathlib.Path(findings.__file__).parent


def _type_checking_block(node: ast.stmt) -> bool:
    return (
        isinstance(node, ast.If)
        and isinstance(node.test, ast.Name)
        and node.test.id == "TYPE_CHECKING"
    )


def module_imports(path: pathlib.Path) -> tuple[set[str], set[str]]:
    """(runtime modules imported at module level, absolute modules imported anywhere)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    local: set[str] = set()
    absolute: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            absolute.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            absolute.add(node.module)
    for node in tree.body:
        if _type_checking_block(node):
            continue
        if isinstance(node, ast.ImportFrom) and node.level == 1:
            if node.module:
                local.add(node.module.split(".")[0])
            else:
                local.update(alias.name for alias in node.names)
    return local, absolute


def graph() -> dict[str, set[str]]:
    modules = {path.stem: path for path in RUNTIME_DIR.glob("*.py")}
    return {
        name: {dep for dep in module_imports(path)[0] if dep in modules and dep != name}
        for name, path in modules.items()
    }


def find_cycle(edges: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for dep in sorted(edges.get(node, ())):
            if state.get(dep) == 1:
                return [*stack[stack.index(dep) :], dep]
            if dep not in state and (cycle := visit(dep)) is not None:
                return cycle
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(edges):
        if node not in state and (cycle := visit(node)) is not None:
            return cycle
    return None


def test_no_import_cycle_among_runtime_modules() -> None:
    edges = graph()
    assert {"scaler", "health", "state", "reporting", "distributed", "usage"} <= set(edges)
    assert find_cycle(edges) is None, find_cycle(edges)


def test_the_cycle_finder_sees_a_cycle() -> None:
    assert find_cycle({"scaler": {"health"}, "health": {"state"}, "state": {"scaler"}}) == [
        "health",
        "state",
        "scaler",
        "health",
    ]


def test_the_runtime_never_imports_the_linter() -> None:
    allowed_amplint = {"amplint.catalog"}
    for path in RUNTIME_DIR.glob("*.py"):
        _, absolute = module_imports(path)
        for name in absolute:
            assert not name.startswith("libcst"), (path.name, name)
            if name.startswith("amplint"):
                assert name in allowed_amplint, (path.name, name)
