"""`judge` and `explain`: the verdicts on a candidate, and the items behind one."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

import typer

from monitor.cli.context import DEFAULT_CONFIG, ConfigOpt, ModelOpt, SuitesOpt, console, err, opened
from monitor.present import tables
from monitor.store import Store, Verdict
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
        judged = judge_model(policy.store, policy.config, policy.suites(suite), policy.model(model),
                             candidate, baseline, on_verdict=write)
        if judged.missing:
            raise judged.missing[0][1]
        kinds = policy.store.verdict_kinds([v.id for v in judged.verdicts() if v.id is not None])
    rows = [(v, kinds.get(v.id or 0, [])) for v in judged.verdicts()]
    console.print(tables.verdicts_table(rows, f"{judged.model}: {judged.candidate} vs {judged.baseline}",
                                        console.width))
    for verdict in judged.verdicts():
        console.print(f"[bold]{verdict.capability}[/bold] {tables.phase(verdict.phase)}: "
                      f"{verdict.reason}", highlight=False)
    console.print(f"\noverall: {tables.phase(judged.phase)}")
    raise typer.Exit(EXIT_CODES.get(judged.phase, 4))


def _write_report(store: Store, verdict: Verdict, folder: Path) -> None:
    from monitor.errors import MissingExtra

    try:
        from monitor.present.evidence import write_report
    except MissingExtra as exc:
        err.print(f"[yellow]no report[/yellow]: {exc}")
        return
    path = write_report(store, verdict.id or 0, folder)
    store.set_report(verdict.id or 0, str(path))


def explain(
    verdict: Annotated[int, typer.Argument(help="Verdict id (see forgetmenot judge).")],
    config: ConfigOpt = DEFAULT_CONFIG,
    kind: Annotated[str | None, typer.Option(help="Only this kind.")] = None,
    limit: Annotated[int, typer.Option(help="At most this many items per kind.")] = 20,
) -> None:
    """Show the items a verdict's candidate got wrong that the baseline got right, side by side."""
    from monitor.present.explain import regressions_table

    with opened(config, check_paths=False) as policy:
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
            if kind is None or k.kind == kind:
                console.print(regressions_table(policy.store, head, k.kind, limit))


COMMANDS: dict[str, Callable[..., Any]] = {"judge": judge, "explain": explain}
