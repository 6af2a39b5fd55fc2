"""`validate` and `suites`: check what the ML lead wrote before anything runs."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

import typer

from monitor.cli.context import DEFAULT_CONFIG, console, opened, reported
from monitor.policy.suites import load_suite
from monitor.vocabulary import Split


def validate(
    file: Annotated[Path | None, typer.Argument(help="Policy file (same as -c).", show_default=False)] = None,
    config: Annotated[Path, typer.Option("--config", "-c", help="Policy file.")] = DEFAULT_CONFIG,
) -> None:
    """Check a policy file and every suite it names, without running anything."""
    path = file or config
    with opened(path) as policy:
        suites = policy.all_suites
    items = sum(len(s.items) for s in suites)
    console.print(f"[green]ok[/green] {path}: {len(policy.config.models)} model(s), {len(suites)} suite(s), "
                  f"{items} items")


def suites(paths: Annotated[list[Path], typer.Argument(help="Suite folders.")]) -> None:
    """Load probe suites and show what each one holds (and every problem, if any)."""
    from rich.table import Table

    table = Table(title="probe suites")
    for column in ("suite", "capability", "kinds", "probe", "recovery", "content hash"):
        table.add_column(column)
    with reported():
        for path in paths:
            s = load_suite(path)
            table.add_row(s.name, s.capability, ", ".join(s.kinds), str(len(s.select(Split.PROBE))),
                          str(len(s.select(Split.RECOVERY))), s.content_hash[:12])
    console.print(table)


COMMANDS: dict[str, Callable[..., Any]] = {"validate": validate, "suites": suites}
