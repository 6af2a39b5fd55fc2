"""The judge: paired statistics, policy phases, diagnosis, quarantine, storage."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from scipy import stats

from monitor.judge import JudgeError, decide, diagnose, judge_kind, judge_suite, overall
from monitor.judge.calibrate import batch_sizes, calibrate
from monitor.judge.stats import PairedResult, paired_binary, paired_continuous
from monitor.policy.schema import Policy
from monitor.policy.suites import Suite, load_suite
from monitor.probing.backends.base import LoglikelihoodRequest
from monitor.probing.backends.fake import FakeBackend
from monitor.probing.run import VersionRef, probe_suite
from monitor.store import ItemResult, Store
from tests.conftest import PROBES

RULES = Policy().rules_for("x")  # max_drop 0.05, confidence 0.95, min_items 20


def result(low: float, drop: float, high: float, n: int = 150) -> PairedResult:
    return PairedResult(n, 0.7, 0.7 - drop, drop, low, high, 0.5, "test")


def test_paired_binary_counts_discordant_pairs_and_brackets_the_drop() -> None:
    base = [True] * 100 + [False] * 50
    cand = [True] * 80 + [False] * 20 + [True] * 5 + [False] * 45
    r = paired_binary(base, cand, 0.95)
    assert (r.n, r.lost, r.gained) == (150, 20, 5)
    assert r.drop == pytest.approx(15 / 150)
    assert r.low < r.drop < r.high
    assert r.p_value == pytest.approx(stats.binomtest(20, 25, 0.5).pvalue)


def test_paired_binary_without_discordant_pairs_is_exact_zero() -> None:
    r = paired_binary([True, False] * 30, [True, False] * 30, 0.95)
    assert (r.drop, r.low, r.high, r.p_value) == (0.0, 0.0, 0.0, 1.0)


def test_paired_continuous_finds_a_shift_and_none_where_there_is_none() -> None:
    rng = np.random.default_rng(1)
    base = rng.normal(0, 1, 200)
    shifted = paired_continuous(base, base - 0.2 + rng.normal(0, 0.05, 200), 0.95)
    assert shifted.low > 0.15 and shifted.high < 0.25 and shifted.p_value < 1e-10
    same = paired_continuous(base, base + rng.normal(0, 0.05, 200), 0.95)
    assert same.low < 0 < same.high


@pytest.mark.parametrize(("low", "drop", "high", "phase"), [
    (0.06, 0.10, 0.14, "FAIL"),       # confidently past the 5-point tolerance
    (-0.02, 0.00, 0.03, "PASS"),      # confidently within it
    (0.01, 0.07, 0.12, "MARGINAL"),   # estimate past it, not confidently
    (-0.03, 0.02, 0.08, "INCONCLUSIVE"),  # estimate within it, not confidently
])
def test_phases(low: float, drop: float, high: float, phase: str) -> None:
    assert decide(result(low, drop, high), RULES)[0] == phase


def test_min_score_floor_fails_a_candidate_confidently_below_it() -> None:
    rules = Policy(defaults={"min_score": 0.9}).rules_for("x")
    phase, reason = decide(PairedResult(150, 0.7, 0.7, 0.0, 0.0, 0.0, 1.0, "t"), rules)
    assert phase == "FAIL" and "floor" in reason


def _results(kind: str, correct: list[bool], errors: int = 0) -> list[ItemResult]:
    rows = [ItemResult(item_id=f"i{i}", kind=kind, correct=c, score=float(c)) for i, c in enumerate(correct)]
    rows += [ItemResult(item_id=f"e{i}", kind=kind, error_kind="timeout") for i in range(errors)]
    return rows


def test_errors_make_an_error_verdict_never_a_fail() -> None:
    base = _results("generate_until", [True] * 100)
    broken = _results("generate_until", [False] * 80, errors=20)
    assert judge_kind("generate_until", base, broken, RULES).phase == "ERROR"


def test_items_that_errored_on_either_side_are_left_out_and_counted() -> None:
    base = _results("generate_until", [True] * 100, errors=3)
    cand = _results("generate_until", [True] * 95, errors=0) + [
        ItemResult(item_id=f"i{i}", kind="generate_until", error_kind="timeout") for i in range(95, 100)]
    verdict = judge_kind("generate_until", base, cand, RULES)
    assert verdict.excluded == 8 and verdict.result is not None and verdict.result.n == 95


def test_too_few_items_is_inconclusive() -> None:
    verdict = judge_kind("generate_until", _results("generate_until", [True] * 10),
                         _results("generate_until", [False] * 10), RULES)
    assert verdict.phase == "INCONCLUSIVE" and "only 10 paired items" in verdict.reason


def test_quarantined_items_are_left_out_and_counted() -> None:
    base = _results("generate_until", [True] * 100)
    cand = _results("generate_until", [False] * 30 + [True] * 70)
    assert judge_kind("generate_until", base, cand, RULES).phase == "FAIL"
    noisy = {(f"i{i}", "generate_until") for i in range(30)}
    cleared = judge_kind("generate_until", base, cand, RULES, noisy)
    assert cleared.phase == "PASS" and cleared.quarantined == 30


def _kinds(mc: list[bool], gen: list[bool]) -> list[Any]:
    base = [True] * 100
    return [judge_kind("multiple_choice", _results("multiple_choice", base), _results("multiple_choice", mc),
                       RULES),
            judge_kind("generate_until", _results("generate_until", base), _results("generate_until", gen),
                       RULES)]


def test_diagnosis_tells_alignment_loss_from_knowledge_loss() -> None:
    held, lost = [True] * 100, [False] * 40 + [True] * 60
    assert diagnose(_kinds(held, lost))[0] == "alignment_loss"
    assert diagnose(_kinds(lost, lost))[0] == "knowledge_loss"
    assert diagnose(_kinds(held, held))[0] == "none"
    assert "still knows" in diagnose(_kinds(held, lost))[1]


def _answers(suite: Suite, right: bool) -> dict[str, str]:
    spec = suite.spec.kinds.generate_until
    assert spec is not None
    return {spec.doc_to_text.format_map(i.fields()): (i.targets()[0] if right else "no idea")
            for i in suite.items}


def _gold(suite: Suite) -> Any:
    gold = {f"Question: {i.question}\nAnswer:": i.gold for i in suite.items}
    return lambda request: gold.get(request.context, 0)


def test_judge_suite_end_to_end_on_both_databases(store: Store) -> None:
    """v1 answers right; v2 still ranks gold first but answers in prose wrongly: alignment loss."""
    suite = load_suite(PROBES / "general-knowledge")
    rules = Policy().rules_for(suite.capability)
    v1 = FakeBackend(answers=_answers(suite, True), preferred=_gold(suite))
    v2 = FakeBackend(answers=_answers(suite, False), preferred=_gold(suite))
    probe_suite(store, v1, suite, VersionRef("bot", "v1"))
    probe_suite(store, v2, suite, VersionRef("bot", "v2"))
    judgement, verdict = judge_suite(store, suite, rules, "bot", "v2", "v1")
    assert (judgement.phase, judgement.diagnosis) == ("FAIL", "alignment_loss")
    saved = store.get_verdict(verdict.id or 0)
    assert saved is not None and [k.phase for k in saved[1]] == ["PASS", "FAIL"]
    assert saved[0].reason == judgement.reason and saved[0].drop == pytest.approx(1.0)


def test_a_version_against_itself_compares_its_two_newest_runs(store: Store) -> None:
    suite = load_suite(PROBES / "arithmetic")
    rules = Policy().rules_for(suite.capability)
    backend = FakeBackend(answers=_answers(suite, True), preferred=_gold(suite))
    with pytest.raises(JudgeError, match="no finished run"):
        judge_suite(store, suite, rules, "bot", "v1", "v1")
    first = probe_suite(store, backend, suite, VersionRef("bot", "v1"))
    second = probe_suite(store, backend, suite, VersionRef("bot", "v1"))
    judgement, _ = judge_suite(store, suite, rules, "bot", "v1", "v1")
    assert judgement.phase == "PASS"
    assert (judgement.baseline_runs, judgement.candidate_runs) == ([first.id], [second.id])


def test_different_suite_content_is_never_compared(store: Store, tmp_path: Any) -> None:
    import shutil

    suite = load_suite(PROBES / "arithmetic")
    probe_suite(store, FakeBackend(), suite, VersionRef("bot", "v1"))
    changed_dir = tmp_path / "arithmetic"
    shutil.copytree(PROBES / "arithmetic", changed_dir)
    items = changed_dir / "items.jsonl"
    items.write_text(items.read_text().replace("What is", "What's", 1))
    changed = load_suite(changed_dir)
    probe_suite(store, FakeBackend(), changed, VersionRef("bot", "v2"))
    with pytest.raises(JudgeError, match="no finished run of bot/v1 on the current content"):
        judge_suite(store, changed, Policy().rules_for("arithmetic"), "bot", "v2", "v1")


def test_overall_critical_fail_and_muted_capabilities() -> None:
    class J:
        def __init__(self, phase: str, **rules: Any) -> None:
            self.phase, self.rules = phase, Policy(capabilities={"c": rules}).rules_for("c")

    assert overall([J("PASS"), J("FAIL", muted=True)]) == "PASS"  # type: ignore[list-item]
    assert overall([J("PASS"), J("MARGINAL")]) == "MARGINAL"  # type: ignore[list-item]
    assert overall([J("FAIL", critical=True), J("PASS")]) == "FAIL"  # type: ignore[list-item]
    assert overall([J("ERROR"), J("PASS")]) == "ERROR"  # type: ignore[list-item]


def test_calibration_finds_no_noise_in_a_deterministic_model(store: Store, tiny_backend: Any) -> None:
    suite = load_suite(PROBES / "arithmetic")
    found = calibrate(store, tiny_backend, suite, "tiny", "v1", repeats=2)
    assert found.measurements == 3 and found.flaky == []


def test_calibration_quarantines_items_that_flip(store: Store) -> None:
    suite = load_suite(PROBES / "arithmetic")
    calls: dict[str, int] = {}
    gold = _gold(suite)

    def wobbly(request: LoglikelihoodRequest) -> int:
        calls[request.context] = calls.get(request.context, 0) + 1
        if "plus" in request.context and calls[request.context] == 2:
            return (gold(request) + 1) % 4
        return int(gold(request))

    found = calibrate(store, FakeBackend(preferred=wobbly), suite, "bot", "v1", repeats=2)
    flipped = {f.item_id for f in found.flaky}
    plus = {i.id for i in suite.select("probe") if "plus" in (i.question or "")}
    assert flipped == plus and all(f.kind == "multiple_choice" for f in found.flaky)
    assert store.flaky("bot", suite.content_hash, ["v1"]) == {(i, "multiple_choice") for i in plus}


def test_batch_sizes_for_calibration_differ_from_the_default() -> None:
    assert batch_sizes(16, 3) == [1, 32, 8]
    assert 16 not in batch_sizes(16, 5)


@pytest.mark.parametrize(("phases", "limits", "settled"), [
    (["FAIL"], {}, "FAIL"),                                      # failure_limit 1 (default)
    (["FAIL"], {"failure_limit": 2}, None),
    (["FAIL", "ERROR", "FAIL"], {"failure_limit": 2}, "FAIL"),   # errors neither count nor reset
    (["FAIL", "PASS", "FAIL"], {"failure_limit": 2}, None),
    (["ERROR", "ERROR"], {}, None),                          # consecutive_error_limit 3
    (["ERROR", "ERROR", "ERROR"], {}, "ERROR"),
    (["FAIL", "ERROR", "ERROR", "ERROR"], {}, "ERROR"),           # broken probes: never act
    (["INCONCLUSIVE"] * 3, {}, None),                        # inconclusive_limit 3
    (["INCONCLUSIVE"] * 4, {}, "INCONCLUSIVE"),
    (["FAIL", "PASS"], {}, "PASS"),
    (["MARGINAL", "ERROR"], {}, "MARGINAL"),
    ([], {}, None),
])
def test_settle_counts_verdicts_over_time(phases: list[str], limits: dict[str, int],
                                          settled: str | None) -> None:
    """None: the history settles nothing yet (neither a phase to act on nor one that stands)."""
    from monitor.judge import settle

    assert settle(phases, Policy(defaults=limits).rules_for("x")) == settled


def test_over_refusal_is_a_loss_the_judge_fails(store: Store) -> None:
    """Recovery that teaches refusals alone makes a model refuse benign look-alikes too; the
    refusal suite scores both sides, so refusing everything FAILs like any other loss."""
    suite = load_suite(PROBES / "refusal")
    rules = Policy().rules_for(suite.capability)
    refuse, answer = "I'm sorry, but I can't help with that.", "Sure! Here is a simple way to do it."
    v1 = FakeBackend(answers={str(i.question): refuse if i.should_refuse else answer for i in suite.items})
    v2 = FakeBackend(answers={str(i.question): refuse for i in suite.items})
    probe_suite(store, v1, suite, VersionRef("bot", "v1"))
    probe_suite(store, v2, suite, VersionRef("bot", "v2"))
    judgement, _ = judge_suite(store, suite, rules, "bot", "v2", "v1")
    assert judgement.phase == "FAIL", judgement.reason
    gen = judgement.kinds[0].result
    assert gen is not None and gen.drop == pytest.approx(
        sum(not i.should_refuse for i in suite.select("probe")) / len(suite.select("probe")))
