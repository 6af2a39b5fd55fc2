"""The package's shape, pinned: the public API, module and function sizes, and that every
third-party import is declared by the install profile that needs it.

The import contracts themselves (one direction of imports between subpackages) are checked by
import-linter in `make lint`; `make profiles` imports every module with only the base install.
"""

from __future__ import annotations

import ast
import functools
import importlib
import importlib.metadata
import re
import sys
import tomllib
from collections.abc import Iterator
from pathlib import Path

import pytest

import monitor

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "monitor"
MIGRATIONS = PACKAGE / "store" / "migrations" / "versions"
MAX_MODULE_LINES = 400
MAX_FUNCTION_LINES = 40

PUBLIC = [
    "Backend", "BackendError", "BackendInfo", "Config", "ConfigError", "FakeBackend", "ForgetmenotError",
    "GenerationRequest", "Item", "Judgement", "LoglikelihoodRequest", "MissingExtra", "ModelJudgement",
    "Phase", "Problem", "RollingResult", "Store", "StoreError", "Suite", "SuiteError", "VersionRef",
    "__version__", "judge_model", "load_config", "load_suite", "load_suites", "probe_suite",
    "probe_version",
]


def _modules() -> Iterator[Path]:
    for path in sorted(PACKAGE.rglob("*.py")):
        if MIGRATIONS not in path.parents:
            yield path


def test_the_public_api_is_what_all_lists() -> None:
    assert sorted(monitor.__all__) == sorted(PUBLIC)
    assert sorted(dir(monitor)) == sorted(PUBLIC)
    missing = [name for name in monitor.__all__ if not hasattr(monitor, name)]
    assert not missing, f"monitor.__all__ names what monitor does not define: {missing}"


def test_importing_monitor_does_not_import_torch() -> None:
    """The public surface stays light: monitoring a served model needs no torch."""
    import subprocess

    code = "import sys, monitor; print('torch' in sys.modules, 'transformers' in sys.modules)"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT)
    assert done.stdout.split() == ["False", "False"]


def test_no_module_is_longer_than_the_limit() -> None:
    long = {str(p.relative_to(ROOT)): n for p in _modules()
            if (n := len(p.read_text().splitlines())) > MAX_MODULE_LINES}
    assert not long, f"modules over {MAX_MODULE_LINES} lines: {long}"


def test_no_function_is_longer_than_the_limit() -> None:
    long = []
    for path in _modules():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                lines = (node.end_lineno or node.lineno) - node.lineno + 1
                if lines > MAX_FUNCTION_LINES:
                    long.append(f"{path.relative_to(ROOT)}:{node.lineno} {node.name} ({lines} lines)")
    assert not long, f"functions over {MAX_FUNCTION_LINES} lines: {long}"


def _imports(tree: ast.Module) -> Iterator[tuple[str, bool]]:
    """(top-level name, imported at module level) for every absolute import a module makes at run
    time; those under `if TYPE_CHECKING:` are for the type checker only."""
    top = {id(node) for node in tree.body}
    typing_only = {id(n) for node in tree.body if isinstance(node, ast.If)
                   and ast.unparse(node.test).endswith("TYPE_CHECKING") for n in ast.walk(node)}
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names = [node.module]
        else:
            continue
        if id(node) in typing_only:
            continue
        at_module_level = id(node) in top
        yield from ((name.split(".")[0], at_module_level) for name in names)


@functools.cache
def _distributions() -> dict[str, list[str]]:
    return importlib.metadata.packages_distributions()


@functools.cache
def _declared() -> tuple[set[str], set[str]]:
    """Distributions the base install declares, and those any extra declares (normalised names)."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]

    def names(specs: list[str]) -> set[str]:
        return {_normal(re.split(r"[\s\[<>=!~;]", spec, maxsplit=1)[0]) for spec in specs}

    extras = {n for specs in project["optional-dependencies"].values() for n in names(specs)}
    return names(project["dependencies"]), extras


def _normal(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


@pytest.mark.parametrize("path", list(_modules()), ids=lambda p: str(p.relative_to(PACKAGE)))
def test_every_third_party_import_is_declared(path: Path) -> None:
    """Module-level imports need the base install; lazy ones an extra (or the base). The judge
    once imported scipy while only the `report` extra pulled it in: a base install could not judge."""
    base, extras = _declared()
    distributions = _distributions()
    stdlib = sys.stdlib_module_names
    wrong = []
    for name, at_module_level in _imports(ast.parse(path.read_text())):
        if name in stdlib or name == "monitor":
            continue
        provided = {_normal(d) for d in distributions.get(name, [])}
        allowed = base if at_module_level else base | extras
        if not provided & allowed:
            where = "the base dependencies" if at_module_level else "any dependency or extra"
            wrong.append(f"{name} (from {sorted(provided) or 'nothing installed'}) is not in {where}")
    assert not wrong, f"{path.relative_to(ROOT)}: {wrong}"


def test_lazy_imports_of_extras_name_the_extra_when_missing() -> None:
    """`MissingExtra` is an ImportError that says what to install."""
    err = monitor.MissingExtra("torch", "model")
    assert isinstance(err, ImportError) and "pip install 'forgetmenot[model]'" in str(err)


def test_every_module_imports() -> None:
    """Each module imports on its own (no cycle hidden by import order). Alembic's `env.py` is a
    script alembic runs, not a module."""
    for path in _modules():
        if path.parent.name == "migrations":
            continue
        name = ".".join(path.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__")
        importlib.import_module(name)
