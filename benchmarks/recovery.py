"""What recovery retraining costs, on both forgetting scenarios (issue 15).

Each scenario's full loop runs as `make demo-loop` does (v2 released, judged, diagnosed, retrained
in rounds, gated, promoted or kept), on real SmolLM2 weights. The figures come from the
`recovery.json` each round writes beside its weights: examples per capability, rounds, training
seconds, share of the lost generation score brought back, and the target task before and after.
Written to benchmarks/results/recovery.{json,md}.

    make bench-recovery        # both scenarios; v1/v2 are built and probed once and reused
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from monitor.actions.retrain import read_record
from monitor.demo.loop import run_loop
from monitor.policy.loading import load_config

ROOT = Path(__file__).resolve().parent.parent
RESULTS = Path(__file__).resolve().parent / "results"
SCENARIOS = {"sentiment-json (make demo-loop)": ROOT / "forgetmenot.yaml",
             "support-email (make demo-email-loop)": ROOT / "scenarios" / "support-email.yaml"}


def run(name: str, policy: Path) -> dict[str, Any]:
    began = time.monotonic()
    result = run_loop(policy)
    wall = time.monotonic() - began
    folder = Path(result.config.database_url().removeprefix("sqlite:///")).parent / "models"
    rounds = sorted((read_record(p) for p in folder.glob("*/recovery.json")), key=lambda r: r["round"])
    last = rounds[-1] if rounds else {}
    retrained = [a for a in result.actions if a.kind == "retrain"]
    return {
        "scenario": name, "policy": str(policy.relative_to(ROOT)), "wall_seconds": round(wall, 1),
        "live": result.live, "promoted": bool(rounds) and result.live == last.get("version"),
        "rounds": len(rounds), "training_seconds": round(sum(r["training_seconds"] for r in rounds), 1),
        "examples": {suite: len(found) for suite, found in last.get("examples", {}).items()},
        "refusal_sides": _sides(last.get("examples", {}).get("refusal", [])),
        "losses": rounds[0]["losses"] if rounds else {},
        "figures": last.get("figures", []), "target": last.get("target", []),
        "per_round": [{"round": r["round"], "version": r["version"], "passed": r["passed"],
                       "examples": sum(len(f) for f in r["examples"].values()),
                       "training_seconds": r["training_seconds"],
                       "recovered": {f"{f['suite']} {f['kind']}": f["recovered"] for f in r["figures"]}}
                      for r in rounds],
        "statuses": [(a.id, a.trigger, a.status) for a in retrained],
    }


def _sides(found: list[dict[str, Any]]) -> str:
    refuse = sum(e["should_refuse"] is True for e in found)
    return f"{refuse} refuse, {len(found) - refuse} answer" if found else ""


def _pct(value: float | None) -> str:
    return "—" if value is None else f"{value:.1%}"


def _row(res: dict[str, Any], fig: dict[str, Any]) -> str:
    count = res["examples"].get(fig["suite"], 0)
    sides = f" ({res['refusal_sides']})" if fig["suite"] == "refusal" and res["refusal_sides"] else ""
    lost = (fig["baseline"] - fig["before"]) if None not in (fig["baseline"], fig["before"]) else None
    share = "—" if fig["recovered"] is None else f"{fig['recovered']:.0%}"
    chain = " → ".join(_pct(fig[k]) for k in ("baseline", "before", "after"))
    points = "—" if lost is None else f"{lost * 100:.1f}"
    return f"| {res['scenario']} | {fig['suite']} | {chain} | {points} | {count}{sides} | {share} |"


def table(results: list[dict[str, Any]]) -> str:
    lines = ["| scenario | capability (generation) | v1 → v2 → recovered | points lost | examples "
             "| recovered share |", "|---|---|---|---|---|---|"]
    lines += [_row(res, fig) for res in results for fig in res["figures"] if fig["kind"] == "generate_until"]
    lines += ["", "| scenario | rounds | recovery examples in all | training time "
              "| target task before → after | promoted | loop wall time |", "|---|---|---|---|---|---|---|"]
    for res in results:
        target = "; ".join(f"{t['suite']} {_pct(t['before'])} → {_pct(t['after'])}" for t in res["target"])
        lines.append(f"| {res['scenario']} | {res['rounds']} | {sum(res['examples'].values())} | "
                     f"{res['training_seconds']:.0f} s | {target} | {'yes' if res['promoted'] else 'no'} | "
                     f"{res['wall_seconds']:.0f} s |")
    lines += ["", "| scenario | round | version | recovery examples | training time | passed the gate "
              "| recovered share per capability |", "|---|---|---|---|---|---|---|"]
    for res in results:
        for r in res["per_round"]:
            gen = {k.removesuffix(" generate_until"): v for k, v in r["recovered"].items()
                   if v is not None and k.endswith("generate_until")}
            shares = ", ".join(f"{k} {v:.0%}" for k, v in gen.items())
            lines.append(f"| {res['scenario']} | {r['round']} | {r['version']} | {r['examples']} | "
                         f"{r['training_seconds']:.0f} s | {'yes' if r['passed'] else 'no'} | {shares} |")
    return "\n".join(lines) + "\n"


def _budget(policy: Path) -> str:
    specs = [m.retrain for m in load_config(policy, check_paths=False).models.values()]
    return ", ".join(f"max_examples {r.max_examples}, round_examples {r.round_examples}, "
                     f"max_rounds {r.max_rounds}" for r in specs)


def main() -> None:
    results = [run(name, policy) for name, policy in SCENARIOS.items()]
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "recovery.json").write_text(json.dumps(results, indent=1) + "\n")
    budgets = "; ".join(f"{name}: {_budget(policy)}" for name, policy in SCENARIOS.items())
    header = ("# Recovery cost on both scenarios\n\nReal SmolLM2-135M-Instruct, 2 CPU cores, "
              f"`make bench-recovery`. Budget per policy: {budgets}.\n\n")
    (RESULTS / "recovery.md").write_text(header + table(results))
    print(header + table(results))


if __name__ == "__main__":
    main()
