"""The fault matrix (`make chaos`): every fault of issue 12 against a real `forgetmenot serve`.

A PostgreSQL cluster of its own (initdb/pg_ctl, a free loopback port), llama.cpp serving SmolLM2
behind a proxy that misbehaves on request, and one database per fault. Results go to
benchmarks/results/chaos.{md,json}; the process exits 1 if any fault was not survived.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from dataclasses import asdict
from pathlib import Path

from monitor.testing.chaos import FAULTS, TESTED, Outcome, run_fault, run_tested, world

RESULTS = Path(__file__).parent / "results"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", help="comma-separated fault names (default: all)")
    args = parser.parse_args()
    chosen = [f for f in FAULTS if not args.only or f.name in args.only.split(",")]
    tested = [f for f in TESTED if not args.only or f.name in args.only.split(",")]
    outcomes = []
    with world() as (pg, proxy, tokenizer):
        for fault in chosen:
            print(f"fault {fault.name} ...", flush=True)
            with tempfile.TemporaryDirectory(prefix=f"fmn-{fault.name}-") as tmp:
                proxy.mode = "ok"
                outcomes.append(run_fault(pg, proxy, tokenizer, Path(tmp), fault))
            print(f"  {outcomes[-1].did}", flush=True)
    for checked in tested:
        print(f"fault {checked.name} (by its tests) ...", flush=True)
        outcomes.append(run_tested(checked, Path(__file__).parents[1]))
        print(f"  {outcomes[-1].did}", flush=True)
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "chaos.json").write_text(as_json(outcomes) + "\n")
    report = table(outcomes)
    (RESULTS / "chaos.md").write_text("Fault matrix (`make chaos`)\n\n" + report + "\n")
    print(report)
    return 0 if all(o.survived for o in outcomes) else 1


def table(outcomes: list[Outcome]) -> str:
    rows = ["| fault | what the monitor must do | what it did | survived |", "|---|---|---|---|"]
    rows += [f"| {o.fault} | {o.must} | {o.did} | {'yes' if o.survived else 'NO'} |" for o in outcomes]
    totals = {"faults tried": len(outcomes), "survived": sum(o.survived for o in outcomes),
              "false FAILs": sum(o.false_fails for o in outcomes),
              "false rollbacks": sum(o.false_rollbacks for o in outcomes),
              "items stored": sum(o.items_stored for o in outcomes),
              "items lost": sum(o.items_lost for o in outcomes),
              "items stored twice": sum(o.items_stored_twice for o in outcomes),
              "/healthz unanswered": sum(o.health_unanswered for o in outcomes),
              "slowest stop (s)": max(o.slowest_stop_s for o in outcomes),
              "actions duplicated": sum(o.duplicated_actions for o in outcomes),
              "slots worked twice": sum(o.slots_worked_twice for o in outcomes),
              "slowest recovery (s)": max((o.recover_s or 0) for o in outcomes)}
    rows += ["", "Rows marked \"by its tests\" run the tests that stage the fault on a scripted server "
             "or a real PostgreSQL; the others run live."]
    rows += ["", "| " + " | ".join(totals) + " |", "|" + "---|" * len(totals),
             "| " + " | ".join(str(v) for v in totals.values()) + " |"]
    return "\n".join(rows)


def as_json(outcomes: list[Outcome]) -> str:
    return json.dumps([asdict(o) for o in outcomes], indent=2)


if __name__ == "__main__":
    sys.exit(main())
