"""A fast slice of the internet-scale benchmark (`make bench-scale`, benchmarks/scale.py): the
exporter at ~2,000 series scraped over real HTTP as `serve` serves it, every expected series
there; the write-rate run landing every row; the worker arithmetic on the result files."""

from __future__ import annotations

import gzip
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from benchmarks import scale
from monitor.store import Store
from tests.conftest import postgres_database

SUITES = scale.scenario_suites()


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'scale.db'}"
        return
    with postgres_database() as made:
        yield made


def _exposed(body: bytes) -> list[scale.Series]:
    return [(sample.name, frozenset(sample.labels.items()))
            for family in text_string_to_metric_families(body.decode()) for sample in family.samples]


def test_the_exporter_exposes_every_expected_series_over_http(url: str, tmp_path: Path) -> None:
    shape = scale.Shape(scale.models_for(2000, SUITES), SUITES, history=2)
    scale.populate(url, shape)
    with scale.serving(url, shape, tmp_path) as (http, _api, _warm):
        request = urllib.request.Request(f"http://127.0.0.1:{http.port}/metrics",
                                         headers={"Accept-Encoding": "gzip"})
        with urllib.request.urlopen(request, timeout=60) as reply:
            wire, length = reply.read(), int(reply.headers["Content-Length"])
            gzipped = reply.headers.get("Content-Encoding") == "gzip"
    body = gzip.decompress(wire) if gzipped else wire
    exposed = _exposed(body)
    expected = scale.expected_series(shape)
    missing = expected - set(exposed)
    assert not missing, f"{len(missing)} series missing, e.g. {sorted(missing)[:3]}"
    assert len(exposed) == len(set(exposed)), "a series is exposed twice"
    assert len(exposed) == scale.sample_lines(body) == scale.expected_count(shape)
    assert 1700 <= len(exposed) <= 2300
    assert length == len(wire)
    assert not gzipped or len(wire) < len(body) / 5  # label names repeat: gzip takes most of them
    # A sample line is its name, its labels (model, version, suite, capability... ) and a value:
    # about 115 bytes here. Much more per series means something else is in the exposition.
    assert 80 <= len(body) / len(exposed) <= 160


def test_only_the_newest_run_and_verdict_are_exposed(url: str, tmp_path: Path) -> None:
    """History is stored; the exposition holds the newest of each, so series do not grow with it."""
    shape = scale.Shape(2, SUITES, history=3)
    scale.populate(url, shape)
    with scale.serving(url, shape, tmp_path) as (http, _api, _warm):
        _seconds, body, _wire = scale.scrape(http.port)
    assert scale.sample_lines(body) == scale.expected_count(shape)
    assert scale.expected_count(shape) == scale.expected_count(scale.Shape(2, SUITES, history=1))


@pytest.mark.parametrize("writers", [1, 3])
def test_the_write_rate_run_stores_every_row(url: str, writers: int) -> None:
    store = Store(url)
    try:
        measured = scale.write_rate(store, SUITES, writers, runs=len(SUITES))
        kinds = store.summaries([run.id or 0 for run in store.runs()])
    finally:
        store.close()
    per_cycle = scale.required(SUITES)["results_per_version_cycle"]
    assert measured["results"] == measured["stored"] == per_cycle  # each suite once
    assert per_cycle == sum(len(s.select()) * len(s.kinds) for s in SUITES)
    assert sorted(len(found) for found in kinds.values()) == sorted(len(s.kinds) for s in SUITES)
    assert all(summary.scored > 0 for found in kinds.values() for summary in found)


def test_the_scenario_needs_what_its_suites_hold() -> None:
    need = scale.required(SUITES)
    assert need["runs_per_cycle"] == 1000 * 3 * 6 == 18_000
    assert need["runs_per_s"] == 20
    assert need["results_per_s"] == pytest.approx(3000 * need["results_per_version_cycle"] / 900)


def test_run_costs_are_items_over_rates() -> None:
    rates = {kind: 2.0 for suite in SUITES for kind in suite.kinds}
    rows = scale.run_costs(SUITES, rates, {kind: 1.0 for kind in rates})
    for suite, row in zip(SUITES, rows, strict=True):
        assert row["in_process_s"] == pytest.approx(len(suite.select()) * len(suite.kinds) / 2)
        assert row["served_s"] == pytest.approx(2 * row["in_process_s"])


def test_the_rates_come_from_the_result_files() -> None:
    rates = scale.file_rates()
    assert set(rates) == {"mc_end_to_end", "generation_in_process", "generation_served", "mc_served"}
    for rate in rates.values():
        assert rate["items_per_s"] > 0
        assert ".json" in rate["source"]
