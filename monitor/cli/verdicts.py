"""`judge`, `verdicts` and `explain`: judging a candidate, listing the verdicts stored (read-only:
what a runbook tells on-call to look with), and the items behind one."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Annotated, Any

import typer
from rich import box
from rich.table import Table

from monitor.cli.context import (
    DEFAULT_CONFIG,
    ConfigOpt,
    ModelOpt,
    Opened,
    Output,
    OutputOpt,
    SuitesOpt,
    console,
    err,
    opened,
    print_json,
)
from monitor.cli.names import kind_named
from monitor.present import tables
from monitor.present.facts import Summaries
from monitor.present.shapes import explained_json, judged_json, verdict_json, verdicts_json
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
    reelicit: Annotated[bool, typer.Option(
        "--reelicit/--no-reelicit", help="Where generation failed, load the candidate (and the baseline, "
        "for its example answers) and ask again, reminded: the diagnosis's second witness.")] = False,
    output: OutputOpt = Output.TEXT,
) -> None:
    """Judge the candidate against the baseline on their newest runs; store and print the verdicts.

    Exits 0 on PASS, 1 on FAIL, 4 on MARGINAL or INCONCLUSIVE, 3 on ERROR.
    """
    from monitor.judge import judge_model

    with opened(config) as policy:
        folder = policy.config.resolve(".forgetmenot/reports")
        write = (lambda v: _write_report(policy.store, v, folder)) if reports else None
        name = policy.model(model)
        cand = policy.version(name, candidate, "--candidate")
        base = policy.version(name, baseline, "--baseline")
        asker = _reelicitor(policy, name, cand, base) if reelicit else None
        judged = judge_model(policy.store, policy.config, policy.suites(suite), name, cand, base,
                             on_verdict=write, reelicit=asker)
        if judged.missing:
            raise judged.missing[0][1]
        kinds = policy.store.verdict_kinds([v.id for v in judged.verdicts() if v.id is not None])
        rows = [(v, kinds.get(v.id or 0, [])) for v in judged.verdicts()]
        said = _summaries(policy, suite, rows)
    if output == Output.JSON:
        shaped = [verdict_json(v, k, summary) for (v, k), summary in zip(rows, said, strict=True)]
        print_json(judged_json(judged.model, judged.candidate, judged.baseline, judged.phase, shaped))
    else:
        _show_judged(judged, rows, said)
    raise typer.Exit(EXIT_CODES.get(judged.phase, 4))


def _reelicitor(policy: Opened, name: str, candidate: str | None, baseline: str | None) -> Any:
    """Each version's backend (by default live's and the baseline's, as `judge_model` picks them),
    loaded only where a suite's generation failed; the live version may be one retraining built."""
    from monitor.probing.factory import backend_for
    from monitor.probing.reelicit import Reelicitor
    from monitor.probing.spool import spool_for
    from monitor.store.versions import with_made

    built = with_made(policy.config, policy.store)
    cand = candidate or policy.store.live_version(policy.config, name)
    base = baseline or policy.config.models[name].baseline
    return Reelicitor(lambda: backend_for(built, name, cand), lambda: backend_for(built, name, base),
                      spool=spool_for(policy.config))


def _show_judged(judged: Any, rows: Sequence[tuple[Verdict, Sequence[VerdictKind]]],
                 said: Sequence[Any]) -> None:
    title = f"{judged.model}: {judged.candidate} vs {judged.baseline}"
    console.print(tables.verdicts_table(rows, title, console.width))
    for (verdict, _), summary in zip(rows, said, strict=True):
        console.print(f"[bold]{verdict.capability}[/bold] {tables.phase(verdict.phase)}: "
                      f"{verdict.reason}", highlight=False)
        _advise(verdict, summary)
    console.print(f"\noverall: {tables.phase(judged.phase)}")


def _summaries(policy: Opened, suite: Sequence[str] | None,
               rows: Sequence[tuple[Verdict, Sequence[VerdictKind]]]) -> list[Any]:
    """What each verdict's page says to do, said the same here (`monitor.present.summary`)."""
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
    output: OutputOpt = Output.TEXT,
    as_json: Annotated[bool, typer.Option("--json", help="The same as --output json.")] = False,
) -> None:
    """List the verdicts stored, newest first. Read-only: it judges nothing (`judge` does, and
    stores what it judges). With --output json each verdict is as GET /api/v1/verdicts gives it.

    Exits 0, also when no verdict matches; 2 on an unknown --model or --phase.
    """
    with opened(config, check_paths=False) as policy:
        named = None if model is None else policy.model(model)
        found = policy.store.verdicts(model=named, candidate=version, capability=capability,
                                      phase=phase, newest=limit)
        kinds = policy.store.verdict_kinds([v.id for v in found if v.id is not None])
        newest_first = list(reversed(found))
        if as_json or output == Output.JSON:
            print_json(verdicts_json(newest_first, kinds, _explaining(policy)))
            return
    if newest_first:
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


def _explaining(policy: Opened) -> Summaries:
    """What each verdict means, read as the API reads it (every suite of the policy)."""
    return Summaries(policy.store, policy.config, policy.suites)


def explain(
    verdict: Annotated[int, typer.Argument(help="Verdict id (see forgetmenot verdicts).")],
    config: ConfigOpt = DEFAULT_CONFIG,
    kind: Annotated[str | None, typer.Option(help="Only this kind (as judge prints it, or in full).")] = None,
    limit: Annotated[int, typer.Option(help="At most this many items per kind.")] = 20,
    output: OutputOpt = Output.TEXT,
) -> None:
    """Show the items a verdict's candidate got wrong that the baseline got right, side by side."""
    with opened(config, check_paths=False) as policy:
        wanted = None if kind is None else kind_named(kind)
        found = policy.store.get_verdict(verdict)
        if found is None:
            raise typer.BadParameter(f"verdict {verdict} does not exist")
        head, kinds = found
        shown = [k.kind for k in kinds if wanted is None or k.kind == wanted]
        if output == Output.JSON:
            print_json(_explained(policy, head, kinds, shown, limit))
        else:
            _show_explained(policy.store, head, shown, limit)


def _show_explained(store: Store, head: Verdict, shown: Sequence[str], limit: int) -> None:
    from monitor.present.explain import regressions_table

    console.print(f"verdict {head.id}: {head.model} {head.candidate} vs {head.baseline}, "
                  f"{head.capability} {tables.phase(head.phase)} ({head.diagnosis})", highlight=False)
    console.print(head.reason, highlight=False)
    if head.report:
        console.print(f"report: {head.report}")
    for kind in shown:
        console.print(regressions_table(store, head, kind, limit))


def _explained(policy: Opened, head: Verdict, kinds: Sequence[VerdictKind], shown: Sequence[str],
               limit: int) -> dict[str, Any]:
    from monitor.present.explain import regressions

    summary = _explaining(policy).of(head, kinds)
    regressed = {kind: regressions(policy.store, head, kind)[:limit] for kind in shown}
    return explained_json(verdict_json(head, kinds, summary), regressed)


COMMANDS: dict[str, Callable[..., Any]] = {"judge": judge, "verdicts": verdicts, "explain": explain}
