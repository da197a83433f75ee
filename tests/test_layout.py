"""The layout's rules (README, Layout), read from the source: no import cycle inside app/, pure
billing, modules of one job (at most MAX_LINES lines), and graph/ imported only by app/server/."""

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
MAX_LINES = 450


def _modules(package: str) -> dict[str, Path]:
    """Dotted module names of a package's files."""
    found = {}
    for path in sorted((ROOT / package).rglob("*.py")):
        parts = path.relative_to(ROOT).with_suffix("").parts
        found[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return found


def _imports(name: str, path: Path, known: dict[str, Path]) -> set[str]:
    """The project's modules a module imports, at any depth of its code (deferred imports too)."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    imported = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            imported.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            imported.add(base)
            imported.update(f"{base}.{alias.name}" for alias in node.names if f"{base}.{alias.name}" in known)
    return {module for module in imported if module in known or module.split(".")[0] in ("app", "graph", "models")}


def _graph(package: str) -> dict[str, set[str]]:
    known = {**_modules("app"), **_modules("graph"), **_modules("models")}
    return {name: _imports(name, path, known) for name, path in _modules(package).items()}


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The import cycles among the graph's own modules (Tarjan's strongly connected components)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    cycles = []

    def visit(module: str) -> None:
        index[module] = low[module] = len(index)
        stack.append(module)
        for other in graph[module] & graph.keys():
            if other not in index:
                visit(other)
                low[module] = min(low[module], low[other])
            elif other in stack:
                low[module] = min(low[module], index[other])
        if low[module] == index[module]:
            component = []
            while True:
                other = stack.pop()
                component.append(other)
                if other == module:
                    break
            if len(component) > 1 or module in graph[module]:
                cycles.append(sorted(component))

    for module in sorted(graph):
        if module not in index:
            visit(module)
    return cycles


def test_no_import_cycle_inside_app():
    assert _cycles(_graph("app")) == []


def test_the_cycle_finder_finds_a_cycle():
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_billing_imports_nothing_of_the_project_but_billing():
    wrong = {name: sorted(m for m in imports if not m.startswith("app.billing") and m.split(".")[0] in ("app", "graph", "models"))
             for name, imports in _graph("app/billing").items()}
    assert {name: imports for name, imports in wrong.items() if imports} == {}


def test_no_module_is_longer_than_the_limit():
    long = {str(path.relative_to(ROOT)): lines
            for package in ("app", "graph", "models")
            for path in _modules(package).values()
            if (lines := len(path.read_text().splitlines())) > MAX_LINES}
    assert long == {}


def test_only_the_server_imports_graph():
    wrong = {name: sorted(m for m in imports if m.split(".")[0] == "graph")
             for name, imports in _graph("app").items() if not name.startswith("app.server")}
    assert {name: imports for name, imports in wrong.items() if imports} == {}
