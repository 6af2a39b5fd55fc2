"""A fast slice of the fault matrix (`make chaos` runs all of it): a real `forgetmenot serve` on a
PostgreSQL cluster of its own, probing llama.cpp through a proxy that breaks on request."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from monitor.testing.chaos import FAULTS, run_fault, world

pytestmark = [pytest.mark.realmodel, pytest.mark.served, pytest.mark.timeout(900)]
FAST = ("malformed_shapes", "database_killed", "monitor_kill_9")


@pytest.fixture(scope="module")
def chaos_world() -> Iterator[Any]:
    with world() as made:
        yield made


@pytest.mark.parametrize("name", FAST)
def test_the_monitor_survives(chaos_world: Any, tmp_path: Path, name: str) -> None:
    pg, proxy, tokenizer = chaos_world
    proxy.mode = "ok"
    fault = next(f for f in FAULTS if f.name == name)
    outcome = run_fault(pg, proxy, tokenizer, tmp_path, fault)
    assert outcome.survived, f"{outcome.did}\n" + "\n".join(outcome.log)
    assert outcome.items_stored > 0 and outcome.false_fails == outcome.false_rollbacks == 0
