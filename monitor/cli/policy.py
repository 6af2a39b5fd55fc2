"""`validate` and `suites`: check what the ML lead wrote before anything runs."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.markup import escape
from rich.table import Table

from monitor.cli.context import DEFAULT_CONFIG, Output, OutputOpt, console, err, print_json, reported
from monitor.policy.loading import check_policy
from monitor.policy.suites import Suite, load_suite
from monitor.vocabulary import Severity, Split


def validate(
    file: Annotated[Path | None, typer.Argument(help="Policy file (same as -c).", show_default=False)] = None,
    config: Annotated[Path, typer.Option("--config", "-c", help="Policy file.")] = DEFAULT_CONFIG,
    strict: Annotated[bool, typer.Option(help="Fail (exit 2) on warnings as on errors.")] = False,
) -> None:
    """Check a policy file and every suite it names, without running anything: every error, and a
    warning for what loads but cannot work as written (a capability that can never PASS or FAIL,
    a tolerance no kind uses, retraining with nothing to train on)."""
    path = file or config
    checked = check_policy(path)
    for problem in checked.problems:
        err.print(f"{LABELS[problem.severity]} {escape(str(problem))}", highlight=False, soft_wrap=True)
    if checked.errors or (strict and checked.warnings) or checked.config is None:
        raise typer.Exit(2)
    items = sum(len(s.items) for s in checked.suites)
    warned = f", {len(checked.warnings)} warning(s)" if checked.warnings else ""
    console.print(f"[green]ok[/green] {path}: {len(checked.config.models)} model(s), {len(checked.suites)} "
                  f"suite(s), {items} items{warned}", highlight=False)


LABELS = {Severity.ERROR: "[red]error[/red]", Severity.WARNING: "[yellow]warning[/yellow]"}


def suites(paths: Annotated[list[Path], typer.Argument(help="Suite folders.")],
           output: OutputOpt = Output.TEXT) -> None:
    """Load probe suites and show what each one holds (and every problem, if any)."""
    from monitor.present.shapes import suite_json

    with reported():
        loaded = [load_suite(path) for path in paths]
    if output == Output.JSON:
        listed = [suite_json(suite) for suite in loaded]
        print_json(listed)
    else:
        console.print(_suites_table(loaded))


def _suites_table(loaded: list[Suite]) -> Table:
    table = Table(title="probe suites")
    for column in ("suite", "capability", "kinds", "probe", "recovery", "content hash"):
        table.add_column(column)
    for s in loaded:
        table.add_row(s.name, s.capability, ", ".join(s.kinds), str(len(s.select(Split.PROBE))),
                      str(len(s.select(Split.RECOVERY))), s.content_hash[:12])
    return table


COMMANDS: dict[str, Callable[..., Any]] = {"validate": validate, "suites": suites}
