"""What the people who look at forgetmenot wait for: its own pages, and the dashboards' queries.

At the monitor benchmark's scale (50 models x 4 versions x 6 suites, 10 runs and verdicts each,
some verdicts FAIL, actions on every model, 300 item results behind one verdict):

1. Each page of `serve` (`/`, `/models/{model}`, `/verdicts/{id}`) fetched over HTTP from the
   real server, 30 times, on SQLite and on the PostgreSQL server at 127.0.0.1:5432 (target: median
   at most 200 ms).
2. Every PromQL expression of the shipped Grafana dashboards, variables filled in as Grafana
   would, evaluated by a real Prometheus that has scraped that server: instant queries and
   6-hour range queries, timed as Prometheus reports them (its own evaluation time) and as a
   client sees them.

    make bench-monitor     # writes benchmarks/results/pages.{json,md}
"""

from __future__ import annotations

import json
import statistics
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

from monitor_overhead import HISTORY, MODELS, PG_ADMIN, SUITES, VERSIONS, populate
from sqlalchemy import insert, select, text, update

from monitor.policy.schema import Config
from monitor.service.http import Api, HttpServer
from monitor.store import Action, ItemResult, Run, Store, Verdict, VerdictKind
from monitor.testing.postgres import scratch_database

RESULTS = Path(__file__).resolve().parent / "results"
REPEATS = 30
ITEMS = 300


def policy() -> Config:
    """The fleet the store holds, as a policy file would name it."""
    versions = {f"v{v}": {"path": "."} for v in range(VERSIONS)}
    return Config.model_validate({
        "models": {f"model-{m}": {"versions": versions, "baseline": "v0", "live": f"v{VERSIONS - 1}"}
                   for m in range(MODELS)},
        "suites": [f"suite-{s}" for s in range(SUITES)]})


def enrich(url: str) -> int:
    """Make the history look lived in: the newest verdict of every fifth model FAILs, every
    model has actions, and one failing verdict has the items behind it. Returns that verdict."""
    store = Store(url)
    now = datetime.now(UTC)
    with store.engine.begin() as conn:
        newest = conn.execute(text(
            "SELECT max(id) FROM verdict GROUP BY model, candidate, capability")).scalars().all()
        conn.execute(update(Verdict).where(Verdict.id.in_(newest), Verdict.model.in_(  # type: ignore[union-attr]
            [f"model-{m}" for m in range(0, MODELS, 5)])).values(
            phase="FAIL", diagnosis="alignment_loss", drop=0.12, low=0.07, high=0.17))
        conn.execute(update(Verdict).values(rules=json.dumps({"max_drop": 0.05, "max_drop_nats": 0.1})))
        conn.execute(update(VerdictKind).where(VerdictKind.verdict_id.in_(newest)).values(  # type: ignore[union-attr]
            phase="FAIL", drop=0.12, low=0.07, high=0.17))
        conn.execute(insert(Action), [
            dict(created_at=now - timedelta(hours=h), finished_at=now - timedelta(hours=h),
                 model=f"model-{m}",
                 kind=kind, trigger="verdict", capability="cap-0", diagnosis="alignment_loss",
                 from_version="v2", to_version="v0" if kind == "rollback" else None, status="done",
                 reason="breach", actor="bench")
            for m in range(MODELS) for h, kind in enumerate(("alert", "retrain", "rollback"))])
        verdict = conn.execute(select(Verdict).where(Verdict.model == "model-0", Verdict.candidate == "v3",
                                                     Verdict.capability == "cap-0")
                               .order_by(Verdict.id.desc()).limit(1)).first()  # type: ignore[union-attr]
        assert verdict is not None
        runs = {v: conn.execute(select(Run.id).where(Run.model == "model-0", Run.version == v,
                                                     Run.suite == "suite-0")
                                .order_by(Run.id.desc()).limit(1)).scalar_one()  # type: ignore[union-attr]
                for v in ("v0", "v3")}
        conn.execute(insert(ItemResult), [
            dict(run_id=runs[v], item_id=f"item-{i:04d}", kind=k, score=float(right),
                 correct=right, margin=1.0 if right else -1.0,
                 output=f"answer {i} of {v}: " + ("right" if right else "<b>wrong</b>"), latency_ms=5.0)
            for v in ("v0", "v3") for k in ("multiple_choice", "generate_until") for i in range(ITEMS)
            for right in [v == "v0" or i % 4 != 0]])
        conn.execute(update(Verdict).where(Verdict.id == verdict.id).values(
            candidate_runs=str(runs["v3"]), baseline_runs=str(runs["v0"])))
    store.close()
    return int(verdict.id)


@contextmanager
def serving(url: str) -> Iterator[tuple[str, Store]]:
    store = Store(url)
    server = HttpServer(Api(policy(), store), port=0).start()
    try:
        yield f"http://127.0.0.1:{server.port}", store
    finally:
        server.stop()
        store.close()


def _get(url: str) -> tuple[float, int]:
    began = time.perf_counter()
    with urllib.request.urlopen(url, timeout=60) as reply:
        size = len(reply.read())
        status = reply.status
    if status != 200:
        raise RuntimeError(f"{url} answered {status}")
    return time.perf_counter() - began, size


def page_times(base: str, verdict_id: int) -> dict[str, dict[str, float]]:
    pages = {"fleet board /": "/", "model page /models/model-0": "/models/model-0",
             f"verdict page /verdicts/{verdict_id}": f"/verdicts/{verdict_id}"}
    found: dict[str, dict[str, float]] = {}
    for name, path in pages.items():
        first, size = _get(base + path)
        times = sorted(_get(base + path)[0] for _ in range(REPEATS))
        found[name] = {"median_ms": statistics.median(times) * 1000,
                       "p95_ms": times[int(0.95 * len(times)) - 1] * 1000,
                       "first_ms": first * 1000, "kib": size / 1024}
    return found


def dashboard_queries() -> list[tuple[str, str, str]]:
    """(dashboard, panel, expression) for every query the shipped dashboards make."""
    from monitor.metrics.dashboards import queries

    return [(d, p, q) for d, p, q in queries(model="model-0", version="v3", capability="cap-0")]


def _prometheus(prom: str, path: str, params: dict[str, str]) -> tuple[float, float, int]:
    began = time.perf_counter()
    with urllib.request.urlopen(f"{prom}{path}?{urlencode({**params, 'stats': 'all'})}",
                                timeout=60) as reply:
        body = json.loads(reply.read())
    wall = time.perf_counter() - began
    if body.get("status") != "success":
        raise RuntimeError(f"query failed: {body}")
    evaluated = float(body["data"].get("stats", {}).get("timings", {}).get("evalTotalTime", wall))
    return evaluated, wall, len(body["data"]["result"])


def act(store: Store) -> None:
    """A round of actions on a few models, as a breach would set off."""
    now = datetime.now(UTC)
    with store.engine.begin() as conn:
        conn.execute(insert(Action), [
            dict(created_at=now, finished_at=now, model=f"model-{m}", kind=kind, trigger="verdict",
                 capability="cap-0", diagnosis="alignment_loss", from_version="v3", status=status,
                 reason="breach", actor="bench")
            for m in range(0, MODELS, 5) for kind, status in (("alert", "done"), ("retrain", "rejected"))])


def query_times(base: str, store: Store, workdir: Path) -> dict[str, Any]:
    from monitor.testing.stack import stack

    rules = Path(__file__).resolve().parent.parent / "alerts" / "forgetmenot.rules.yml"
    with stack(workdir, base.removeprefix("http://"), rules, interval="2s") as s:
        _wait_for_samples(s.prometheus)
        act(store)  # counters must move while Prometheus watches, or increase() has nothing to show
        _wait_for_samples(s.prometheus, scrapes=8)
        now = time.time()
        rows = []
        for dashboard, panel, expr in dashboard_queries():
            instant = [_prometheus(s.prometheus, "/api/v1/query", {"query": expr, "time": str(now)})
                       for _ in range(5)]
            ranged = [_prometheus(s.prometheus, "/api/v1/query_range", {
                "query": expr, "start": str(now - 6 * 3600), "end": str(now), "step": "30"})
                for _ in range(5)]
            rows.append({"dashboard": dashboard, "panel": panel, "series": instant[0][2],
                         "instant_eval_ms": statistics.median(r[0] for r in instant) * 1000,
                         "instant_wall_ms": statistics.median(r[1] for r in instant) * 1000,
                         "range_eval_ms": statistics.median(r[0] for r in ranged) * 1000,
                         "range_wall_ms": statistics.median(r[1] for r in ranged) * 1000})
    return {"queries": rows, "empty": [r["panel"] for r in rows if r["series"] == 0]}


def _wait_for_samples(prom: str, scrapes: int = 4, timeout: float = 120) -> None:
    """Until Prometheus has scraped the monitor a few times, so rate() and increase() see two samples."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        _, _, found = _prometheus(prom, "/api/v1/query", {"query": f"count_over_time(up[5m]) >= {scrapes}"})
        if found:
            return
        time.sleep(1)
    raise RuntimeError("Prometheus did not scrape the monitor in time")


def main() -> None:
    results: dict[str, Any] = {"shape": f"{MODELS} models x {VERSIONS} versions x {SUITES} suites, "
                                        f"{HISTORY} runs and verdicts each, {ITEMS} items behind the "
                                        f"verdict shown"}
    with tempfile.TemporaryDirectory() as tmp:
        sqlite = f"sqlite:///{tmp}/pages.db"
        populate(sqlite)
        verdict = enrich(sqlite)
        with serving(sqlite) as (base, store):
            results["pages_sqlite"] = page_times(base, verdict)
            print(json.dumps(results, indent=2), flush=True)
            work = Path(tmp) / "stack"
            work.mkdir()
            results["prometheus"] = query_times(base, store, work)
    with scratch_database(PG_ADMIN, "fmn_bench_") as pg:
        populate(pg)
        verdict = enrich(pg)
        with serving(pg) as (base, _):
            results["pages_postgres"] = page_times(base, verdict)
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "pages.json").write_text(json.dumps(results, indent=2) + "\n")
    (RESULTS / "pages.md").write_text(markdown(results))
    print(markdown(results))


def markdown(r: dict[str, Any]) -> str:
    lines = [f"Shape: {r['shape']}.", "",
             "| page | SQLite median (p95) | PostgreSQL median (p95) | size | target |",
             "|---|---|---|---|---|"]
    for name, lite in r["pages_sqlite"].items():
        pg = r["pages_postgres"][name]
        lines.append(f"| {name} | {lite['median_ms']:.0f} ms ({lite['p95_ms']:.0f}) | "
                     f"{pg['median_ms']:.0f} ms ({pg['p95_ms']:.0f}) | {lite['kib']:.0f} KiB | ≤ 200 ms |")
    rows = r["prometheus"]["queries"]
    lines += ["", f"Dashboard queries in Prometheus ({len(rows)} expressions; empty: "
                  f"{len(r['prometheus']['empty'])}), median of 5, Prometheus's own evaluation time "
                  "(client wall time):", "",
              "| dashboard | panel | series | instant | 6 h range, 30 s step |", "|---|---|---|---|---|"]
    for q in rows:
        lines.append(f"| {q['dashboard']} | {q['panel']} | {q['series']} | {q['instant_eval_ms']:.1f} ms "
                     f"({q['instant_wall_ms']:.1f}) | {q['range_eval_ms']:.1f} ms "
                     f"({q['range_wall_ms']:.1f}) |")
    worst = max(rows, key=lambda q: q["range_eval_ms"])
    lines += ["", f"Slowest: {worst['panel']} ({worst['dashboard']}), "
                  f"{worst['range_eval_ms']:.1f} ms over 6 h.", ""]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
