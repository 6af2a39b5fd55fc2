"""A fast slice of the slow-client benchmark (`make bench-http`, benchmarks/slow_clients.py): the
server in its own process, 200 connections trickling their heads, health and scrapes answered."""

from __future__ import annotations

from benchmarks import slow_clients


def test_health_and_scrapes_are_answered_while_slow_clients_hold() -> None:
    measured = slow_clients.run_one("after", slow_clients.REPO, clients=200, seconds=4.0, every_s=1.0)
    assert measured.opened == 200
    assert (measured.healthz_failed, measured.metrics_failed) == (0, 0)
    assert measured.healthz_asked > 10 and measured.healthz_median_ms is not None
    assert measured.healthz_median_ms < 200, measured
