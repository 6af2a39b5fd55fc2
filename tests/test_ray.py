"""The Ray executor on a real Ray cluster started here: a head and worker nodes on this machine.

Probe runs and a retraining go to the cluster's workers; their results must equal the local
executor's. A worker node is killed mid-run (SIGKILL to its raylet and workers): the chunk it was
measuring is measured again on another node and nothing measured is lost; with no retries left,
the lost items are errors and the verdict ERROR, never FAIL.
"""

from __future__ import annotations

import json
import logging
import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from monitor.actions import ladder as actions
from monitor.actions import retrain
from monitor.judge import judge_suite
from monitor.policy.loading import load_config, load_suites
from monitor.policy.schema import Config
from monitor.probing.factory import backend_for
from monitor.probing.remote import RemoteBackend
from monitor.probing.run import VersionRef
from monitor.probing.version import probe_version
from monitor.store import Store, Verdict
from monitor.testing.raycluster import LocalRay, local_ray
from tests.conftest import PROBES


@pytest.fixture(scope="module")
def cluster() -> Iterator[LocalRay]:
    with local_ray(workers=1) as ray:
        yield ray


def policy(tmp_path: Path, model_dir: Path, executor: str, batch_size: int = 4, extra: str = "",
           suite: str = "arithmetic", capability: str = "{}", resources: str = "{num_cpus: 2}",
           copy: bool = True) -> Config:
    """Versions v1 and v2 of `model_dir`, copied (or both pointing at it, for a large model)."""
    shutil.copytree(PROBES / suite, tmp_path / "probes" / suite, dirs_exist_ok=True)
    for version in ("v1", "v2") if copy else ():
        shutil.copytree(model_dir, tmp_path / version, dirs_exist_ok=True)
    paths = ("v1", "v2") if copy else (model_dir, model_dir)
    path = tmp_path / f"forgetmenot-{abs(hash(executor))}.yaml"
    path.write_text(f"""\
database: sqlite:///fmn.db
executor: {executor}
models:
  bot:
    backend: {{kind: transformers, device: cpu, dtype: float32, batch_size: {batch_size}}}
    resources: {resources}
    versions: {{v1: {{path: {paths[0]}}}, v2: {{path: {paths[1]}}}}}
    baseline: v1
    live: v2
{extra}suites: [probes/{suite}]
policy:
  defaults: {{min_items: 5}}
  capabilities: {{{suite}: {capability}}}
""")
    return load_config(path)


def measure(store: Store, config: Config, version: str, on_chunk: Any = None) -> tuple[Any, list[Any]]:
    """One run of every suite; `on_chunk(backend)` is called after each chunk is measured."""
    loaded: list[Any] = []

    def load() -> Any:
        loaded.append(backend_for(config, "bot", version))
        return loaded[-1]

    def track(_suite: str, _total: int) -> Any:
        return (lambda _n: on_chunk(loaded[-1])) if on_chunk else None

    measured = probe_version(store, VersionRef("bot", version), load_suites(config), load, track=track)
    run = measured[0].run
    return run, [(r.item_id, r.kind, r.score, r.correct, r.output, r.error_kind)
                 for r in sorted(store.results(run.id or 0), key=lambda r: (r.kind, r.item_id))]


def kill_under(cluster: LocalRay, backend: RemoteBackend) -> None:
    """Kill the node measuring for `backend`, and wait until its worker is gone too. A worker
    outlives its raylet by a moment and answers calls sent straight to it meanwhile (a CI run
    finished a whole run on one), so without the wait the next chunk may still get through."""
    import ray

    cluster.kill(backend.node)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            ray.get(backend.actor.describe.remote(), timeout=5)
        except ray.exceptions.RayError:
            return
        time.sleep(0.2)
    raise AssertionError("the killed node's worker still answers after 60 s")


def test_a_probe_run_on_ray_runs_on_a_worker_node_and_equals_the_local_run(
        tmp_path: Path, cluster: LocalRay, tiny_model_dir: Path) -> None:
    store = Store(f"sqlite:///{tmp_path}/fmn.db")
    local = policy(tmp_path, tiny_model_dir, "{kind: local}")
    on_ray = policy(tmp_path, tiny_model_dir, f"{{kind: ray, address: '{cluster.address}'}}")
    _, expected = measure(store, local, "v1")
    nodes: set[str] = set()
    run, results = measure(store, on_ray, "v1", on_chunk=lambda backend: nodes.add(backend.node))
    assert run.status == "complete" and run.error_count == 0
    assert nodes == {cluster.workers[0].node_id}  # measured on the worker node, not here
    assert results == expected
    assert len(results) == len(expected) > 0


def test_a_worker_node_killed_mid_run_is_replaced_and_nothing_measured_is_lost(
        tmp_path: Path, cluster: LocalRay, tiny_model_dir: Path) -> None:
    store = Store(f"sqlite:///{tmp_path}/fmn.db")
    local = policy(tmp_path, tiny_model_dir, "{kind: local}", batch_size=1)
    on_ray = policy(tmp_path, tiny_model_dir, f"{{kind: ray, address: '{cluster.address}', max_retries: 1}}",
                    batch_size=1)
    _, expected = measure(store, local, "v1")
    cluster.add_worker()
    seen: list[str] = []

    def kill_the_first_node(backend: RemoteBackend) -> None:
        seen.append(backend.node)
        if len(seen) == 2:  # mid-run: one chunk measured, the next one's node dies
            kill_under(cluster, backend)

    run, results = measure(store, on_ray, "v1", on_chunk=kill_the_first_node)
    assert len(set(seen)) == 2 and seen[-1] == cluster.workers[0].node_id, seen  # moved to the one left
    assert run.status == "complete" and run.error_count == 0
    assert results == expected  # the lost chunk was measured again; nothing is missing or doubled


def test_a_run_whose_worker_is_lost_with_no_retries_left_is_an_error_never_forgetting(
        tmp_path: Path, cluster: LocalRay, tiny_model_dir: Path) -> None:
    store = Store(f"sqlite:///{tmp_path}/fmn.db")
    local = policy(tmp_path, tiny_model_dir, "{kind: local}", batch_size=1)
    on_ray = policy(tmp_path, tiny_model_dir,
                    f"{{kind: ray, address: '{cluster.address}', max_retries: 0, start_timeout: 20s}}",
                    batch_size=1)
    measure(store, local, "v1")  # the baseline; v2 has the same weights, so only errors could differ
    chunks: list[str] = []

    def kill_after_one_chunk(backend: RemoteBackend) -> None:
        chunks.append(backend.node)
        if len(chunks) == 1:
            kill_under(cluster, backend)

    try:
        _, results = measure(store, on_ray, "v2", on_chunk=kill_after_one_chunk)
    finally:
        cluster.add_worker()
    lost = [r for r in results if r[5] is not None]
    assert lost and {r[5] for r in lost} == {"worker_lost"}
    assert all(r[2] is None and r[3] is None for r in lost)  # no score: never a wrong answer
    suite = load_suites(on_ray)[0]
    _, verdict = judge_suite(store, suite, on_ray.policy.rules_for(suite.capability), "bot", "v2", "v1")
    assert verdict.phase == "ERROR", verdict.reason


def test_a_version_that_will_not_load_on_the_worker_is_recorded_as_a_load_error(
        tmp_path: Path, cluster: LocalRay, tiny_model_dir: Path) -> None:
    store = Store(f"sqlite:///{tmp_path}/fmn.db")
    config = policy(tmp_path, tiny_model_dir, f"{{kind: ray, address: '{cluster.address}'}}")
    shutil.rmtree(tmp_path / "v2")
    (tmp_path / "v2").mkdir()  # no weights in it
    run, _ = measure(store, config, "v2")
    assert run.status == "error" and run.error is not None and run.error.startswith("load: ")


def test_resources_no_node_has_leave_the_run_an_error_after_start_timeout(
        tmp_path: Path, cluster: LocalRay, tiny_model_dir: Path) -> None:
    store = Store(f"sqlite:///{tmp_path}/fmn.db")
    config = policy(tmp_path, tiny_model_dir,
                    f"{{kind: ray, address: '{cluster.address}', start_timeout: 3s}}",
                    resources="{num_gpus: 1}")  # this cluster has none
    run, _ = measure(store, config, "v1")
    assert run.status == "error" and run.error is not None
    assert run.error.startswith("timeout: ") and "start_timeout" in run.error


def test_a_recovery_retraining_runs_as_a_ray_task_on_a_worker(
        tmp_path: Path, cluster: LocalRay, tiny_model_dir: Path) -> None:
    (tmp_path / "replay.jsonl").write_text("".join(
        json.dumps({"prompt": f"Review {i}: great", "answer": '{"sentiment": "positive"}'}) + "\n"
        for i in range(30)))
    config = policy(tmp_path, tiny_model_dir, f"{{kind: ray, address: '{cluster.address}'}}", extra="""\
    deployer: {kind: registry, path: live}
    retrain: {max_examples: 8, replay: replay.jsonl, replay_examples: 4, epochs: 1, rank: 4, alpha: 8,
              output: made}
""", capability="{max_drop: 1.0, min_items: 1}")
    store = Store(config.database_url())
    store.save_verdict(Verdict(model="bot", candidate="v2", baseline="v1", suite="arithmetic",
                               capability="arithmetic", content_hash="h", phase="FAIL",
                               diagnosis="alignment_loss", reason="generation lost"), [])
    done = actions.act(store, config, "bot", "replica-a", retrain.Hooks())
    assert [(a.kind, a.status) for a in done] == [("alert", "done"), ("retrain", "done")], done[-1].detail
    made = done[-1].to_version
    assert f"on Ray node {cluster.workers[0].node_id}" in (done[-1].detail or "")
    assert (tmp_path / "made" / str(made) / "config.json").is_file()
    assert store.live("bot") == made


@pytest.mark.realmodel
def test_a_real_smollm2_run_on_ray_equals_the_local_run(tmp_path: Path, cluster: LocalRay,
                                                         smollm2_dir: Path) -> None:
    """SmolLM2 on a worker node with the same two threads as here: the same answers item by
    item, generation included, and the same log-likelihood margins."""
    store = Store(f"sqlite:///{tmp_path}/fmn.db")

    def real(executor: str) -> Config:
        return policy(tmp_path, smollm2_dir, executor, batch_size=16, copy=False)

    def outcome(config: Config) -> list[tuple[Any, ...]]:
        run = probe_version(store, VersionRef("bot", "v1"), load_suites(config),
                            lambda: backend_for(config, "bot", "v1"))[0].run
        assert run.status == "complete" and run.error_count == 0
        return [(r.item_id, r.kind, r.correct, r.output, r.margin)
                for r in sorted(store.results(run.id or 0), key=lambda r: (r.kind, r.item_id))]

    local = outcome(real("{kind: local}"))
    on_ray = outcome(real(f"{{kind: ray, address: '{cluster.address}'}}"))
    assert [r[:4] for r in on_ray] == [r[:4] for r in local]
    assert {r[1] for r in local} == {"multiple_choice", "generate_until"}
    margins = [(a[4], b[4]) for a, b in zip(local, on_ray, strict=True) if a[4] is not None]
    assert margins and all(b == pytest.approx(a, abs=1e-4) for a, b in margins)


def test_a_monitor_cycle_on_ray_measures_every_suite_on_one_worker(
        tmp_path: Path, cluster: LocalRay, tiny_model_dir: Path, caplog: pytest.LogCaptureFixture) -> None:
    """The review found the second suite of a cycle measured on a worker already sent away:
    the cycle lends its backend to each suite's run, and closes it once, after the last."""
    from monitor.service.scheduler import Monitor

    shutil.copytree(PROBES / "fluency", tmp_path / "probes" / "fluency")
    config = policy(tmp_path, tiny_model_dir, f"{{kind: ray, address: '{cluster.address}'}}")
    path = tmp_path / "two-suites.yaml"
    path.write_text(Path(config._source).read_text().replace(
        "suites: [probes/arithmetic]", "suites: [probes/arithmetic, probes/fluency]"))
    config = load_config(path)
    monitor = Monitor(path, config, Store(config.database_url()))
    with caplog.at_level(logging.INFO, logger="forgetmenot.ray"):
        assert monitor.cycle("bot", "v1", slot=1)
    assert sum("is measured on Ray node" in r.getMessage() for r in caplog.records) == 1  # one worker
    runs = monitor.store.runs(version="v1")
    assert sorted(r.suite for r in runs) == ["arithmetic", "fluency"]
    assert all(r.status == "complete" and r.error_count == 0 for r in runs), [r.error for r in runs]
