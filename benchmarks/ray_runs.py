"""Ray benchmark: runs per hour with the local executor, and on a Ray cluster of one and two
worker nodes on this machine, and what Ray adds to each run.

1. Throughput: `RUNS` probe runs of the real SmolLM2 (the arithmetic suite, multiple choice and
   generation), fired at once through one monitor as the scheduler fires them (one model per run,
   each its own job). Local: one device slot, so they take turns. Ray: the same 2 cores, as one
   worker node of 2 CPUs (a run asks for 2, so one at a time) or as two nodes of 1 CPU each (a
   run asks for 1, so two at a time). Ray sets a worker's threads to the CPUs it asked for, so
   either way the 2 cores are not oversubscribed: this shows what placement costs, not more
   hardware.
2. Overhead per task, on the tiny random model (so the model's own time is small): a run's wall
   time on Ray minus the same run's local wall time, split into starting the actor (a worker
   process, imports, loading the weights) and each chunk's round trip.

    make bench-ray     # writes benchmarks/results/ray.{json,md}
"""

from __future__ import annotations

import json
import os
import platform
import shutil
import statistics
import sys
import tempfile
import threading
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from monitor.policy.loading import load_config, load_suites  # noqa: E402
from monitor.probing.factory import backend_for  # noqa: E402
from monitor.probing.run import VersionRef  # noqa: E402
from monitor.probing.version import probe_version  # noqa: E402
from monitor.service.scheduler import Monitor  # noqa: E402
from monitor.store import Store  # noqa: E402
from monitor.testing.raycluster import local_ray  # noqa: E402

RESULTS = REPO / "benchmarks" / "results"
RUNS = 4
OVERHEAD_RUNS = 5
SUITE = "arithmetic"


def policy(folder: Path, weights: Path, executor: str, models: int, batch_size: int = 16,
           cpus: int = 2) -> Path:
    shutil.copytree(REPO / "probes" / SUITE, folder / "probes" / SUITE, dirs_exist_ok=True)
    body = "".join(f"""  m{i}:
    backend: {{kind: transformers, device: cpu, dtype: float32, batch_size: {batch_size}}}
    resources: {{num_cpus: {cpus}}}
    versions: {{v1: {{path: {weights}}}}}
    baseline: v1
    live: v1
""" for i in range(models))
    path = folder / f"policy-{time.monotonic_ns()}.yaml"
    path.write_text(f"database: sqlite:///{path.stem}.db\nexecutor: {executor}\n"
                    f"models:\n{body}suites: [probes/{SUITE}]\n")
    return path


def cycle_all(path: Path) -> tuple[float, int]:
    """Every model's cycle at once, as the scheduler fires them; wall time and complete runs."""
    config = load_config(path)
    monitor = Monitor(path, config, Store(config.database_url()))
    threads = [threading.Thread(target=monitor.fire, args=(name, "v1")) for name in config.models]
    began = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    wall = time.perf_counter() - began
    complete = [r for r in monitor.store.runs() if r.status == "complete" and r.error_count == 0]
    monitor.store.close()
    return wall, len(complete)


def throughput(folder: Path, weights: Path) -> list[dict[str, Any]]:
    rows = []
    local_wall, done = cycle_all(policy(folder, weights, "{kind: local}", RUNS))
    rows.append(_row("local executor (device_runs 1)", local_wall, done, local_wall))
    for nodes in (1, 2):
        cpus = 2 // nodes
        with local_ray(workers=nodes, cpus_per_worker=cpus) as ray:
            executor = f"{{kind: ray, address: '{ray.address}'}}"
            # one actor start outside the timing: the first worker process imports torch cold
            cycle_all(policy(folder, weights, executor, 1, cpus=cpus))
            wall, done = cycle_all(policy(folder, weights, executor, RUNS, cpus=cpus))
        label = f"Ray, {nodes} node{'s' * (nodes > 1)} of {cpus} CPU{'s' * (cpus > 1)}, a run asks {cpus}"
        rows.append(_row(label, wall, done, local_wall))
    return rows


def _row(label: str, wall: float, done: int, local_wall: float) -> dict[str, Any]:
    return {"executor": label, "runs": RUNS, "complete": done, "wall_s": round(wall, 1),
            "runs_per_hour": round(done / wall * 3600), "vs_local": round(local_wall / wall, 2)}


def overhead(folder: Path, tiny: Path) -> dict[str, Any]:
    """Per run on the tiny model: local and Ray wall time, actor start, chunks."""
    local = load_config(policy(folder, tiny, "{kind: local}", 1, batch_size=4))
    local_s = [_timed_run(local)[0] for _ in range(OVERHEAD_RUNS)]
    with local_ray(workers=1) as ray:
        remote = load_config(policy(folder, tiny, f"{{kind: ray, address: '{ray.address}'}}", 1,
                                    batch_size=4))
        _timed_run(remote)  # the cold first worker
        measured = [_timed_run(remote) for _ in range(OVERHEAD_RUNS)]
    ray_s = [m[0] for m in measured]
    starts = [m[1] for m in measured]
    chunks = measured[0][2]
    per_task = statistics.median(ray_s) - statistics.median(local_s)
    return {"local_run_s": round(statistics.median(local_s), 3),
            "ray_run_s": round(statistics.median(ray_s), 3),
            "overhead_per_run_s": round(per_task, 3), "actor_start_s": round(statistics.median(starts), 3),
            "chunks_per_run": chunks,
            "per_chunk_ms": round((per_task - statistics.median(starts)) / chunks * 1000, 1)}


def _timed_run(config: Any) -> tuple[float, float, int]:
    store = Store(config.database_url())
    loaded: list[float] = []
    chunks = [0]

    def load() -> Any:
        began = time.perf_counter()
        backend = backend_for(config, "m0", "v1")
        loaded.append(time.perf_counter() - began)
        return backend

    def track(_suite: str, _total: int) -> Any:
        return lambda _n: chunks.__setitem__(0, chunks[0] + 1)

    began = time.perf_counter()
    run = probe_version(store, VersionRef("m0", "v1"), load_suites(config), load, track=track)[0].run
    wall = time.perf_counter() - began
    assert run.status == "complete" and run.error_count == 0, run.error
    store.close()
    return wall, loaded[0], chunks[0]


def tiny_model(folder: Path) -> Path:
    sys.path.insert(0, str(REPO / "tests"))
    from tests.conftest import make_tiny_model, make_tokenizer

    tokenizer = make_tokenizer()
    model = make_tiny_model(len(tokenizer))  # type: ignore[arg-type]
    out = folder / "tiny"
    model.save_pretrained(out)  # type: ignore[attr-defined]
    tokenizer.save_pretrained(out)  # type: ignore[attr-defined]
    return out


def write(result: dict[str, Any]) -> None:
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "ray.json").write_text(json.dumps(result, indent=2) + "\n")
    lines = [
        "# Ray executor: runs per hour and overhead per task", "",
        f"`make bench-ray`, {result['date']}, {result['machine']}, Ray {result['ray']}.", "",
        f"{RUNS} runs of SmolLM2-135M-Instruct (fp32) on the `{SUITE}` suite (multiple choice and "
        "generation), fired at once through one monitor:", "",
        "| executor | runs complete | wall time | runs per hour | vs local |", "|---|---|---|---|---|"]
    lines += [f"| {r['executor']} | {r['complete']}/{r['runs']} | {r['wall_s']} s | {r['runs_per_hour']} | "
              f"{r['vs_local']}× |" for r in result["throughput"]]
    o = result["overhead"]
    lines += ["", "Overhead per task, tiny random model (median of "
              f"{OVERHEAD_RUNS} runs after a cold one):", "",
              "| local run | Ray run | overhead per run | of which actor start | chunks | per chunk |",
              "|---|---|---|---|---|---|",
              f"| {o['local_run_s']} s | {o['ray_run_s']} s | {o['overhead_per_run_s']} s | "
              f"{o['actor_start_s']} s | {o['chunks_per_run']} | {o['per_chunk_ms']} ms |", ""]
    (RESULTS / "ray.md").write_text("\n".join(lines))


def main() -> None:
    import ray

    from monitor.probing.weights import prepare_smollm2

    os.environ["RAY_USAGE_STATS_ENABLED"] = "0"
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        result = {"date": datetime.now(UTC).date().isoformat(), "ray": ray.__version__,
                  "machine": f"{os.cpu_count()} cores {platform.processor() or platform.machine()}",
                  "throughput": throughput(folder, prepare_smollm2()),
                  "overhead": overhead(folder, tiny_model(folder))}
    write(result)
    print((RESULTS / "ray.md").read_text())


if __name__ == "__main__":
    main()
