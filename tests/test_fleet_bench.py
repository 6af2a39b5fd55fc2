"""A fast slice of the served-fleet benchmark (`make bench-fleet` runs all of it): the real
monitor, started as `serve` starts it, over 4 versions on 2 scripted OpenAI-compatible servers.
Every version must get a complete run of every suite, with every item stored and judged; no
timing is asserted."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from benchmarks.fleet import (
    Latency,
    ScriptedServer,
    drive,
    fleet,
    served_names,
    write_policy,
    write_tokenizer,
)
from monitor.policy.suites import load_suite
from monitor.store import Store
from tests.conftest import PROBES

SUITES = ("arithmetic", "refusal")


@pytest.fixture()
def servers() -> Iterator[list[ScriptedServer]]:
    shape = fleet(4, ["a", "b"], per_endpoint=1)
    started = [ScriptedServer(served_names(shape, url), Latency(0.005, 0.001, 0.2), seed=i)
               for i, url in enumerate(["a", "b"])]
    yield started
    for server in started:
        server.stop()


def expected_items(suite: str) -> int:
    """Results a complete run stores: one per probe item and kind."""
    loaded = load_suite(PROBES / suite)
    return len(loaded.select()) * len(loaded.kinds)


def test_every_version_of_a_served_fleet_gets_a_complete_judged_run(servers: list[ScriptedServer],
                                                                     tmp_path: Path) -> None:
    models = fleet(4, [s.base_url for s in servers], per_endpoint=1)
    policy = write_policy(tmp_path, models, write_tokenizer(tmp_path / "tokenizer"), SUITES)
    result = drive(policy, timeout_s=120, record_suites=False)  # a first cycle

    assert result["complete"]
    assert sorted(result["versions"]) == ["m00/v1", "m00/v2", "m01/v1", "m01/v2"]
    for key, version in result["versions"].items():
        assert version["runs"] == {s: {"status": "complete", "items": expected_items(s), "errors": 0}
                                   for s in SUITES}, key

    store = Store(f"sqlite:///{tmp_path}/fleet.db")
    try:
        for run in store.runs():
            assert len(store.results(run.id or 0)) == run.item_count
        for model in models:
            phases = {v.suite: v.phase for v in store.verdicts(model=model.name, candidate="v2")}
            assert phases == {s: "PASS" for s in SUITES}, model.name
    finally:
        store.close()


def test_each_server_answered_only_its_own_models(servers: list[ScriptedServer], tmp_path: Path) -> None:
    """Both kinds of request (log-likelihood and generation) reached each version's own endpoint."""
    models = fleet(4, [s.base_url for s in servers], per_endpoint=1)
    drive(write_policy(tmp_path, models, write_tokenizer(tmp_path / "tokenizer"), SUITES), timeout_s=120)
    for server, model in zip(servers, models, strict=True):
        asked = {(path, name) for path, name in server.requests if name}
        assert asked == {(path, model.served(v)) for path in ("/v1/completions", "/v1/chat/completions")
                         for v in ("v1", "v2")}
