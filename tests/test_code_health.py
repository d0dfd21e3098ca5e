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
