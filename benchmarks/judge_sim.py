"""Judge simulation: false-FAIL rate and detection power, judge vs a naive threshold rule.

Each simulated comparison draws a baseline (n items, accuracy 0.7) and a candidate that churns:
every item may flip either way (5% of items, as measured on the demo's real fine-tune, where
general-knowledge multiple choice lost 8 of 123 right items and gained 3 of 53 wrong ones; and 2%,
for a lighter fine-tune), balanced so an unchanged model's expected accuracy stays put. A true
drop of d points is added by extra losses. The judge (exact McNemar bounds,
monitor.judge.decide) and a naive rule (FAIL when the point estimate drop exceeds max_drop) see the
same simulated data.

A second part simulates the safety scenario's two suites as shipped: their probe-split size, v1's
measured rates as the baseline, and the policy of scenarios/safety.yaml; and how many probe pairs
each would need to FAIL a 20-point loss at least 90% of the time. Written to
benchmarks/results/judge_sim.{json,md,png}.

    make bench-judge            # or: .venv/bin/python benchmarks/judge_sim.py --runs 2000
    .venv/bin/python benchmarks/judge_sim.py --suites-only   # the second part, merged into the results
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import numpy as np

from monitor.judge import decide
from monitor.judge.stats import paired_binary
from monitor.policy.loading import load_config
from monitor.policy.schema import Policy, Rules
from monitor.policy.suites import load_suite
from monitor.vocabulary import Split

ROOT = Path(__file__).resolve().parents[1]
RESULTS = Path(__file__).resolve().parent / "results"
ACCURACY = 0.7
CHURNS = (0.05, 0.02)
ITEMS = (50, 100, 150, 200, 300, 500)
DROPS = (0.0, 0.02, 0.05, 0.10)
GENERIC_SEED = 20261122
# Its own generator, so adding or changing the suites' part never moves the generic tables' numbers.
SUITES_SEED = 20261123

# v1 (the safety scenario's baseline) on the 149-pair probe splits, as `make demo-safety` measured it
# (benchmarks/results/safety.md holds the same shares): it refuses 87.2% of harmful requests and
# answers 81.9% of their look-alikes. Each is the suite's score.
V1_REFUSES_HARMFUL = 0.872
V1_ANSWERS_LOOKALIKES = 0.819
SUITE_BASE_RATES = {"refuses-harmful": V1_REFUSES_HARMFUL, "answers-lookalikes": V1_ANSWERS_LOOKALIKES}
SAFETY_CONFIG = ROOT / "scenarios" / "safety.yaml"
SUITE_DROPS = (0.0, 0.10, 0.20, 0.30)
# Refusal is scored on a generated answer, not on a ranking of fixed choices: a small change in the
# first tokens' probabilities sends greedy decoding down another path (a refusal's opening or an
# answer's), so generated items flip more often than the 5% measured on multiple choice. 10% allows
# for that; 5% is the multiple-choice figure.
SUITE_CHURNS = (0.05, 0.10)
# "Pairs needed": the same suites, base rates, policy and churns at more probe pairs, for a 20-point
# loss (power) and for an unchanged model (false FAIL). Its own generator, so the tables above keep
# their numbers. 46 was the suites' probe split before they grew to 200 pairs.
PAIRS_SEED = 20261124
PAIRS_N = (46, 75, 100, 150, 200, 300)
PAIRS_DROP = 0.20
POWER_TARGET = 0.9

Table = dict[str, dict[str, dict[str, dict[str, float]]]]


def flip_rates(accuracy: float, drop: float, churn: float) -> tuple[float, float]:
    """P(right -> wrong) and P(wrong -> right) for a candidate `drop` below the baseline."""
    lose = churn + drop / accuracy
    gain = churn * accuracy / (1 - accuracy)  # balances the churn's losses
    if not (0 <= lose <= 1 and 0 <= gain <= 1):
        raise ValueError(f"churn {churn:g} and drop {drop:g} cannot be balanced at accuracy {accuracy:g}")
    return lose, gain


def simulate(
    rng: np.random.Generator, n: int, drop: float, churn: float, accuracy: float = ACCURACY
) -> tuple[np.ndarray, np.ndarray]:
    lose, gain = flip_rates(accuracy, drop, churn)
    base = rng.random(n) < accuracy
    flip = rng.random(n)
    cand = np.where(base, flip >= lose, flip < gain)
    return base, cand


def rates(
    rng: np.random.Generator,
    rules: Rules,
    n: int,
    drop: float,
    churn: float,
    runs: int,
    accuracy: float = ACCURACY,
) -> dict[str, float]:
    judge_fail = flagged = naive_fail = 0
    for _ in range(runs):
        base, cand = simulate(rng, n, drop, churn, accuracy)
        result = paired_binary(base, cand, rules.confidence)
        phase = decide(result, rules)[0]
        judge_fail += phase == "FAIL"
        flagged += phase in ("FAIL", "MARGINAL")
        naive_fail += result.drop > rules.max_drop
    return {"judge": judge_fail / runs, "flagged": flagged / runs, "naive": naive_fail / runs}


def generic_table(runs: int) -> Table:
    rng = np.random.default_rng(GENERIC_SEED)
    table: Table = {}
    for churn in CHURNS:
        for max_drop in (0.05, 0.0):
            rules = Policy(defaults={"max_drop": max_drop}).rules_for("sim")
            policy = f"churn {churn:.0%}, max_drop={max_drop:g}"
            table[policy] = {}
            for drop in DROPS:
                by_n = {str(n): rates(rng, rules, n, drop, churn, runs) for n in ITEMS}
                table[policy][f"{drop:g}"] = by_n
                print(policy, drop, {n: v["judge"] for n, v in by_n.items()}, flush=True)
    return table


def suites_table(runs: int) -> dict[str, Any]:
    """The safety suites at their probe-split size, v1's rates and the scenario's policy."""
    rng = np.random.default_rng(SUITES_SEED)
    policy = load_config(SAFETY_CONFIG, check_paths=False).policy
    by_suite = {
        name: suite_rates(rng, policy, name, base_rate, runs) for name, base_rate in SUITE_BASE_RATES.items()
    }
    return {
        "runs_per_cell": runs,
        "seed": SUITES_SEED,
        "config": SAFETY_CONFIG.relative_to(ROOT).as_posix(),
        "churn": SUITE_CHURNS,
        "drops": SUITE_DROPS,
        "suites": by_suite,
        "pairs_needed": pairs_needed(policy, runs),
    }


def pairs_needed(policy: Policy, runs: int) -> dict[str, Any]:
    """P(FAIL) of a PAIRS_DROP loss and the false-FAIL rate at each n in PAIRS_N, per suite and churn."""
    rng = np.random.default_rng(PAIRS_SEED)
    by_suite: dict[str, Any] = {}
    for name, base_rate in SUITE_BASE_RATES.items():
        rules = policy.rules_for(load_suite(ROOT / "probes" / name).capability)
        by_suite[name] = {}
        for churn in SUITE_CHURNS:
            by_n = {
                str(n): {
                    f"{drop:g}": rates(rng, rules, n, drop, churn, runs, base_rate)
                    for drop in (0.0, PAIRS_DROP)
                }
                for n in PAIRS_N
            }
            power = {n: row[f"{PAIRS_DROP:g}"]["judge"] for n, row in by_n.items()}
            enough = [int(n) for n, p in power.items() if p >= POWER_TARGET]
            by_suite[name][f"{churn:g}"] = {"fail_rate": by_n, "smallest_n": min(enough) if enough else None}
            print(name, "pairs needed", churn, power, flush=True)
    return {"seed": PAIRS_SEED, "n": PAIRS_N, "drop": PAIRS_DROP, "target": POWER_TARGET, "suites": by_suite}


def suite_rates(
    rng: np.random.Generator, policy: Policy, name: str, base_rate: float, runs: int
) -> dict[str, Any]:
    suite = load_suite(ROOT / "probes" / name)
    n = len(suite.select(Split.PROBE))  # only the probe split is scored; recovery items train
    rules = policy.rules_for(suite.capability)
    by_churn = {
        f"{churn:g}": {
            f"{drop:g}": rates(rng, rules, n, drop, churn, runs, base_rate) for drop in SUITE_DROPS
        }
        for churn in SUITE_CHURNS
    }
    print(name, n, {c: {d: v["judge"] for d, v in row.items()} for c, row in by_churn.items()}, flush=True)
    return {
        "n": n,
        "base_rate": base_rate,
        "max_drop": rules.max_drop,
        "confidence": rules.confidence,
        "fail_rate": by_churn,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=2000)
    parser.add_argument(
        "--suites-only",
        action="store_true",
        help="run only the safety suites' part and merge it into the existing results",
    )
    args = parser.parse_args()
    RESULTS.mkdir(parents=True, exist_ok=True)
    if args.suites_only:
        if not (RESULTS / "judge_sim.json").is_file():
            parser.error("--suites-only merges into benchmarks/results/judge_sim.json: run without it first")
        generic = json.loads((RESULTS / "judge_sim.json").read_text())
        generic.pop("suites", None)
    else:
        table = generic_table(args.runs)
        meta = {"runs_per_cell": args.runs, "accuracy": ACCURACY, "churn": CHURNS, "confidence": 0.95}
        generic = {**meta, "fail_rate": table}
        plot(table, RESULTS / "judge_sim.png")
    suites = suites_table(args.runs)
    report = markdown(generic["fail_rate"], generic["runs_per_cell"]) + "\n" + suites_markdown(suites)
    (RESULTS / "judge_sim.json").write_text(json.dumps({**generic, "suites": suites}, indent=2) + "\n")
    (RESULTS / "judge_sim.md").write_text(report)
    print(report)


def markdown(table: Table, runs: int) -> str:
    lines = [
        f"Share of {runs} simulated comparisons per cell: judge FAIL / judge FAIL or MARGINAL / "
        "naive rule FAIL.",
        "",
    ]
    for policy, by_drop in table.items():
        lines += [
            f"**{policy}**, confidence 0.95",
            "",
            "| true drop | " + " | ".join(f"n={n}" for n in ITEMS) + " |",
            "|---|" + "---|" * len(ITEMS),
        ]
        for drop, by_n in by_drop.items():
            cells = [f"{v['judge']:.1%} / {v['flagged']:.1%} / {v['naive']:.1%}" for v in by_n.values()]
            label = "0 (unchanged: false FAIL)" if drop == "0" else f"{float(drop) * 100:g} pts"
            lines.append(f"| {label} | " + " | ".join(cells) + " |")
        lines.append("")
    return "\n".join(lines)


def suites_markdown(suites: dict[str, Any]) -> str:
    drops = [f"{float(d) * 100:g} pts" for d in suites["drops"]]
    drops[0] = "0 (unchanged: false FAIL)"
    lines = [
        "## The safety suites as shipped",
        "",
        f"Probe-split size, v1's measured score as the baseline, the policy of {suites['config']}. "
        f"Share of {suites['runs_per_cell']} simulated comparisons per cell: "
        "judge FAIL / judge FAIL or MARGINAL.",
        "",
        "| suite | n | v1 score | max_drop | churn | " + " | ".join(drops) + " |",
        "|---|---|---|---|---|" + "---|" * len(drops),
    ]
    for name, suite in suites["suites"].items():
        head = f"| {name} | {suite['n']} | {suite['base_rate']:.1%} | {suite['max_drop']:g} |"
        for churn, by_drop in suite["fail_rate"].items():
            cells = [f"{v['judge']:.1%} / {v['flagged']:.1%}" for v in by_drop.values()]
            lines.append(f"{head} {float(churn):.0%} | " + " | ".join(cells) + " |")
    lines.append("")
    lines += pairs_markdown(suites["pairs_needed"], suites["runs_per_cell"])
    return "\n".join(lines)


def pairs_markdown(pairs: dict[str, Any], runs: int) -> list[str]:
    drop, target = f"{pairs['drop']:g}", pairs["target"]
    lines = [
        "### Pairs needed",
        "",
        f"The same suites, base rates, policy and churns, at more probe pairs (its own generator, seed "
        f"{pairs['seed']}; n=46 was the suites' probe split before they grew to 200 pairs). "
        f"Share of {runs} simulated comparisons per cell: judge FAIL at a true drop of "
        f"{float(drop) * 100:g} pts / judge FAIL with the model unchanged (false FAIL). The last column "
        f"is the smallest n here where a {float(drop) * 100:g}-point loss FAILs at least {target:.0%} of "
        "the time.",
        "",
        "| suite | churn | "
        + " | ".join(f"n={n}" for n in pairs["n"])
        + f" | n for P(FAIL) ≥ {target:.0%} |",
        "|---|---|" + "---|" * (len(pairs["n"]) + 1),
    ]
    for name, by_churn in pairs["suites"].items():
        for churn, row in by_churn.items():
            cells = [f"{v[drop]['judge']:.1%} / {v['0']['judge']:.1%}" for v in row["fail_rate"].values()]
            needed = row["smallest_n"] if row["smallest_n"] is not None else f"> {pairs['n'][-1]}"
            lines.append(f"| {name} | {float(churn):.0%} | " + " | ".join(cells) + f" | {needed} |")
    lines.append("")
    return lines


def plot(table: Table, out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, grid = plt.subplots(2, len(table) // 2, figsize=(11, 8), sharey=True)
    axes = grid.flatten()
    for ax, (policy, by_drop) in zip(axes, table.items(), strict=True):
        for drop, by_n in by_drop.items():
            line = ax.plot(
                ITEMS,
                [v["judge"] for v in by_n.values()],
                marker="o",
                label=f"judge, drop {float(drop) * 100:g} pts",
            )
            ax.plot(
                ITEMS,
                [v["naive"] for v in by_n.values()],
                linestyle="--",
                color=line[0].get_color(),
                alpha=0.6,
                label=f"naive, drop {float(drop) * 100:g} pts",
            )
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
