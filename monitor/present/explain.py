"""The items behind a verdict: what the baseline got right and the candidate got wrong."""

from __future__ import annotations

from rich.table import Table

from monitor.store import ItemResult, Store, Verdict
from monitor.vocabulary import Kind


def regressions(store: Store, verdict: Verdict, kind: str) -> list[tuple[ItemResult, ItemResult]]:
    """Paired (baseline, candidate) results of one kind, worst regressions first."""
    base = _by_item(store, verdict.baseline_runs, kind)
    cand = _by_item(store, verdict.candidate_runs, kind)
    pairs = [(base[i], cand[i]) for i in sorted(set(base) & set(cand))]
    if kind == Kind.LOGLIKELIHOOD_ROLLING:
        return sorted(pairs, key=lambda p: (p[1].score or 0) - (p[0].score or 0))
    lost = [p for p in pairs if p[0].correct and not p[1].correct]
    return sorted(lost, key=lambda p: (p[1].margin or 0) - (p[0].margin or 0))


def _by_item(store: Store, run_ids: str, kind: str) -> dict[str, ItemResult]:
    found: dict[str, ItemResult] = {}
    for run in (r for r in run_ids.split(",") if r):
        found.update({r.item_id: r for r in store.results(int(run), kind=kind) if r.error_kind is None})
    return found


def regressions_table(store: Store, verdict: Verdict, kind: str, limit: int) -> Table:
    rows = regressions(store, verdict, kind)
    table = Table(title=f"{kind}: {len(rows)} item(s) regressed (showing {min(limit, len(rows))})",
                  show_lines=True)
    for column in ("item", f"baseline {verdict.baseline}", f"candidate {verdict.candidate}", "margin"):
        table.add_column(column)
    for base, cand in rows[:limit]:
        table.add_row(base.item_id, _answer(base), _answer(cand), _margin(base, cand))
    return table


def _answer(result: ItemResult) -> str:
    return (result.output or "").strip()[:200] or "—"


def _margin(base: ItemResult, cand: ItemResult) -> str:
    if base.margin is None or cand.margin is None:
        return "—"
    return f"{base.margin:+.2f} → {cand.margin:+.2f}"
