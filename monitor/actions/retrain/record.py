"""What a recovered version was made from, written beside its weights: the round, the examples
(every prompt and answer, and whose words the answer is), the training time and the gate's
figures. A version kept for inspection is inspected from this file; the cost table of
`make bench-recovery` is read from it."""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path
from typing import Any

from monitor.actions.retrain.gate import Outcome
from monitor.actions.retrain.plan import Plan

RECORD = "recovery.json"


def write_record(path: Path, the_plan: Plan, outcome: Outcome, seconds: float) -> Path:
    record = {
        "version": outcome.version,
        "round": the_plan.round,
        "training_seconds": round(seconds, 1),
        "losses": the_plan.losses,
        "examples": {suite: [{"id": e.item.id, "prompt": e.prompt, "answer": e.answer, "taught": e.taught,
                              "should_refuse": e.item.should_refuse} for e in found]
                     for suite, found in the_plan.recovery.items()},
        "replay": len(the_plan.replay),
        "passed": not outcome.problems,
        "problems": outcome.problems,
        "retry": outcome.retry,
        "figures": [asdict(f) | {"recovered": f.recovered()} for f in outcome.figures],
        "target": [asdict(f) for f in outcome.target],
    }
    path.write_text(json.dumps(record, indent=1) + "\n", encoding="utf-8")
    return path


def read_record(path: Path) -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    return loaded
