"""The noise floor: measure one unchanged version several ways and find the items that flip.

Each repeat scores the suite again with a different batch size and a shuffled item order (and,
where a suite samples, a different seed; the shipped suites decode greedily). An item whose
result differs between any two measurements is flaky on that backend: the judge quarantines it
from verdicts and counts it, so noise can never be read as forgetting.
"""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from monitor.policy.suites import Suite
from monitor.probing.backends.base import Backend
from monitor.probing.run import Advance, score_kind
from monitor.store import FlakyItem, ItemResult, Store
from monitor.vocabulary import Kind, Split


@dataclass(frozen=True)
class Calibration:
    suite: str
    measurements: int
    items: int
    flaky: list[FlakyItem]


def batch_sizes(default: int, repeats: int) -> list[int]:
    """Batch sizes that differ from the default and from each other: 1, default*2, default//2, ..."""
    candidates = [1, default * 2, max(default // 2, 1), default * 4, 3]
    chosen = [b for b in dict.fromkeys(candidates) if b != default]
    return (chosen * repeats)[:repeats]


def calibrate(store: Store, backend: Backend, suite: Suite, model: str, version: str, repeats: int = 2,
              seed: int = 0, track: Callable[[str, int], Advance] | None = None) -> Calibration:
    """Score the probe split 1 + `repeats` times and record which items flip."""
    items = suite.select(Split.PROBE)
    default = backend.batch_size
    plans = [(default, None), *((size, seed + i) for i, size in enumerate(batch_sizes(default, repeats)))]
    measured: list[list[ItemResult]] = []
    for size, order_seed in plans:
        advance = track(f"{suite.name} b={size}", len(items) * len(suite.kinds)) if track else None
        measured.append(_measure(backend, suite, items, size, order_seed, advance))
    flaky = _flaky(measured, model, version, suite.content_hash)
    store.record_flaky(flaky)
    return Calibration(suite.name, len(plans), len(items), [f for f in flaky if f.flips > 0])


def _measure(backend: Backend, suite: Suite, items: Sequence[object], size: int, order_seed: int | None,
             advance: Advance | None) -> list[ItemResult]:
    order = list(items)
    if order_seed is not None:
        random.Random(order_seed).shuffle(order)
    previous, backend.batch_size = backend.batch_size, size
    try:
        return [r for kind in suite.kinds if Kind(kind).binary
                for r in score_kind(backend, suite, kind, order, advance)]  # type: ignore[arg-type]
    finally:
        backend.batch_size = previous


def _flaky(measured: list[list[ItemResult]], model: str, version: str, content_hash: str) -> list[FlakyItem]:
    outcomes: dict[tuple[str, str], list[bool]] = {}
    for results in measured:
        for r in results:
            if r.error_kind is None and r.correct is not None:
                outcomes.setdefault((r.item_id, r.kind), []).append(bool(r.correct))
    rows = []
    for (item_id, kind), seen in sorted(outcomes.items()):
        majority = Counter(seen).most_common(1)[0][1]
        rows.append(FlakyItem(model=model, version=version, content_hash=content_hash, item_id=item_id,
                              kind=kind, runs=len(seen), flips=len(seen) - majority))
    return rows
