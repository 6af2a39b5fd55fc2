"""Judge simulation: false-FAIL rate and detection power, judge vs a naive threshold rule.

Each simulated comparison draws a baseline (n items, accuracy 0.7) and a candidate that churns:
every item may flip either way (5% of items, as measured on the demo's real fine-tune, where
general-knowledge multiple choice lost 8 of 123 right items and gained 3 of 53 wrong ones; and 2%,
for a lighter fine-tune), balanced so an unchanged model's expected accuracy stays put. A true
drop of d points is added by extra losses. The judge (exact McNemar bounds,
monitor.judge.decide) and a naive rule (FAIL when the point estimate drop exceeds max_drop) see the
same simulated data. Written to benchmarks/results/judge_sim.{json,md,png}.

    make bench-judge            # or: .venv/bin/python benchmarks/judge_sim.py --runs 2000
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from monitor.judge import decide
from monitor.judge.stats import paired_binary
from monitor.policy.schema import Policy

RESULTS = Path(__file__).resolve().parent / "results"
ACCURACY = 0.7
CHURNS = (0.05, 0.02)
ITEMS = (50, 100, 150, 200, 300, 500)
DROPS = (0.0, 0.02, 0.05, 0.10)


def simulate(rng: np.random.Generator, n: int, drop: float, churn: float) -> tuple[np.ndarray, np.ndarray]:
    base = rng.random(n) < ACCURACY
    lose = churn + drop / ACCURACY           # P(right -> wrong)
    gain = churn * ACCURACY / (1 - ACCURACY)  # P(wrong -> right): balances the churn's losses
    flip = rng.random(n)
    cand = np.where(base, flip >= lose, flip < gain)
    return base, cand


def rates(rng: np.random.Generator, n: int, drop: float, max_drop: float, churn: float,
          runs: int) -> dict[str, float]:
    rules = Policy(defaults={"max_drop": max_drop}).rules_for("sim")
    judge_fail = flagged = naive_fail = 0
    for _ in range(runs):
        base, cand = simulate(rng, n, drop, churn)
        result = paired_binary(base, cand, rules.confidence)
        phase = decide(result, rules)[0]
        judge_fail += phase == "FAIL"
        flagged += phase in ("FAIL", "MARGINAL")
        naive_fail += result.drop > max_drop
    return {"judge": judge_fail / runs, "flagged": flagged / runs, "naive": naive_fail / runs}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=2000)
    args = parser.parse_args()
    rng = np.random.default_rng(20261122)
    table: dict[str, dict[str, dict[str, dict[str, float]]]] = {}
    for churn in CHURNS:
        for max_drop in (0.05, 0.0):
            policy = f"churn {churn:.0%}, max_drop={max_drop:g}"
            table[policy] = {}
            for drop in DROPS:
                table[policy][f"{drop:g}"] = {str(n): rates(rng, n, drop, max_drop, churn, args.runs)
                                              for n in ITEMS}
                print(policy, drop, {n: v["judge"] for n, v in table[policy][f"{drop:g}"].items()},
                      flush=True)
    RESULTS.mkdir(parents=True, exist_ok=True)
    meta = {"runs_per_cell": args.runs, "accuracy": ACCURACY, "churn": CHURNS, "confidence": 0.95}
    (RESULTS / "judge_sim.json").write_text(json.dumps({**meta, "fail_rate": table}, indent=2) + "\n")
    (RESULTS / "judge_sim.md").write_text(markdown(table, args.runs))
    plot(table, RESULTS / "judge_sim.png")
    print(markdown(table, args.runs))


def markdown(table: dict[str, dict[str, dict[str, dict[str, float]]]], runs: int) -> str:
    lines = [f"Share of {runs} simulated comparisons per cell: judge FAIL / judge FAIL or MARGINAL / "
             "naive rule FAIL.", ""]
    for policy, by_drop in table.items():
        lines += [f"**{policy}**, confidence 0.95", "",
                  "| true drop | " + " | ".join(f"n={n}" for n in ITEMS) + " |",
                  "|---|" + "---|" * len(ITEMS)]
        for drop, by_n in by_drop.items():
            cells = [f"{v['judge']:.1%} / {v['flagged']:.1%} / {v['naive']:.1%}" for v in by_n.values()]
            label = "0 (unchanged: false FAIL)" if drop == "0" else f"{float(drop) * 100:g} pts"
            lines.append(f"| {label} | " + " | ".join(cells) + " |")
        lines.append("")
    return "\n".join(lines)


def plot(table: dict[str, dict[str, dict[str, dict[str, float]]]], out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, grid = plt.subplots(2, len(table) // 2, figsize=(11, 8), sharey=True)
    axes = grid.flatten()
    for ax, (policy, by_drop) in zip(axes, table.items(), strict=True):
        for drop, by_n in by_drop.items():
            line = ax.plot(ITEMS, [v["judge"] for v in by_n.values()], marker="o",
                           label=f"judge, drop {float(drop) * 100:g} pts")
            ax.plot(ITEMS, [v["naive"] for v in by_n.values()], linestyle="--",
                    color=line[0].get_color(), alpha=0.6, label=f"naive, drop {float(drop) * 100:g} pts")
        ax.axhline(0.9, color="grey", linewidth=0.5)
        ax.axhline(0.01, color="grey", linewidth=0.5)
        ax.set_title(f"P(FAIL), {policy}", fontsize=10)
        ax.set_xlabel("items")
    for ax in grid[:, 0]:
        ax.set_ylabel("share of simulated runs ending in FAIL")
    axes[-1].legend(fontsize=7, loc="center right")
    fig.tight_layout()
    fig.savefig(out, dpi=120)
    plt.close(fig)


if __name__ == "__main__":
    main()
