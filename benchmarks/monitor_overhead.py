"""Monitor benchmark: what the monitor costs beyond probing, and how fast /metrics answers.

1. Overhead: one scheduled cycle (claim, probe every suite, store every item, judge, store
   verdicts) on the real SmolLM2, with the backend's own time measured apart. Overhead is the
   cycle's wall time minus the backend's, as a fraction of the backend's.
2. Scrape: a store holding 50 models x 4 versions x 6 suites with history (10 runs each, and
   verdicts), served by the real HTTP server; GET /metrics timed 50 times, on SQLite and on the
   PostgreSQL server at 127.0.0.1:5432.

    make bench-monitor     # writes benchmarks/results/monitor.{json,md}
"""

from __future__ import annotations

import json
import statistics
import tempfile
import time
import urllib.request
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import insert, text

from monitor.policy.schema import Config
from monitor.service.http import Api, HttpServer
from monitor.store import Run, RunKind, Store, SuiteRecord, Verdict, VerdictKind
from monitor.testing.postgres import scratch_database

RESULTS = Path(__file__).resolve().parent / "results"
REPO = Path(__file__).resolve().parent.parent
MODELS, VERSIONS, SUITES, HISTORY = 50, 4, 6, 10
PG_ADMIN = "postgresql+psycopg://postgres@127.0.0.1:5432/test"


class TimedBackend:
    """Wraps a backend and adds up the time spent inside it."""

    def __init__(self, inner: Any) -> None:
        self.inner, self.seconds = inner, 0.0

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    def _timed(self, method: str, *args: Any) -> Any:
        began = time.perf_counter()
        try:
            return getattr(self.inner, method)(*args)
        finally:
            self.seconds += time.perf_counter() - began

    def loglikelihood(self, requests: Any) -> Any:
        return self._timed("loglikelihood", requests)

    def loglikelihood_rolling(self, texts: Any) -> Any:
        return self._timed("loglikelihood_rolling", texts)

    def generate(self, requests: Any) -> Any:
        return self._timed("generate", requests)


def overhead() -> dict[str, float]:
    from monitor.probing.weights import prepare_smollm2
    from monitor.service.scheduler import open_monitor

    model = prepare_smollm2()
    with tempfile.TemporaryDirectory() as tmp:
        policy = Path(tmp) / "forgetmenot.yaml"
        policy.write_text(f"""\
database: sqlite:///{tmp}/fmn.db
models:
  bot:
    backend: {{kind: transformers, device: auto, dtype: float32, batch_size: 16}}
    versions: {{v1: {{path: {model}}}, v2: {{path: {model}}}}}
    baseline: v1
    live: v2
suites: [{REPO}/probes/arithmetic, {REPO}/probes/general-knowledge, {REPO}/probes/fluency]
""")
        backends: dict[str, TimedBackend] = {}

        def load(config: Config, name: str, version: str) -> Any:
            from monitor.probing.factory import backend_for

            backends[version] = TimedBackend(backend_for(config, name, version))
            return backends[version]

        monitor = open_monitor(policy, load_backend=load)
        monitor.cycle("bot", "v1", slot=1)
        began = time.perf_counter()
        monitor.cycle("bot", "v2", slot=1)  # includes judging v2 against v1
        wall = time.perf_counter() - began
    probe = backends["v2"].seconds
    return {"cycle_seconds": wall, "backend_seconds": probe, "overhead_seconds": wall - probe,
            "overhead_fraction": (wall - probe) / probe}


def populate(url: str) -> None:
    store = Store(url)
    now = datetime.now(UTC)
    with store.engine.begin() as conn:
        suite_ids = []
        for s in range(SUITES):
            result = conn.execute(insert(SuiteRecord).values(
                name=f"suite-{s}", version=1, capability=f"cap-{s}", content_hash=f"h{s}", created_at=now))
            suite_ids.append(result.inserted_primary_key[0])
        runs = [dict(model=f"model-{m}", version=f"v{v}", suite_id=suite_ids[s], suite=f"suite-{s}",
                     capability=f"cap-{s}", split="probe", backend="transformers", device="cpu",
                     dtype="float32", status="complete", started_at=now - timedelta(hours=h),
                     finished_at=now - timedelta(hours=h), item_count=300, error_count=0)
                for m in range(MODELS) for v in range(VERSIONS) for s in range(SUITES)
                for h in range(HISTORY)]
        conn.execute(insert(Run), runs)
        ids = [row[0] for row in conn.execute(text("SELECT id FROM run ORDER BY id"))]
        conn.execute(insert(RunKind), [dict(run_id=i, kind=k, mean_score=0.7, scored=150, errors=0)
                                       for i in ids for k in ("multiple_choice", "generate_until")])
        verdicts = [dict(created_at=now - timedelta(hours=h), model=f"model-{m}", candidate=f"v{v}",
                         baseline="v0", suite=f"suite-{s}", capability=f"cap-{s}", content_hash=f"h{s}",
                         phase="PASS", diagnosis="none", reason="r", muted=False, critical=False,
                         candidate_runs="", baseline_runs="", drop=0.01, low=-0.02, high=0.03, p_value=0.5)
                    for m in range(MODELS) for v in range(1, VERSIONS) for s in range(SUITES)
                    for h in range(HISTORY)]
        conn.execute(insert(Verdict), verdicts)
        vids = [row[0] for row in conn.execute(text("SELECT id FROM verdict ORDER BY id"))]
        conn.execute(insert(VerdictKind), [dict(verdict_id=i, kind=k, phase="PASS", reason="r", n=150,
                                                baseline_score=0.7, candidate_score=0.69, drop=0.01,
                                                low=-0.02, high=0.03, p_value=0.5)
                                           for i in vids for k in ("multiple_choice", "generate_until")])
    store.close()


def scrape(url: str, repeats: int = 50) -> dict[str, float]:
    store = Store(url)
    config = Config.model_validate({"models": {"m": {"versions": {"v": {"path": "."}}, "baseline": "v",
                                                      "live": "v"}}, "suites": ["x"]})
    server = HttpServer(Api(config, store), port=0).start()
    def get() -> tuple[float, int]:
        began = time.perf_counter()
        with urllib.request.urlopen(f"http://127.0.0.1:{server.port}/metrics", timeout=30) as reply:
            size = len(reply.read())
        return time.perf_counter() - began, size

    try:
        times = [get()[0] for _ in range(repeats + 3)]
        after_change = []
        for _ in range(10):  # a run finishes, then Prometheus scrapes straight away
            record = store.ensure_suite("suite-0", 1, "cap-0", "h0")
            run = store.start_run(model="model-0", version="v0", suite_id=record.id, suite="suite-0",
                                  capability="cap-0", backend="transformers", device="cpu", dtype="float32")
            store.finish_run(run.id or 0, "complete")
            after_change.append(get()[0])
            time.sleep(1.5)
        size = get()[1]
    finally:
        server.stop()
        store.close()
    kept = sorted(times[3:])
    return {"median_ms": statistics.median(kept) * 1000, "p95_ms": kept[int(0.95 * len(kept)) - 1] * 1000,
            "first_ms": times[0] * 1000, "after_change_max_ms": max(after_change) * 1000, "bytes": size}


def main() -> None:
    results: dict[str, Any] = {"shape": f"{MODELS} models x {VERSIONS} versions x {SUITES} suites, "
                                        f"{HISTORY} runs and verdicts each"}
    with tempfile.TemporaryDirectory() as tmp:
        sqlite = f"sqlite:///{tmp}/scrape.db"
        populate(sqlite)
        results["scrape_sqlite"] = scrape(sqlite)
    with scratch_database(PG_ADMIN, "fmn_bench_") as pg:
        populate(pg)
        results["scrape_postgres"] = scrape(pg)
    print(json.dumps(results, indent=2), flush=True)
    results["overhead"] = overhead()
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "monitor.json").write_text(json.dumps(results, indent=2) + "\n")
    (RESULTS / "monitor.md").write_text(markdown(results))
    print(markdown(results))


def markdown(r: dict[str, Any]) -> str:
    o = r["overhead"]
    return "\n".join([
        "| measure | result | target |", "|---|---|---|",
        f"| monitor overhead per cycle (claim, store, judge) | {o['overhead_seconds']:.2f} s on "
        f"{o['backend_seconds']:.1f} s of probing = **{o['overhead_fraction']:.1%}** | ≤ 2% |",
        f"| GET /metrics, SQLite, {r['shape']} | median {r['scrape_sqlite']['median_ms']:.0f} ms, "
        f"p95 {r['scrape_sqlite']['p95_ms']:.0f} ms ({r['scrape_sqlite']['bytes'] // 1024} KiB); right "
        f"after a run finishes: max {r['scrape_sqlite']['after_change_max_ms']:.0f} ms; the very first "
        f"scrape after start {r['scrape_sqlite']['first_ms']:.0f} ms | ≤ 100 ms |",
        f"| GET /metrics, PostgreSQL, same | median {r['scrape_postgres']['median_ms']:.0f} ms, "
        f"p95 {r['scrape_postgres']['p95_ms']:.0f} ms; right after a run finishes: max "
        f"{r['scrape_postgres']['after_change_max_ms']:.0f} ms; the very first scrape after start "
        f"{r['scrape_postgres']['first_ms']:.0f} ms | ≤ 100 ms |", ""])


if __name__ == "__main__":
    main()
