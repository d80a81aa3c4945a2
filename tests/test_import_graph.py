"""kdlib's modules import each other without a cycle: every ``from kdlib... import`` and ``import kdlib...``, at the
top of a module or inside a function, is an edge of the module graph, and the graph has no cycle."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "kdlib"


def module_name(path: Path, package: Path) -> str:
    parts = path.relative_to(package.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def modules(package: Path = PACKAGE) -> dict[str, Path]:
    return {module_name(path, package): path for path in sorted(package.rglob("*.py"))}


def _type_checking_only(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _imported(node: ast.AST, here: str, is_package: bool, known: set[str]) -> list[str]:
    """The kdlib modules one import statement loads (``from kdlib.fl import study`` loads ``kdlib.fl.study``)."""
    if isinstance(node, ast.Import):
        return [alias.name for alias in node.names if alias.name.split(".")[0] == "kdlib"]
    if not isinstance(node, ast.ImportFrom):
        return []
    if node.level:  # relative: from the package that holds ``here``
        base = here.split(".") if is_package else here.split(".")[:-1]
        base = base[: len(base) - (node.level - 1)]
        target = ".".join([*base, *([node.module] if node.module else [])])
    else:
        target = node.module or ""
    if target.split(".")[0] != "kdlib":
        return []
    found = [f"{target}.{alias.name}" for alias in node.names if f"{target}.{alias.name}" in known]
    return found or [target]


def import_graph(package: Path = PACKAGE) -> dict[str, set[str]]:
    """Module -> the kdlib modules it imports anywhere in its body (imports only read by type checkers left out)."""
    known = modules(package)
    graph: dict[str, set[str]] = {}
    for name, path in known.items():
        tree = ast.parse(path.read_text(), filename=str(path))
        skipped = {id(n) for node in ast.walk(tree) if isinstance(node, ast.If) and _type_checking_only(node)
                   for child in node.body for n in ast.walk(child)}
        edges = set()
        for node in ast.walk(tree):
            if id(node) not in skipped:
                edges.update(_imported(node, name, path.name == "__init__.py", set(known)))
        graph[name] = {target for target in edges if target in known and target != name}
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One cycle of the graph as a list of modules (first == last), or None."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for target in sorted(graph.get(node, ())):
            if state.get(target) == 1:
                return [*path[path.index(target):], target]
            if target not in state and (cycle := visit(target)):
                return cycle
        path.pop()
        state[node] = 2
        return None

    for start in sorted(graph):
        if start not in state and (cycle := visit(start)):
            return cycle
    return None


def test_the_graph_sees_top_level_and_function_local_imports(tmp_path: Path) -> None:
    package = tmp_path / "kdlib"
    (package / "sub").mkdir(parents=True)
    files = {
        "__init__.py": "",
        "a.py": "from kdlib.b import x\n\n\ndef f():\n    import kdlib.c\n",
        "b.py": "from typing import TYPE_CHECKING\n\nif TYPE_CHECKING:\n    from kdlib.a import f\nx = 1\n",
        "c.py": "def g():\n    from kdlib.sub import d\n    from . import b\n",
        "sub/__init__.py": "",
        "sub/d.py": "import numpy\nfrom kdlib import a\n",
    }
    for name, text in files.items():
        (package / name).write_text(text)
    assert import_graph(package) == {
        "kdlib": set(),
        "kdlib.a": {"kdlib.b", "kdlib.c"},  # top level, and inside a function
        "kdlib.b": set(),  # read by type checkers only
        "kdlib.c": {"kdlib.sub.d", "kdlib.b"},  # inside a function, absolute and relative
        "kdlib.sub": set(),
        "kdlib.sub.d": {"kdlib.a"},
    }
    assert find_cycle(import_graph(package)) == ["kdlib.a", "kdlib.c", "kdlib.sub.d", "kdlib.a"]
    assert len(import_graph()) == len(modules()) > 20  # the real package: every module is a node


@pytest.mark.parametrize(
    ("graph", "expected"),
    [
        ({"a": {"b"}, "b": {"c"}, "c": set()}, None),
        ({"a": {"b"}, "b": {"c"}, "c": {"a"}}, ["a", "b", "c", "a"]),
        ({"a": {"b", "d"}, "b": set(), "d": {"d2"}, "d2": {"d"}}, ["d", "d2", "d"]),
    ],
)
def test_find_cycle_finds_exactly_the_cycles(graph: dict[str, set[str]], expected: list[str] | None) -> None:
    assert find_cycle(graph) == expected


def test_relative_and_package_imports_resolve_to_modules() -> None:
    known = {"kdlib", "kdlib.fl", "kdlib.fl.task", "kdlib.train"}
    relative = ast.parse("from . import task\nfrom ..train import fit").body
    assert _imported(relative[0], "kdlib.fl.study", False, known) == ["kdlib.fl.task"]
    assert _imported(relative[1], "kdlib.fl.study", False, known) == ["kdlib.train"]
    star = ast.parse("from kdlib.fl import *").body[0]
    assert _imported(star, "kdlib.fl", False, known) == ["kdlib.fl"]


def test_kdlib_has_no_import_cycle() -> None:
    cycle = find_cycle(import_graph())
    assert cycle is None, "import cycle: " + " -> ".join(cycle or [])


LAYERS = ("core", "data", "tune", "study", "fl", "notebook")
"""kdlib's packages, each importing only those before it (and errors, validation, paths): the central runner never
imports FL, and the KD core knows nothing of the study."""


def test_each_package_imports_only_the_layers_below_it() -> None:
    def package(module: str) -> str:
        return module.split(".")[1] if module.count(".") >= 1 else ""

    wrong = sorted(
        f"{module} -> {target}"
        for module, targets in import_graph().items()
        if package(module) in LAYERS
        for target in targets
        if package(target) in LAYERS and LAYERS.index(package(target)) > LAYERS.index(package(module))
    )
    assert wrong == []


def test_the_tree_shows_the_design() -> None:
    """At most 12 entries at the top of kdlib/ (the packages of DESIGN.md), and no module over 500 lines."""
    package = Path(__file__).resolve().parents[1] / "kdlib"
    top = sorted(p.name for p in package.iterdir() if p.name != "__pycache__")
    assert len(top) <= 12, top
    sizes = {str(p.relative_to(package)): len(p.read_text().splitlines()) for p in package.rglob("*.py")}
    long = {name: n for name, n in sizes.items() if n > 500}
    assert not long, long


def test_the_code_passes_ruff() -> None:
    """The project's lint rules (pyproject.toml [tool.ruff]) hold for every Python file and notebook: a line that is
    too long or an unused import fails here, not only in a developer's editor."""
    import shutil
    import subprocess
    import sys

    beside = Path(sys.executable).parent / "ruff"
    ruff = str(beside) if beside.exists() else shutil.which("ruff")
    assert ruff is not None, "ruff is in requirements.txt: pip install -r requirements.txt"
    done = subprocess.run([ruff, "check", "--no-cache", "."], cwd=PACKAGE.parent, capture_output=True, text=True,
                          timeout=300)  # fmt: skip
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-1000:]
