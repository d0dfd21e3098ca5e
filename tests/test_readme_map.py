"""The README's map ("Where things are") against the code: every module of `wm_jax/` has a row, and
every file a row names as a caller imports that module, so the map cannot drift from the code."""

import ast
import re
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PACKAGE = REPO / "wm_jax"


def _map_rows() -> list[tuple[list[str], list[str]]]:
    """(modules, callers) of each row: the backticked names of its first and last columns."""
    text = (REPO / "README.md").read_text()
    section = text.split("## Where things are", 1)[1].split("\n## ", 1)[0]
    rows = []
    for line in section.splitlines():
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
        if len(cells) != 3 or cells[0] in ("module", "---"):
            continue
        rows.append((re.findall(r"`([^`]+)`", cells[0]), re.findall(r"`([^`]+)`", cells[2])))
    return rows


def _path(name: str) -> str:
    """A name as the map writes it (`wm_jax/gwas/run.py`, or `gwas/run.py` within the package)."""
    name = name.split(" ")[0]
    return name if name.split("/")[0] in ("wm_jax", "configs", "tests", "benchmarks", "launch") else f"wm_jax/{name}"


def _module_name(path: str) -> str:
    return path.removesuffix(".py").replace("/", ".")


def _imports(path: Path) -> set[str]:
    """The wm_jax modules a file imports (``from wm_jax.a import b`` counts wm_jax.a and, where it
    is a module, wm_jax.a.b)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
            found.update(f"{node.module}.{alias.name}" for alias in node.names)
    found = {name for name in found if name.startswith("wm_jax")}
    for name in list(found):  # a package imported re-exports what its __init__ imports
        init = REPO / name.replace(".", "/") / "__init__.py"
        if init.exists() and init != path:
            found |= _imports(init)
    return found


def _modules() -> list[str]:
    return sorted(str(p.relative_to(REPO)) for p in PACKAGE.rglob("*.py") if p.name != "__init__.py")


def test_every_module_has_a_row_of_the_map():
    listed = {_path(name) for modules, _ in _map_rows() for name in modules}
    missing = [module for module in _modules() if module not in listed]
    assert not missing, f"modules without a row in the README's map: {missing}"
    stale = sorted(p for p in listed if p.endswith(".py") and not (REPO / p).exists())
    assert not stale, f"rows of the README's map naming no file: {stale}"


def test_every_caller_the_map_names_imports_the_module():
    wrong = []
    for modules, callers in _map_rows():
        targets = {_module_name(_path(m)) for m in modules if _path(m).startswith("wm_jax/")}
        for caller in callers:
            path = _path(caller)
            if "*" in path[:-2]:
                continue  # a pattern in prose (`*/cli.py`): not checked
            if path.endswith("/*"):
                files = sorted((REPO / path[:-2]).glob("*.py"))
            elif path.endswith(".py") and (REPO / path).exists():
                files = [REPO / path]
            elif path.endswith(".py"):
                wrong.append(f"{modules}: caller {caller} is not a file")
                continue
            else:
                continue  # prose (the entry point, `pytest`): not a file to check
            imported = set().union(*(_imports(f) for f in files))
            for target in sorted(targets - imported):  # each module of the row, by each caller
                wrong.append(f"{target}: {caller} does not import it")
    assert not wrong, "\n".join(wrong)


def test_the_map_check_sees_a_wrong_caller():
    """The scan resolves imports as the check needs (it would pass vacuously otherwise)."""
    assert "wm_jax.gwas.stream" in _imports(PACKAGE / "gwas" / "run.py")
    assert "wm_jax.gwas.stream" not in _imports(PACKAGE / "gwas" / "kernel.py")
