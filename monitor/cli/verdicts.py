"""`judge`, `verdicts` and `explain`: judging a candidate, listing the verdicts stored (read-only:
what a runbook tells on-call to look with), and the items behind one."""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Annotated, Any

import typer
from rich import box
from rich.table import Table

from monitor.cli.context import DEFAULT_CONFIG, ConfigOpt, ModelOpt, SuitesOpt, console, err, opened
from monitor.cli.names import kind_named
from monitor.present import tables
from monitor.store import Store, Verdict, VerdictKind
from monitor.units import MISSING, drop_text
from monitor.vocabulary import Phase

EXIT_CODES = {Phase.PASS: 0, Phase.FAIL: 1, Phase.ERROR: 3}  # MARGINAL, INCONCLUSIVE: 4


def judge(
    config: ConfigOpt = DEFAULT_CONFIG,
    model: ModelOpt = None,
    candidate: Annotated[str | None, typer.Option(help="Version judged (default: live).")] = None,
    baseline: Annotated[str | None, typer.Option(help="Reference version (default: baseline).")] = None,
    suite: SuitesOpt = None,
    reports: Annotated[bool, typer.Option("--report/--no-report",
                                          help="Write an evidently HTML report per verdict.")] = True,
) -> None:
    """Judge the candidate against the baseline on their newest runs; store and print the verdicts.

    Exits 0 on PASS, 1 on FAIL, 4 on MARGINAL or INCONCLUSIVE, 3 on ERROR.
    """
    from monitor.judge import judge_model

    with opened(config) as policy:
        folder = policy.config.resolve(".forgetmenot/reports")
        write = (lambda v: _write_report(policy.store, v, folder)) if reports else None
        name = policy.model(model)
        judged = judge_model(policy.store, policy.config, policy.suites(suite), name,
                             policy.version(name, candidate, "--candidate"),
                             policy.version(name, baseline, "--baseline"), on_verdict=write)
        if judged.missing:
            raise judged.missing[0][1]
        kinds = policy.store.verdict_kinds([v.id for v in judged.verdicts() if v.id is not None])
        rows = [(v, kinds.get(v.id or 0, [])) for v in judged.verdicts()]
        said = _summaries(policy, suite, rows)
    console.print(tables.verdicts_table(rows, f"{judged.model}: {judged.candidate} vs {judged.baseline}",
                                        console.width))
    for (verdict, _), summary in zip(rows, said, strict=True):
        console.print(f"[bold]{verdict.capability}[/bold] {tables.phase(verdict.phase)}: "
                      f"{verdict.reason}", highlight=False)
        _advise(verdict, summary)
    console.print(f"\noverall: {tables.phase(judged.phase)}")
    raise typer.Exit(EXIT_CODES.get(judged.phase, 4))


def _summaries(policy: Any, suite: Sequence[str] | None,
               rows: Sequence[tuple[Verdict, Sequence[VerdictKind]]]) -> list[Any]:
    """What each verdict's page says to do, said the same here (`monitor.present.summary`)."""
    from monitor.present.facts import Summaries

    summaries = Summaries(policy.store, policy.config, lambda: policy.suites(suite))
    return [summaries.of(verdict, kinds) for verdict, kinds in rows]


def _advise(verdict: Verdict, summary: Any) -> None:
    if verdict.phase == Phase.PASS:
        return
    if summary.banner:
        console.print(f"  [bold red]{summary.banner}[/bold red]", highlight=False)
    console.print(f"  what to do: {summary.todo}", highlight=False)
    if summary.command:
        console.print(f"  [bold]{summary.command}[/bold]", highlight=False)


def _write_report(store: Store, verdict: Verdict, folder: Path) -> None:
    """A verdict judged again keeps the report it has: a report is named by its database and
    content, so the file is still the right one."""
    from monitor.errors import MissingExtra

    if verdict.report and Path(verdict.report).is_file():
        return
    try:
        from monitor.present.evidence import write_report
    except MissingExtra as exc:
        err.print(f"[yellow]no report[/yellow]: {exc}")
        return
    path = write_report(store, verdict.id or 0, folder)
    store.set_report(verdict.id or 0, str(path))


WIDE = ("verdict", "when", "model", "version", "capability", "phase", "diagnosis", "drop")
NARROW = ("verdict", "version", "capability", "phase", "diagnosis", "drop")
UNBROKEN = ("verdict", "phase", "drop")  # never wrapped: the id `explain` takes, and what to read first


def verdicts(
    config: ConfigOpt = DEFAULT_CONFIG,
    model: Annotated[str | None, typer.Option(help="Only this model.")] = None,
    version: Annotated[str | None, typer.Option(help="Only verdicts on this candidate version.")] = None,
    capability: Annotated[str | None, typer.Option(help="Only this capability.")] = None,
    phase: Annotated[Phase | None, typer.Option(case_sensitive=False, help="Only this phase.")] = None,
    limit: Annotated[int, typer.Option(min=1, help="At most this many, the newest.")] = 20,
    as_json: Annotated[bool, typer.Option("--json", help="JSON: each verdict as GET /api/v1/verdicts "
                                          "gives it, with its per-kind statistics.")] = False,
) -> None:
    """List the verdicts stored, newest first. Read-only: it judges nothing (`judge` does, and
    stores what it judges).

    Exits 0, also when no verdict matches; 2 on an unknown --model or --phase.
    """
    with opened(config, check_paths=False) as policy:
        named = None if model is None else policy.model(model)
        found = policy.store.verdicts(model=named, candidate=version, capability=capability,
                                      phase=phase, newest=limit)
        kinds = policy.store.verdict_kinds([v.id for v in found if v.id is not None])
    newest_first = list(reversed(found))
    if as_json:
        rows = [_verdict_json(v, kinds.get(v.id or 0, [])) for v in newest_first]
        typer.echo(json.dumps(rows, indent=2))
    elif newest_first:
        console.print(_listing(newest_first, kinds, console.width))
    else:
        console.print("no verdict matches")


def _listing(found: Sequence[Verdict], kinds: dict[int, list[VerdictKind]], width: int) -> Table:
    """Under `tables.NARROW` columns the time and the model are left out and the columns sit one
    space apart, so an 80-column terminal shows every remaining cell whole."""
    narrow = width < tables.NARROW
    columns = NARROW if narrow else WIDE
    table = Table(title="verdicts, newest first", box=box.SIMPLE_HEAD, pad_edge=False)
    if narrow:
        table.padding = (0, 0)
    for column in columns:
        table.add_column(column, no_wrap=column in UNBROKEN)
    for verdict in found:
        cells = _listed(verdict, kinds.get(verdict.id or 0, []), narrow)
        table.add_row(*[cells[column] for column in columns])
    return table


def _listed(verdict: Verdict, kinds: Sequence[VerdictKind], narrow: bool) -> dict[str, str]:
    """The verdict's headline drop is its worst kind's: the kind with that drop gives the unit."""
    headline = next((k for k in kinds if k.drop == verdict.drop), None)
    drop = MISSING if headline is None else drop_text(headline.kind, verdict.drop)
    diagnosis = verdict.diagnosis.replace("_loss", "") if narrow else verdict.diagnosis
    return {"verdict": str(verdict.id), "when": f"{verdict.created_at:%Y-%m-%d %H:%M}",
            "model": verdict.model, "version": f"{verdict.candidate} vs {verdict.baseline}",
            "capability": verdict.capability, "phase": tables.phase(verdict.phase),
            "diagnosis": diagnosis, "drop": drop}


def _verdict_json(verdict: Verdict, kinds: Sequence[VerdictKind]) -> dict[str, Any]:
    row = verdict.model_dump(mode="json")
    row["kinds"] = [k.model_dump(mode="json", exclude={"verdict_id"}) for k in kinds]
    return row


def explain(
    verdict: Annotated[int, typer.Argument(help="Verdict id (see forgetmenot verdicts).")],
    config: ConfigOpt = DEFAULT_CONFIG,
    kind: Annotated[str | None, typer.Option(help="Only this kind (as judge prints it, or in full).")] = None,
    limit: Annotated[int, typer.Option(help="At most this many items per kind.")] = 20,
) -> None:
    """Show the items a verdict's candidate got wrong that the baseline got right, side by side."""
    from monitor.present.explain import regressions_table

    with opened(config, check_paths=False) as policy:
        wanted = None if kind is None else kind_named(kind)
        found = policy.store.get_verdict(verdict)
        if found is None:
            raise typer.BadParameter(f"verdict {verdict} does not exist")
        head, kinds = found
        console.print(f"verdict {head.id}: {head.model} {head.candidate} vs {head.baseline}, "
                      f"{head.capability} {tables.phase(head.phase)} ({head.diagnosis})", highlight=False)
        console.print(head.reason, highlight=False)
        if head.report:
            console.print(f"report: {head.report}")
        for k in kinds:
            if wanted is None or k.kind == wanted:
                console.print(regressions_table(policy.store, head, k.kind, limit))


COMMANDS: dict[str, Callable[..., Any]] = {"judge": judge, "verdicts": verdicts, "explain": explain}
