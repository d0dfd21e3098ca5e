"""Code health: no function under wm_jax/ is longer than MAX_FUNCTION_LINES (issue 12)."""

import ast

from conftest import REPO

MAX_FUNCTION_LINES = 80

# Long functions in files that are being edited elsewhere, each with the length it may not exceed
# (its length under `ruff format`) until it is split.
KNOWN_LONG_FUNCTIONS: dict[str, int] = {}


def function_lengths(source: str, module: str) -> dict[str, int]:
    """Lines from `def` to the end of the body (decorators not counted) of every function and
    method, nested ones included, keyed "module::Class.method" or "module::outer.inner"."""
    lengths: dict[str, int] = {}

    def visit(node: ast.AST, scope: tuple[str, ...]) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                name = ".".join((*scope, child.name))
                if not isinstance(child, ast.ClassDef):
                    lengths[f"{module}::{name}"] = child.end_lineno - child.lineno + 1
                visit(child, (*scope, child.name))
            else:
                visit(child, scope)

    visit(ast.parse(source), ())
    return lengths


def package_function_lengths() -> dict[str, int]:
    lengths: dict[str, int] = {}
    for path in sorted((REPO / "wm_jax").rglob("*.py")):
        lengths.update(function_lengths(path.read_text(), path.relative_to(REPO).as_posix()))
    return lengths


def test_no_function_under_wm_jax_is_longer_than_80_lines():
    lengths = package_function_lengths()
    too_long = {name: n for name, n in lengths.items() if n > MAX_FUNCTION_LINES and name not in KNOWN_LONG_FUNCTIONS}
    assert not too_long, f"split these functions (at most {MAX_FUNCTION_LINES} lines each): {too_long}"


def test_known_long_functions_exist_and_do_not_grow():
    lengths = package_function_lengths()
    for name, allowed in KNOWN_LONG_FUNCTIONS.items():
        assert name in lengths, f"{name} no longer exists: remove it from KNOWN_LONG_FUNCTIONS"
        assert lengths[name] <= allowed, f"{name} grew to {lengths[name]} lines (allowed {allowed} until split)"


def test_lengths_count_from_def_to_the_end_of_the_body():
    lines = [
        "@decorator",
        "def long(",
        "    a,",
        "):",
        *(f"    x{i} = {i}" for i in range(79)),
        "",
        "",
        "class C:",
        "    def short(self):",
        "        def inner():",
        "            return 1",
        "",
        "        return inner",
        "",
    ]
    source = "\n".join(lines)
    lengths = function_lengths(source, "m.py")
    assert lengths == {"m.py::long": 82, "m.py::C.short": 5, "m.py::C.short.inner": 2}
    assert lengths["m.py::long"] > MAX_FUNCTION_LINES  # 3 lines of signature + 79 of body


def test_the_check_reads_every_module():
    lengths = package_function_lengths()
    assert "wm_jax/gwas/run.py::run_gwas" in lengths
    assert "wm_jax/gwas/results.py::ResultStore.__init__" in lengths


def module_imports() -> dict[str, set[str]]:
    """For every module under wm_jax/, the wm_jax modules it imports (at the top or inside a
    function), as dotted names; `from wm_jax.pkg import name` counts as importing wm_jax.pkg.name
    when that is a module."""
    modules = {
        ".".join(path.relative_to(REPO).with_suffix("").parts).removesuffix(".__init__"): path
        for path in (REPO / "wm_jax").rglob("*.py")
    }
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        found: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                found |= {alias.name for alias in node.names if alias.name in modules}
            elif isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("wm_jax"):
                submodules = {f"{node.module}.{alias.name}" for alias in node.names}
                found |= (submodules & modules.keys()) or {node.module}
        graph[name] = found - {name}
    return graph


def private_imports() -> list[str]:
    """`from wm_jax.x import _name` anywhere under wm_jax/: one module reaching into another's private name."""
    found = []
    for path in sorted((REPO / "wm_jax").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("wm_jax"):
                found += [
                    f"{path.relative_to(REPO)}: {node.module}.{alias.name}"
                    for alias in node.names
                    if alias.name.startswith("_") and not alias.name.startswith("__")
                ]
    return found


def import_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The modules of each import cycle (strongly connected components of more than one module)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    cycles: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        for target in graph.get(node, ()):
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                cycles.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return cycles


def test_the_package_has_no_import_cycle():
    cycles = import_cycles(module_imports())
    assert not cycles, f"import cycles: {cycles}"


def test_the_cycle_check_finds_a_cycle():
    assert import_cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert import_cycles({"a": {"b"}, "b": set()}) == []


def test_the_import_scan_sees_imports_inside_functions():
    graph = module_imports()
    assert "wm_jax.train.loop" in graph["wm_jax.commands.train"]  # imported when the command runs
    assert "wm_jax.data.source" in graph["wm_jax.data.plink"]


def test_no_module_imports_a_private_name_of_another():
    assert not private_imports()


def test_the_genotype_interface_imports_no_reader():
    graph = module_imports()
    readers = {"wm_jax.data.plink", "wm_jax.data.pgen", "wm_jax.data.bgen", "wm_jax.data.genotypes"}
    assert not graph["wm_jax.data.source"] & readers
    assert not graph["wm_jax.data.dosages"] & readers
