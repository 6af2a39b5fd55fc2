"""Where a verdict is decided: paired statistics (`stats`), one suite's phase and diagnosis
(`verdict`), a model's overall phase and a history settled over time (`settle`), judging from the
store (`model`), and the noise floor (`calibrate`)."""

from monitor.errors import JudgeError
from monitor.judge.model import Judged, ModelJudgement, judge_model, judge_pair, judge_suite, verdict_rules
from monitor.judge.settle import measured, overall, settle
from monitor.judge.verdict import (
    Judgement,
    KindJudgement,
    Reelicited,
    decide,
    diagnose,
    judge_kind,
    judge_runs,
)

__all__ = [
    "JudgeError", "Judged", "Judgement", "KindJudgement", "ModelJudgement", "Reelicited", "decide",
    "diagnose", "judge_kind", "judge_model", "judge_pair", "judge_runs", "judge_suite", "measured", "overall",
    "settle", "verdict_rules",
]
