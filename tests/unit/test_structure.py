"""The package's shape: no import cycles between explorer's modules, and no module too long to read.

The import graph is built from the source with `ast` (nothing is imported), so a cycle hidden in a
function-local import counts too: a lazy import defers the problem, it does not remove it.
"""
import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[2] / "explorer"
MAX_LINES = 350


def _modules() -> dict[str, Path]:
    """{dotted module name: file}; a package is named by its __init__.py."""
    out = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        out[".".join(parts)] = path
    return out


def _type_checking_only(tree: ast.Module) -> set[int]:
    """ids of the import nodes under `if TYPE_CHECKING:`: never executed, so no runtime edge."""
    skip = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            skip.update(id(n) for stmt in node.body for n in ast.walk(stmt))
    return skip


def import_graph() -> dict[str, set[str]]:
    """{module: the explorer modules it imports}, module-level and function-local imports alike."""
    modules = _modules()
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        is_package = path.name == "__init__.py"
        tree = ast.parse(path.read_text(), str(path))
        skip = _type_checking_only(tree)
        edges = set()
        for node in ast.walk(tree):
            if id(node) in skip:
                continue
            if isinstance(node, ast.Import):
                edges.update(a.name for a in node.names)
            elif isinstance(node, ast.ImportFrom):
                if node.level:   # relative: from the module's package, one level up per extra dot
                    base = name.split(".") if is_package else name.split(".")[:-1]
                    base = base[:len(base) - node.level + 1]
                    target = ".".join(base + ([node.module] if node.module else []))
                else:
                    target = node.module or ""
                for a in node.names:   # `from pkg import sub` imports the submodule pkg.sub
                    sub = f"{target}.{a.name}"
                    edges.add(sub if sub in modules else target)
        graph[name] = {p for e in edges if e in modules for p in _executed(name, e) if p != name}
    return graph


def _executed(importer: str, target: str) -> list[str]:
    """Importing a.b.c runs a.b's __init__ too; the importer's own packages are already running, so
    only the others count (else every package whose __init__ imports its modules would be a cycle)."""
    parts = target.split(".")
    packages = [".".join(parts[:i]) for i in range(2, len(parts))]
    return [target] + [p for p in packages if not (importer == p or importer.startswith(p + "."))]


def find_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """One cycle per strongly connected component of more than one module (Tarjan), as a path a -> ... -> a."""
    index, low, stack, on_stack, sccs = {}, {}, [], set(), []

    def connect(v):   # recursion depth is bounded by the number of modules (~100)
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                connect(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            scc = set()
            while True:
                w = stack.pop()
                on_stack.discard(w)
                scc.add(w)
                if w == v:
                    break
            if len(scc) > 1:
                sccs.append(scc)

    for v in sorted(graph):
        if v not in index:
            connect(v)
    return [_cycle_in(graph, scc) for scc in sccs]


def _cycle_in(graph, scc: set[str]) -> list[str]:
    """A shortest cycle through the component's first module (breadth-first back to it)."""
    start = min(scc)
    paths = {start: [start]}
    frontier = [start]
    while frontier:
        nxt = []
        for v in frontier:
            for w in sorted(graph[v] & scc):
                if w == start:
                    return paths[v] + [start]
                if w not in paths:
                    paths[w] = paths[v] + [w]
                    nxt.append(w)
        frontier = nxt
    raise AssertionError(f"{sorted(scc)} is not strongly connected")


def test_the_graph_sees_relative_function_local_and_submodule_imports():
    graph = import_graph()
    assert "explorer.config" in graph["explorer.recipes"]       # from .config import ...
    assert "explorer.kd.registry" in graph["explorer.kd"]       # a package's __init__
    assert "explorer.registry" in graph["explorer.kd.registry"]  # from ..registry import Registry
    assert "explorer.data.shapes" in graph["explorer.data.catalog"]   # a function-local import
    assert "explorer.models" in graph["explorer.analysis.probes"]      # models.taps runs models/__init__
    assert "explorer.data" not in graph["explorer.data.loader"]        # its own package is already running
    assert find_cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c", "a"]]
    assert find_cycles({"a": {"b"}, "b": set()}) == []


def test_no_import_cycles():
    cycles = find_cycles(import_graph())
    assert not cycles, "import cycles:\n" + "\n".join(" -> ".join(c) for c in cycles)


def test_no_module_is_over_the_line_limit():
    long = {str(p.relative_to(PACKAGE.parent)): n for p in PACKAGE.rglob("*.py")
            if (n := len(p.read_text().splitlines())) > MAX_LINES}
    assert not long, f"modules over {MAX_LINES} lines (split them by concept): " + ", ".join(
        f"{p} ({n})" for p, n in sorted(long.items()))
