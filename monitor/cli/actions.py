"""`actions`, `approve` and `rollback`: the audit trail, and the human steps of the ladder."""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated, Any

import typer

from monitor.cli.context import (
    DEFAULT_CONFIG,
    ConfigOpt,
    Output,
    OutputOpt,
    console,
    hooks,
    opened,
    print_json,
    progress_bars,
    whoami,
)
from monitor.present import tables
from monitor.present.shapes import action_json
from monitor.store import Action
from monitor.vocabulary import ActionStatus


def actions(
    config: ConfigOpt = DEFAULT_CONFIG,
    model: Annotated[str | None, typer.Option(help="Only this model.")] = None,
    output: OutputOpt = Output.TEXT,
) -> None:
    """The audit trail of alerts, rollbacks and retrainings, oldest first; with --output json each
    action as GET /api/v1/actions gives it."""
    with opened(config, check_paths=False) as policy:
        named = None if model is None else policy.model(model)
        rows = policy.store.actions(named)
    if output == Output.JSON:
        listed = [action_json(row) for row in rows]
        print_json(listed)
    else:
        console.print(tables.actions_table(rows, "actions", console.width))


def approve(
    action: Annotated[int, typer.Argument(help="The id of an action pending approval.")],
    config: ConfigOpt = DEFAULT_CONFIG,
    by: Annotated[str, typer.Option(help="Who approves (recorded; default: this user).")] = "",
) -> None:
    """Approve an action the manual-approval guard held back, and carry it out."""
    from monitor.actions import ladder

    with opened(config) as policy, progress_bars() as progress:  # approving a retraining trains here
        done = ladder.approve(policy.store, policy.config, action, by or whoami(), hooks(progress))
    _finish(done, "approved")


def rollback(
    model: Annotated[str, typer.Argument(help="The model to roll back.")],
    to: Annotated[str, typer.Option("--to", help="The version to make live.")],
    config: ConfigOpt = DEFAULT_CONFIG,
    dry_run: Annotated[bool, typer.Option(help="Record what would happen, change nothing.")] = False,
    by: Annotated[str, typer.Option(help="Who rolls back (recorded; default: this user).")] = "",
) -> None:
    """Make an earlier version live by hand, through the same guards and audit trail as the monitor."""
    from monitor.actions import ladder

    with opened(config) as policy:
        name = policy.model(model, "MODEL")
        target = policy.version(name, to, "--to") or to
        done = ladder.rollback(policy.store, policy.config, name, target, by or whoami(), dry_run=dry_run)
    _finish(done, "rollback")


def _finish(done: Action, title: str) -> None:
    console.print(tables.actions_table([done], title, console.width))
    raise typer.Exit(0 if ActionStatus(done.status).succeeded else 1)


COMMANDS: dict[str, Callable[..., Any]] = {"actions": actions, "approve": approve, "rollback": rollback}
