"""Paired statistics for the judge: every interval here comes from scipy, none is hand-rolled.

Items are paired (the same item measured on both versions), so the tests are paired ones:

* pass/fail items: the exact McNemar test. Only discordant pairs carry information; given m of
  them, the count lost by the candidate is Binomial(m, p). A Clopper-Pearson interval for p maps
  to an interval for the accuracy drop, drop = m (2p - 1) / n.
* continuous scores (log-likelihood margins, log-prob per token): the paired bootstrap of the mean
  difference (BCa), with the Wilcoxon signed-rank test for the p-value.

Each interval is two one-sided bounds at the policy's confidence: the drop is above `low` with that
confidence, and below `high` with that confidence.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class PairedResult:
    """A drop (baseline minus candidate; positive means worse) with its one-sided bounds."""

    n: int
    baseline: float
    candidate: float
    drop: float
    low: float
    high: float
    p_value: float
    method: str
    lost: int = 0
    gained: int = 0


def paired_binary(baseline: Sequence[bool], candidate: Sequence[bool], confidence: float) -> PairedResult:
    """Exact McNemar on discordant pairs, with the drop's bounds from Clopper-Pearson."""
    base = np.asarray(baseline, dtype=bool)
    cand = np.asarray(candidate, dtype=bool)
    n = len(base)
    lost = int(np.sum(base & ~cand))
    gained = int(np.sum(~base & cand))
    discordant = lost + gained
    drop = (lost - gained) / n if n else 0.0
    if discordant == 0:
        return PairedResult(n, _mean(base), _mean(cand), drop, drop, drop, 1.0, "mcnemar-exact", lost, gained)
    two_sided = 2 * confidence - 1
    from scipy import stats  # on first use: a command that never judges never pays scipy's import

    interval = stats.binomtest(lost, discordant).proportion_ci(two_sided, method="exact")
    low = discordant * (2 * interval.low - 1) / n
    high = discordant * (2 * interval.high - 1) / n
    p_value = stats.binomtest(lost, discordant, 0.5).pvalue
    return PairedResult(n, _mean(base), _mean(cand), drop, low, high, float(p_value), "mcnemar-exact",
                        lost, gained)


def paired_continuous(baseline: Sequence[float], candidate: Sequence[float], confidence: float,
                      seed: int = 0, resamples: int = 2000) -> PairedResult:
    """Paired bootstrap (BCa) interval of the mean drop; Wilcoxon signed-rank p-value."""
    base = np.asarray(baseline, dtype=float)
    cand = np.asarray(candidate, dtype=float)
    n = len(base)
    diff = base - cand
    drop = float(np.mean(diff)) if n else 0.0
    if n < 2 or np.allclose(diff, diff[0]):
        return PairedResult(n, _mean(base), _mean(cand), drop, drop, drop, 1.0, "bootstrap-paired")
    from scipy import stats

    interval = stats.bootstrap((base, cand), _mean_difference, paired=True, vectorized=True,
                               confidence_level=2 * confidence - 1, n_resamples=resamples,
                               method="BCa", rng=np.random.default_rng(seed)).confidence_interval
    p_value = stats.wilcoxon(base, cand, zero_method="zsplit").pvalue
    return PairedResult(n, _mean(base), _mean(cand), drop, float(interval.low), float(interval.high),
                        float(p_value), "bootstrap-paired+wilcoxon")


def _mean_difference(x: np.ndarray, y: np.ndarray, axis: int = -1) -> np.ndarray:
    return np.mean(x - y, axis=axis)


def _mean(values: np.ndarray) -> float:
    return float(np.mean(values)) if len(values) else float("nan")
