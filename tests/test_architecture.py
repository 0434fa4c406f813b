"""The house has one-way stairs: the import graph of src/nnlab, built with `ast` from every import statement
(those inside functions too), has no cycle between modules, and each part of the package imports only the
parts below it, in the order of the data flow (conf -> registries -> data -> task + model -> train -> track ->
report; the job on top of them, the commands on top of the job)."""

import ast
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src"

# Bottom to top. A part may import its own modules and the parts of lower rows; parts on one row, none of each
# other's. Each name is a module or package directly under nnlab.
LAYERS = [
    ("errors", "conf"),
    ("registry", "files", "imports", "processes"),
    ("config",),
    ("layers", "metrics", "plots"),
    ("data",),
    ("tasks",),
    ("models",),
    ("training",),
    ("tracking",),
    ("reports",),
    ("job",),
    ("use", "course", "server"),
    ("cli",),
    ("__main__",),
]


def modules() -> dict[str, tuple[Path, bool]]:
    """Dotted name -> (file, is a package's __init__)."""
    found = {}
    for path in (SRC / "nnlab").rglob("*.py"):
        parts = list(path.relative_to(SRC).with_suffix("").parts)
        package = parts[-1] == "__init__"
        found[".".join(parts[:-1] if package else parts)] = (path, package)
    return found


def import_graph() -> dict[str, set[str]]:
    """module -> the nnlab modules it imports (anywhere in its file). An import of `a.b.c` counts as one of its
    deepest existing module. A package's `__init__` importing its own submodules (to register them, or to offer
    their names) is not an edge: that is how a package is assembled, not a dependency between parts."""
    mods = modules()

    def resolve(name: str) -> str | None:
        while name and name not in mods:
            name = name.rpartition(".")[0]
        return name or None

    graph: dict[str, set[str]] = {m: set() for m in mods}
    for mod, (path, package) in mods.items():
        here = mod if package else mod.rpartition(".")[0]
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    parts = here.split(".")[: len(here.split(".")) - node.level + 1]
                    base = ".".join([*parts, *([base] if base else [])])
                names = [base, *(f"{base}.{alias.name}" for alias in node.names)]
            else:
                continue
            for name in names:
                target = resolve(name) if name.split(".")[0] == "nnlab" else None
                if target and target != mod and not (package and target.startswith(f"{mod}.")):
                    graph[mod].add(target)
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def part(module: str) -> str:
    return module.split(".")[1] if "." in module else "__init__"


def test_the_graph_sees_imports_inside_functions_and_relative_ones():
    graph = import_graph()
    assert "nnlab.job.resume" in graph["nnlab.cli"]  # `from nnlab.job.resume import resume` inside a function
    assert "nnlab.tracking.store" in graph["nnlab.use.trained"]
    assert "nnlab.models.alexnet" not in graph["nnlab.models"]  # the package registering its own builders


def test_no_module_imports_itself_back_through_others():
    assert cycles(import_graph()) == []


def test_a_cycle_is_found_where_there_is_one():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_every_part_of_the_package_has_its_place_on_the_stairs():
    parts = {part(m) for m in import_graph()} - {"__init__"}
    placed = {name for row in LAYERS for name in row}
    assert parts - placed == set(), "a new part of nnlab: give it its row in LAYERS"


def test_each_part_imports_only_the_parts_below_it():
    row = {name: i for i, names in enumerate(LAYERS) for name in names}
    upward = sorted(f"{m} -> {t}" for m, targets in import_graph().items() for t in targets
                    if part(m) != part(t) and part(m) in row and part(t) in row and row[part(t)] >= row[part(m)])
    assert upward == []


def test_data_models_and_training_never_import_tracking_the_job_or_the_commands():
    graph = import_graph()
    above = ("tracking", "reports", "job", "use", "course", "cli")
    found = sorted(f"{m} -> {t}" for m, targets in graph.items() if part(m) in ("data", "models", "training", "tasks")
                   for t in targets if part(t) in above)
    assert found == []
