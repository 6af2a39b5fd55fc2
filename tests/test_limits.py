"""One monitor's runs at the same time: what they share bounds them, and nothing else does.

Served versions are measured by a fake backend here (what is under test is the scheduling, not the
endpoint); the served fleet on real HTTP servers is benchmarks/fleet.py and tests/test_fleet_bench.py.
"""

from __future__ import annotations

import shutil
import threading
import time
from pathlib import Path
from typing import Any

import pytest
import yaml

from monitor.errors import Stopping
from monitor.policy.loading import load_config
from monitor.policy.schema import Config
from monitor.probing.backends.fake import FakeBackend
from monitor.service.limits import Limits
from monitor.service.scheduler import Monitor
from monitor.store import Store
from tests.conftest import PROBES

WAIT_S = 20


def served(tmp_path: Path, endpoints: dict[str, str], executor: str = "{}") -> Monitor:
    """One served model per entry of `endpoints` (model → base_url), baseline v1 and live v2."""
    shutil.copytree(PROBES / "arithmetic", tmp_path / "probes" / "arithmetic", dirs_exist_ok=True)
    (tmp_path / "tok").mkdir(exist_ok=True)
    models = "".join(f"""  {name}:
    backend: {{kind: openai, base_url: "{url}", tokenizer: tok}}
    versions: {{v1: {{served_name: a}}, v2: {{served_name: b}}}}
    baseline: v1
    live: v2
""" for name, url in endpoints.items())
    path = tmp_path / "forgetmenot.yaml"
    path.write_text(f"database: sqlite:///fmn.db\nexecutor: {executor}\nmodels:\n{models}"
                    "suites: [probes/arithmetic]\npolicy: {defaults: {min_items: 5}}\n")
    config = load_config(path)
    return Monitor(path, config, Store(config.database_url()))


def in_flight(monitor: Monitor, model: str) -> bool:
    return bool(monitor.store.runs(model=model, status="running"))


def wait_for(condition: Any, what: str) -> None:
    deadline = time.monotonic() + WAIT_S
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.02)


def test_a_models_baseline_and_live_are_measured_at_the_same_time(tmp_path: Path) -> None:
    """Each load waits until the other version has loaded too: only runs in flight together pass."""
    monitor = served(tmp_path, {"bot": "http://127.0.0.1:9/v1"})
    both = threading.Barrier(2, timeout=WAIT_S)

    def load(_config: Any, _model: str, _version: str) -> FakeBackend:
        both.wait()
        return FakeBackend()

    monitor.load_backend = load
    done: dict[str, bool] = {}
    threads = [threading.Thread(target=lambda v=v: done.setdefault(v, monitor.cycle("bot", v, slot=1)))
               for v in ("v1", "v2")]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(WAIT_S * 2)
    assert not both.broken and done == {"v1": True, "v2": True}
    assert {(r.version, r.status) for r in monitor.store.runs()} == {("v1", "complete"), ("v2", "complete")}


def test_an_endpoint_takes_at_most_endpoint_runs_and_another_endpoint_never_waits(tmp_path: Path) -> None:
    monitor = served(tmp_path, {"stuck": "http://127.0.0.1:9/v1", "neighbour": "http://127.0.0.1:9/v1/",
                                "elsewhere": "http://127.0.0.1:10/v1"}, executor="{endpoint_runs: 1}")
    release = threading.Event()

    def load(_config: Any, model: str, _version: str) -> FakeBackend:
        return FakeBackend(fail_on=(lambda _text: not release.wait(60)) if model == "stuck" else None)

    monitor.load_backend = load
    stuck = threading.Thread(target=monitor.cycle, args=("stuck", "v2"), kwargs={"slot": 1})
    neighbour = threading.Thread(target=monitor.cycle, args=("neighbour", "v2"), kwargs={"slot": 1})
    stuck.start()
    try:
        wait_for(lambda: in_flight(monitor, "stuck"), "the stuck run to start")
        neighbour.start()
        assert monitor.cycle("elsewhere", "v2", slot=1)  # its own endpoint: no wait at all
        time.sleep(0.5)
        assert neighbour.is_alive() and not monitor.store.runs(model="neighbour"), \
            "a second run started on an endpoint with endpoint_runs 1"
    finally:
        release.set()
        stuck.join(WAIT_S)
        neighbour.join(WAIT_S)
    assert {(r.model, r.status) for r in monitor.store.runs()} == {
        ("stuck", "complete"), ("neighbour", "complete"), ("elsewhere", "complete")}


def test_a_stop_reaches_a_run_waiting_for_a_slot_and_leaves_no_claim(tmp_path: Path) -> None:
    monitor = served(tmp_path, {"stuck": "http://127.0.0.1:9/v1", "waiting": "http://127.0.0.1:9/v1"},
                     executor="{endpoint_runs: 1}")
    release = threading.Event()
    monitor.load_backend = lambda _c, model, _v: FakeBackend(
        fail_on=(lambda _text: not release.wait(60)) if model == "stuck" else None)
    stuck = threading.Thread(target=monitor.fire, args=("stuck", "v2"))
    stuck.start()
    try:
        wait_for(lambda: in_flight(monitor, "stuck"), "the stuck run to start")
        outcome: list[BaseException] = []

        def wait_in_line() -> None:
            try:
                monitor.cycle("waiting", "v2", slot=1)
            except Stopping as exc:
                outcome.append(exc)

        waiting = threading.Thread(target=wait_in_line)
        waiting.start()
        time.sleep(0.3)
        monitor.stopping.set()
        waiting.join(WAIT_S)
        assert not waiting.is_alive() and outcome, "the waiting run did not notice the stop"
    finally:
        release.set()
        stuck.join(WAIT_S)
    assert not monitor.store.runs(model="waiting")
    assert monitor.store.claim("probe:waiting:v2:1", "another-replica")  # the slot is still free to take


def test_what_a_run_holds_a_slot_of() -> None:
    config = load_config_text("""\
executor: {endpoint_runs: 3, device_runs: 2}
models:
  served: {backend: {kind: openai, base_url: "http://vllm:8000/v1/"}, versions: {a: {}}, baseline: a, live: a}
  local: {backend: {kind: transformers, device: cuda:1}, versions: {a: {path: w}}, baseline: a, live: a}
suites: [s]
""")
    limits = Limits(config, threading.Event())
    assert limits.resource("served") == ("endpoint http://vllm:8000/v1", 3)
    assert limits.resource("local") == ("device cuda:1", 2)
    on_ray = config.model_copy(update={"executor": config.executor.model_copy(update={"kind": "ray"})})
    assert Limits(on_ray, threading.Event()).resource("local") is None  # Ray places it
    assert Limits(on_ray, threading.Event()).resource("served") == ("endpoint http://vllm:8000/v1", 3)


@pytest.mark.parametrize("executor", ["{max_runs: 1, device_runs: 2}", "{device_runs: 1}"])
def test_runs_take_turns_on_one_device_and_under_max_runs(executor: str) -> None:
    """`a` and `b` share the CPU: with one slot per device they take turns; with two, max_runs 1
    still holds `b` back."""
    config = load_config_text(f"""\
executor: {executor}
models:
  a: {{backend: {{kind: transformers, device: cpu}}, versions: {{v: {{path: w}}}}, baseline: v, live: v}}
  b: {{backend: {{kind: transformers, device: cpu}}, versions: {{v: {{path: w}}}}, baseline: v, live: v}}
suites: [s]
""")
    limits = Limits(config, threading.Event())
    order: list[str] = []
    inside = threading.Event()
    leave = threading.Event()

    def hold(model: str) -> None:
        with limits.slot(model):
            order.append(f"{model} in")
            inside.set()
            leave.wait(WAIT_S)
            order.append(f"{model} out")

    first = threading.Thread(target=hold, args=("a",))
    first.start()
    inside.wait(WAIT_S)
    second = threading.Thread(target=hold, args=("b",))
    second.start()
    time.sleep(0.3)
    assert order == ["a in"]
    leave.set()
    first.join(WAIT_S)
    second.join(WAIT_S)
    assert order == ["a in", "a out", "b in", "b out"]


def load_config_text(text: str) -> Config:
    """The schema alone: these policies name weights and suites that are never loaded."""
    return Config.model_validate(yaml.safe_load(text))
