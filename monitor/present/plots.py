"""Pictures of what people would rather see than read: before/after bars, score history."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from monitor.errors import MissingExtra
from monitor.present.tables import Row
from monitor.store import KindSummary, Run
from monitor.vocabulary import Kind

_SHORT = {"multiple_choice": "MC", Kind.GENERATE_UNTIL: "gen", Kind.LOGLIKELIHOOD_ROLLING: "fluency"}


def _pyplot() -> Any:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError as exc:
        raise MissingExtra("matplotlib", "plot") from exc
    return plt


def _wrap(name: str) -> str:
    return name.replace("-", "-\n")


def before_after_plot(rows: Sequence[Row], out: Path, before: str = "v1", after: str = "v2") -> Path:
    """Grouped bars per capability × kind (accuracy kinds only; fluency is on another scale)."""
    shown = [r for r in rows if r.kind != Kind.LOGLIKELIHOOD_ROLLING]
    return _grouped_bars([_wrap(r.capability) + "\n" + _SHORT[r.kind] for r in shown],
                         [(before, [r.before or 0 for r in shown]), (after, [r.after or 0 for r in shown])],
                         "What the fine-tune kept and what it forgot", out)


def recovery_plot(figures: Sequence[Any], out: Path, names: tuple[str, str, str] = (
        "v1 (baseline)", "v2 (fine-tuned)", "recovered")) -> Path:
    """Three bars per suite × kind: what was there, what the fine-tune left, what retraining restored."""
    shown = [f for f in figures if f.kind != Kind.LOGLIKELIHOOD_ROLLING]
    series = [(name, [getattr(f, attr) or 0 for f in shown])
              for name, attr in zip(names, ("baseline", "before", "after"), strict=True)]
    return _grouped_bars([_wrap(f.suite) + "\n" + _SHORT[f.kind] for f in shown], series,
                         "What recovery retraining brought back", out)


def _grouped_bars(labels: Sequence[str], series: Sequence[tuple[str, Sequence[float]]], title: str,
                  out: Path) -> Path:
    """One group of bars per label, one bar per series, accuracy on a 0-1 axis."""
    plt = _pyplot()
    xs = range(len(labels))
    width = 0.8 / len(series)
    fig, ax = plt.subplots(figsize=(max(6, (0.8 + 0.15 * len(series)) * len(labels)), 4.5))
    for index, (name, values) in enumerate(series):
        offset = (index - (len(series) - 1) / 2) * width
        ax.bar([x + offset for x in xs], values, width=width, label=name)
    ax.set_xticks(list(xs), labels, fontsize=8)
    ax.set_ylim(0, 1)
    ax.set_ylabel("accuracy on the probe split")
    ax.set_title(title)
    ax.legend()
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=120)
    plt.close(fig)
    return out


def history_plot(runs: Sequence[Run], summaries: dict[int, list[KindSummary]], out: Path) -> Path:
    """One line per model/version/suite/kind, score against run start time."""
    plt = _pyplot()
    series: dict[str, list[tuple[Any, float]]] = {}
    for run in runs:
        for s in summaries.get(run.id or -1, []):
            if s.mean_score is not None and s.kind != Kind.LOGLIKELIHOOD_ROLLING:
                key = f"{run.model}/{run.version} {run.suite} {_SHORT[s.kind]}"
                series.setdefault(key, []).append((run.started_at, s.mean_score))
    fig, ax = plt.subplots(figsize=(9, 4.5))
    for key, points in sorted(series.items()):
        ax.plot([p[0] for p in points], [p[1] for p in points], marker="o", label=key)
    ax.set_ylim(0, 1)
    ax.set_ylabel("accuracy")
    ax.set_title("Probe scores over time")
    if series:
        ax.legend(fontsize=7, loc="lower left")
    fig.autofmt_xdate()
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=120)
    plt.close(fig)
    return out
