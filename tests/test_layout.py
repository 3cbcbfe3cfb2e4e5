"""The package's shape: imports point one way (CLI -> commands -> core), and modules stay short enough to read.

Both are read from the source, not from running it: every `import` counts, including the ones inside functions that
keep start-up fast, since a circle through a deferred import is still a circle for the reader (and breaks the moment
someone moves the import to the top).
"""

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "skinsynth"
MAX_LINES = 450
LONG_MODULE_REASON = "Why one long module:"  # a paragraph of the docstring that starts so explains the exception


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imported_modules(path: Path, modules: set[str]) -> set[str]:
    """The package's own modules that `path` imports, wherever in the file the import is."""
    name = module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            candidates = [target, *(f"{target}.{alias.name}" for alias in node.names)]
        elif isinstance(node, ast.Import):
            candidates = [alias.name for alias in node.names]
        else:
            continue
        found.update(c for c in candidates if c in modules and c != name)
    return found


def import_graph() -> dict[str, set[str]]:
    paths = {module_name(path): path for path in PACKAGE.rglob("*.py")}
    return {name: imported_modules(path, set(paths)) for name, path in paths.items()}


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import circle as the list of modules around it, or None (depth-first search, white/grey/black)."""
    state: dict[str, str] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = "open"
        stack.append(node)
        for target in sorted(graph[node]):
            if state.get(target) == "open":
                return stack[stack.index(target) :] + [target]
            if target not in state and (cycle := visit(target)):
                return cycle
        state[node] = "done"
        stack.pop()
        return None

    for node in sorted(graph):
        if node not in state and (cycle := visit(node)):
            return cycle
    return None


def test_the_cycle_finder_finds_a_circle_and_accepts_a_tree():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": set()}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b", "c"}, "b": {"c"}, "c": set()}) is None


def test_no_module_of_the_package_imports_itself_in_a_circle():
    cycle = find_cycle(import_graph())
    assert cycle is None, "import circle: " + " -> ".join(cycle) + "; give the shared thing a module of its own that both import"


def test_the_core_never_imports_the_cli():
    graph = import_graph()
    entry_points = {"skinsynth.__main__"}  # `python -m skinsynth` runs the CLI
    offenders = sorted(
        name for name, targets in graph.items()
        if name not in entry_points and not name.startswith("skinsynth.cli") and any(t.startswith("skinsynth.cli") for t in targets)
    )
    assert offenders == [], f"{offenders} import the CLI; the CLI imports the commands, not the other way round"


@pytest.mark.parametrize("path", sorted(PACKAGE.rglob("*.py")), ids=lambda p: str(p.relative_to(PACKAGE)))
def test_a_module_is_short_enough_to_read_top_to_bottom(path):
    lines = len(path.read_text().splitlines())
    if lines > MAX_LINES:
        docstring = ast.get_docstring(ast.parse(path.read_text())) or ""
        assert LONG_MODULE_REASON in docstring, (
            f"{path.name} has {lines} lines (> {MAX_LINES}): split it where a reader would look for one of its parts by name, "
            f"or say in its docstring why it is one module ('{LONG_MODULE_REASON} ...')"
        )
