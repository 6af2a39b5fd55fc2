"""Import what one install profile promises, in a virtualenv that has only that profile's
declared dependencies (`make profiles` builds it). Exits non-zero naming each failure.

    base        every module of `monitor` imports; the judge judges (scipy); the CLI loads every suite
    postgres    SQLAlchemy loads the psycopg driver
    <extra>     every lazy import of a third-party package that extra declares resolves

Why: a module once imported scipy while only the `report` extra pulled it in, so a base install
could neither judge nor serve, and no test noticed because the test virtualenv has every extra.
"""

from __future__ import annotations

import ast
import importlib
import importlib.metadata
import re
import subprocess
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def modules() -> list[str]:
    found = []
    for path in sorted((ROOT / "monitor").rglob("*.py")):
        if "migrations" in path.parts:
            continue
        found.append(".".join(path.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__"))
    return found


def base() -> list[str]:
    failures = []
    for name in modules():
        try:
            importlib.import_module(name)
        except Exception as exc:
            failures.append(f"import {name}: {exc.__class__.__name__}: {exc}")
    from monitor.judge.stats import paired_binary, paired_continuous

    paired_binary([True] * 30 + [False] * 10, [True] * 20 + [False] * 20, 0.95)
    paired_continuous([float(i) for i in range(30)], [i - 0.5 for i in range(30)], 0.95)
    suites = [str(p) for p in sorted((ROOT / "probes").iterdir()) if (p / "suite.yaml").is_file()]
    done = subprocess.run([sys.executable, "-m", "monitor.cli.app", "suites", *suites],
                          capture_output=True, text=True, check=False)
    if done.returncode != 0:
        failures.append(f"forgetmenot suites: {done.stdout}{done.stderr}")
    return failures


def extra(name: str) -> list[str]:
    """Every package the code imports lazily that `name`'s declared distributions provide."""
    if name == "postgres":  # the store reaches psycopg through SQLAlchemy's dialect, not an import
        return _dialect("postgresql+psycopg://forgetmenot@127.0.0.1/none")
    declared = _extra_distributions(name)
    wanted = sorted({top for top in _lazy_imports() if _provided_by(top) & declared})
    if not wanted:
        return [f"extra '{name}': no lazy import of the code belongs to it (stale extra?)"]
    failures = []
    for top in wanted:
        try:
            importlib.import_module(top)
        except Exception as exc:
            failures.append(f"[{name}] import {top}: {exc.__class__.__name__}: {exc}")
    print(f"[{name}] imported {', '.join(wanted)}")
    return failures


def _dialect(url: str) -> list[str]:
    from sqlalchemy import create_engine

    try:
        create_engine(url)  # loads the driver; connects to nothing
    except Exception as exc:
        return [f"{url.split(':')[0]}: {exc.__class__.__name__}: {exc}"]
    print(f"driver for {url.split(':')[0]} loaded")
    return []


def _normal(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _extra_distributions(name: str) -> set[str]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    specs = project["optional-dependencies"][name]
    return {_normal(re.split(r"[\s\[<>=!~;]", spec, maxsplit=1)[0]) for spec in specs}


def _lazy_imports() -> set[str]:
    names: set[str] = set()
    for path in (ROOT / "monitor").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                names |= {alias.name.split(".")[0] for alias in node.names}
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names.add(node.module.split(".")[0])
    return names - set(sys.stdlib_module_names) - {"monitor"}


def _provided_by(top: str) -> set[str]:
    """The installed distributions that provide import name `top`."""
    return {_normal(d) for d in importlib.metadata.packages_distributions().get(top, [])}


def main() -> int:
    profile = sys.argv[1] if len(sys.argv) > 1 else "base"
    failures = base() if profile == "base" else extra(profile)
    for failure in failures:
        print(f"FAIL {failure}", file=sys.stderr)
    if not failures:
        print(f"profile {profile}: ok")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
