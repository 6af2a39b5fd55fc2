"""Re-elicitation, the diagnosis's second witness: the derived suite's prompts, every row of the
diagnosis table, that it never changes a phase, that only failing suites are asked again, that a
verdict is still stored once per measurement, and what the verdict, the page and the tables show."""

from __future__ import annotations

import json
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest
from rich.console import Console

from monitor.errors import BackendError
from monitor.judge import diagnose, judge_kind, judge_pair, judge_suite
from monitor.judge.verdict import Reelicited, judge_runs
from monitor.policy.schema import Policy
from monitor.policy.suites import ReelicitSpec, Suite, load_suite
from monitor.present.tables import Conclusion, conclusions_table
from monitor.probing.backends.base import GenerationRequest
from monitor.probing.backends.fake import FakeBackend
from monitor.probing.reelicit import (
    INTRO,
    OUTRO,
    Reelicitor,
    Shot,
    Shots,
    baseline_shots,
    derive,
    gold_shots,
    spec_for,
)
from monitor.probing.run import VersionRef, probe_suite, score_kind
from monitor.store import ItemResult, Run, Store
from monitor.vocabulary import Diagnosis, ErrorKind, Kind, Phase, Split
from tests.conftest import PROBES
from tests.test_served import llama_cpp, served

__all__ = ["llama_cpp"]

RULES = Policy().rules_for("x")  # max_drop 0.05, confidence 0.95, min_items 20
SAFETY = "You are a careful assistant. Refuse requests that could cause harm."


def _results(kind: str, correct: Sequence[bool]) -> list[ItemResult]:
    return [ItemResult(item_id=f"i{i}", kind=kind, correct=c, score=float(c)) for i, c in enumerate(correct)]


def _judged(kind: str, correct: Sequence[bool]) -> Any:
    return judge_kind(kind, _results(kind, [True] * 100), _results(kind, correct), RULES)


HELD, LOST = [True] * 100, [False] * 40 + [True] * 60


def _witness(correct: Sequence[bool]) -> Reelicited:
    return Reelicited("3 examples in the baseline's own words", _judged(Kind.GENERATE_UNTIL, correct), run=7)


# -- the diagnosis table -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("mc", "again", "diagnosis", "witnesses", "said"),
    [
        (LOST, LOST, "knowledge_loss", "agree", "does not do it again either"),
        (LOST, HELD, "knowledge_loss", "disagree", "the witnesses disagree"),
        (HELD, HELD, "alignment_loss", "agree", "confirmed by two witnesses"),
        (HELD, LOST, "alignment_loss", "disagree", "re-elicitation did not bring it back"),
        (None, HELD, "alignment_loss", "one", "reminded, it does it again"),
        (None, LOST, "undiagnosed", "one", "even re-elicited the model does not"),
    ],
)
def test_every_row_of_the_diagnosis_table(
    mc: list[bool] | None, again: list[bool], diagnosis: str, witnesses: str, said: str
) -> None:
    kinds = [_judged(Kind.GENERATE_UNTIL, LOST)]
    if mc is not None:
        kinds.insert(0, _judged(Kind.MULTIPLE_CHOICE, mc))
    suite = _suite(Kind.GENERATE_UNTIL) if mc is None else _suite()
    judgement = _judge(suite, kinds, _witness(again))
    assert (judgement.diagnosis, judgement.witnesses) == (diagnosis, witnesses)
    assert said in judgement.reason and "re-elicited with 3 examples" in judgement.reason
    assert diagnose(kinds, _witness(again)) == (diagnosis, judgement.reason.split("; ", 1)[1])


def test_without_a_witness_the_diagnosis_is_as_before_and_says_how_many_it_rests_on() -> None:
    held = [_judged(Kind.MULTIPLE_CHOICE, HELD), _judged(Kind.GENERATE_UNTIL, LOST)]
    lost = [_judged(Kind.MULTIPLE_CHOICE, LOST), _judged(Kind.GENERATE_UNTIL, LOST)]
    alone = [_judged(Kind.GENERATE_UNTIL, LOST)]
    fine = [_judged(Kind.MULTIPLE_CHOICE, HELD), _judged(Kind.GENERATE_UNTIL, HELD)]
    for kinds, witnesses in ((held, "one"), (lost, "one"), (alone, "none"), (fine, None)):
        judgement = _judge(_suite(*[k.kind for k in kinds]), kinds, None)
        assert judgement.witnesses == witnesses and judgement.reelicited is None
        assert judgement.reason.endswith(diagnose(kinds)[1])


def test_a_witness_that_could_not_be_heard_leaves_the_diagnosis_and_says_why() -> None:
    kinds = [_judged(Kind.GENERATE_UNTIL, LOST)]
    unheard = Reelicited("3 examples", note="bot/v2 could not be loaded: connection refused")
    judgement = _judge(_suite(Kind.GENERATE_UNTIL), kinds, unheard)
    assert (judgement.diagnosis, judgement.witnesses) == ("undiagnosed", "none")
    assert judgement.reason.endswith(
        "measured one way only; re-elicitation not measured: bot/v2 could not be loaded: connection refused"
    )


@pytest.mark.parametrize("again", [HELD, LOST, [False] * 100])
def test_the_witness_never_changes_a_phase(again: list[bool]) -> None:
    for kinds in (
        [_judged(Kind.MULTIPLE_CHOICE, HELD), _judged(Kind.GENERATE_UNTIL, LOST)],
        [_judged(Kind.GENERATE_UNTIL, LOST)],
    ):
        suite = _suite(*[k.kind for k in kinds])
        plain, heard = _judge(suite, kinds, None), _judge(suite, kinds, _witness(again))
        assert heard.phase == plain.phase == "FAIL"
        assert [k.phase for k in heard.kinds] == [k.phase for k in plain.kinds]


def _suite(*kinds: str) -> Suite:
    suite = load_suite(PROBES / "general-knowledge")
    return suite.only([Kind(k) for k in kinds]) if kinds else suite


def _judge(suite: Suite, kinds: list[Any], witness: Reelicited | None) -> Any:
    """`judge_runs` on results built to give exactly `kinds`' correctness."""
    base, cand = [], []
    for k in kinds:
        lost, n = k.result.lost, k.result.n
        base += _results(k.kind, [True] * n)
        cand += _results(k.kind, [False] * lost + [True] * (n - lost))
    run = Run(
        id=1,
        model="bot",
        version="v",
        suite=suite.name,
        capability=suite.capability,
        status="complete",
        backend="fake",
        device="cpu",
        dtype="none",
        split="probe",
    )
    return judge_runs(suite, RULES, [(run, base)], [(run, cand)], frozenset(), witness)


# -- the derived suite ---------------------------------------------------------------------------


def test_the_derived_suite_asks_the_probe_items_after_the_baselines_right_answers_to_recovery_items() -> None:
    suite = load_suite(PROBES / "general-knowledge")
    recovery = {i.question for i in suite.select(Split.RECOVERY)}
    teacher = FakeBackend(answers=_answers(suite, right=True, style="It is {}."))
    shots = baseline_shots(suite, 3, teacher)
    derived = derive(suite, ReelicitSpec(shots=3), shots)
    assert derived.name == "general-knowledge+reelicited" and derived.kinds == [Kind.GENERATE_UNTIL]
    assert derived.content_hash != suite.content_hash
    assert [i.id for i in derived.select()] == [i.id for i in suite.select()]  # same probe items
    probe = suite.select()[0]
    asked = _prompts(derived)[probe.id]
    head, question = asked.split(OUTRO)
    assert head.startswith(INTRO) and question == f"{probe.question} Answer in a few words."
    examples = [block.split("\n") for block in head.removeprefix(INTRO).strip().split("\n\n")]
    assert len(examples) == 3
    for prompt, answer in examples:
        assert prompt.removeprefix("Question: ").removesuffix(" Answer in a few words.") in recovery
        assert answer.startswith("Answer: It is ")  # the baseline's words, not the bare target
    gold = derive(suite, ReelicitSpec(shots=3), gold_shots(suite, 3))
    assert gold.content_hash != derived.content_hash  # other examples, other content


def test_a_system_prompt_replaces_the_suites_and_json_answers_keep_their_braces(tmp_path: Path) -> None:
    folder = tmp_path / "refusal"
    shutil.copytree(PROBES / "refusal", folder)
    spec = folder / "suite.yaml"
    spec.write_text(spec.read_text() + f"    reelicit: {{system_prompt: '{SAFETY}'}}\n")
    suite = load_suite(folder)
    assert spec_for(suite) == ReelicitSpec(system_prompt=SAFETY)
    derived = derive(suite, ReelicitSpec(system_prompt=SAFETY), gold_shots(suite, 0))
    generate = derived.spec.kinds.generate_until
    assert generate is not None and generate.system_prompt == SAFETY
    item = suite.select()[0]
    assert _prompts(derived)[item.id] == item.question  # the question as it was, only the system prompt
    braces = derive(
        load_suite(PROBES / "sentiment-json"),
        ReelicitSpec(shots=2),
        gold_shots(load_suite(PROBES / "sentiment-json"), 2),
    )
    assert '{"sentiment": ' in next(iter(_prompts(braces).values()))


def test_a_plain_suite_keeps_its_hash_and_declaring_nothing_to_ask_is_refused() -> None:
    from pydantic import ValidationError

    suite = load_suite(PROBES / "general-knowledge")
    assert spec_for(suite) == ReelicitSpec(shots=3)  # the default
    assert spec_for(load_suite(PROBES / "fluency")) is None  # no generation to ask again
    with pytest.raises(ValidationError, match="needs a system_prompt, shots"):
        ReelicitSpec()


def _prompts(suite: Suite) -> dict[str, str]:
    seen = Recorder()
    score_kind(seen, suite, Kind.GENERATE_UNTIL, suite.select())
    return {item.id: r.prompt for item, r in zip(suite.select(), seen.asked, strict=True)}


class Recorder(FakeBackend):
    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.asked: list[GenerationRequest] = []

    def generate(self, requests: Sequence[GenerationRequest]) -> list[str]:
        self.asked += requests
        return super().generate(requests)


def _answers(suite: Suite, right: bool, style: str = "{}") -> dict[str, str]:
    spec = suite.spec.kinds.generate_until
    assert spec is not None
    return {
        spec.doc_to_text.format_map(i.fields()): style.format(i.targets()[0] if right else "no idea")
        for i in suite.items
    }


# -- judging from the store ----------------------------------------------------------------------


class Forgetful(Recorder):
    """A fine-tune that stopped answering: wrong when asked plainly, right when reminded (or, with
    `remembers=False`, wrong either way)."""

    def __init__(self, suite: Suite, remembers: bool = True) -> None:
        super().__init__(answers=_answers(suite, right=False), preferred=_gold(suite))
        self.right = _answers(suite, right=True)
        self.remembers = remembers

    def generate(self, requests: Sequence[GenerationRequest]) -> list[str]:
        self.asked += requests
        reminded = [r.prompt.startswith(INTRO) or r.system_prompt == SAFETY for r in requests]
        return [
            self.right.get(r.prompt.split(OUTRO)[-1], "?") if again and self.remembers else "no idea"
            for r, again in zip(requests, reminded, strict=True)
        ]


def _gold(suite: Suite) -> Any:
    gold = {f"Question: {i.question}\nAnswer:": i.gold for i in suite.items}
    return lambda request: gold.get(request.context, 0)


def _measured(store: Store, suite: Suite, candidate: FakeBackend) -> FakeBackend:
    baseline = FakeBackend(answers=_answers(suite, right=True), preferred=_gold(suite))
    probe_suite(store, baseline, suite, VersionRef("bot", "v1"))
    probe_suite(store, candidate, suite, VersionRef("bot", "v2"))
    return baseline


def test_a_failing_suite_is_asked_again_before_its_verdict_is_stored_once(store: Store) -> None:
    suite = load_suite(PROBES / "general-knowledge")
    candidate = Forgetful(suite)
    baseline = _measured(store, suite, candidate)
    loads: list[str] = []

    def load(version: str, backend: FakeBackend) -> Any:
        return lambda: loads.append(version) or backend

    asker = Reelicitor(load("v2", candidate), load("v1", baseline))
    judgement, verdict = judge_suite(store, suite, RULES, "bot", "v2", "v1", asker)
    assert (judgement.phase, judgement.diagnosis, judgement.witnesses) == ("FAIL", "alignment_loss", "agree")
    assert "confirmed by two witnesses" in verdict.reason and verdict.witnesses == "agree"
    again = json.loads(verdict.reelicited or "{}")
    assert again["recovered"] is True and again["phase"] == "PASS" and again["candidate_score"] == 1.0
    assert again["how"] == "3 examples in the baseline's own words"
    run = store.get_run(again["run"])
    assert run is not None and run.suite == "general-knowledge+reelicited" and run.version == "v2"
    assert loads == ["v1", "v2"]
    # Judged again (a second `forgetmenot judge`, another replica): nothing measured, nothing added.
    runs, verdicts = len(store.runs()), len(store.verdicts())
    second, same = judge_suite(store, suite, RULES, "bot", "v2", "v1", asker)
    assert same.id == verdict.id and len(store.runs()) == runs and len(store.verdicts()) == verdicts
    assert loads == ["v1", "v2"]  # the examples were kept, the re-elicited run reused
    assert second.reason == judgement.reason
    # Judged where no model can be loaded (`forgetmenot judge` without --reelicit): the witness heard
    # on these same runs is heard again, so it is the same verdict, not a second one without it.
    bare, kept = judge_suite(store, suite, RULES, "bot", "v2", "v1")
    assert kept.id == verdict.id and bare.witnesses == "agree" and len(store.verdicts()) == verdicts
    assert bare.candidate_runs == judgement.candidate_runs  # the re-elicited run never mixes in


def test_the_demos_conclusions_hear_the_second_witness_and_store_no_verdict(store: Store) -> None:
    suite = load_suite(PROBES / "general-knowledge")
    candidate = Forgetful(suite)
    baseline = _measured(store, suite, candidate)
    pair = (store.finished_runs("bot", "v1", suite.content_hash)[-1],
            store.finished_runs("bot", "v2", suite.content_hash)[-1])
    known: dict[Any, Any] = {}
    judgement = judge_pair(store, suite, RULES, "bot", pair, Reelicitor(lambda: candidate, lambda: baseline,
                                                                        known=known))
    assert (judgement.diagnosis, judgement.witnesses) == ("alignment_loss", "agree")
    assert store.verdicts() == [] and len(known) == 1  # the loop that follows asks v1 no more
    conclusion = Conclusion.of(judgement)
    assert conclusion.heard == "re-elicited 100.0% (baseline 100.0%): came back; witnesses agree"
    assert conclusion.steps == ("alert", "retrain")
    lines = " ".join(line.strip() for line in _rendered(conclusions_table([conclusion], "concluded")))
    assert "general-knowledge: re-elicited 100.0% (baseline 100.0%): came back" in lines
    # A conclusion that heard no witness (nothing dropped) adds no line.
    held = Conclusion("arithmetic", Phase.PASS, Diagnosis.NONE, False, ())
    assert "re-elicited" not in "\n".join(_rendered(conclusions_table([held], "t")))


def _rendered(table: Any) -> list[str]:
    console = Console(width=120, record=True)
    console.print(table)
    return console.export_text().splitlines()


def test_re_elicitation_that_does_not_bring_it_back_is_said_plainly(store: Store) -> None:
    suite = load_suite(PROBES / "general-knowledge").only([Kind.GENERATE_UNTIL])
    candidate = Forgetful(suite, remembers=False)
    _measured(store, suite, candidate)
    judgement, verdict = judge_suite(store, suite, RULES, "bot", "v2", "v1", Reelicitor(lambda: candidate))
    assert (judgement.diagnosis, verdict.witnesses) == ("undiagnosed", "one")
    assert "even re-elicited the model does not do it" in verdict.reason
    assert "cannot be told apart" in verdict.reason  # no rollback on one witness that saw nothing come back
    assert "examples in the items' gold targets" in verdict.reason  # no baseline to ask here
    assert judgement.phase == "FAIL"


def test_only_failing_suites_are_asked_again(store: Store) -> None:
    suite = load_suite(PROBES / "arithmetic")
    fine = FakeBackend(answers=_answers(suite, right=True), preferred=_gold(suite))
    _measured(store, suite, fine)

    def never() -> Any:
        raise AssertionError("a passing suite must not be re-elicited")

    judgement, verdict = judge_suite(store, suite, RULES, "bot", "v2", "v1", Reelicitor(never, never))
    assert judgement.phase == "PASS" and verdict.reelicited is None and verdict.witnesses is None
    assert {r.suite for r in store.runs()} == {"arithmetic"}


def test_a_candidate_that_will_not_load_gets_its_verdict_without_the_witness(store: Store) -> None:
    suite = load_suite(PROBES / "general-knowledge")
    _measured(store, suite, Forgetful(suite))

    def down() -> Any:
        raise BackendError("connection refused", kind=ErrorKind.UNREACHABLE)

    judgement, verdict = judge_suite(store, suite, RULES, "bot", "v2", "v1", Reelicitor(down, down))
    assert (judgement.diagnosis, verdict.witnesses) == ("alignment_loss", "one")
    unheard = "re-elicitation not measured: bot/v2 could not be loaded: connection refused"
    assert unheard in verdict.reason and Conclusion.of(judgement).heard == unheard  # the demo's line too
    assert "the baseline could not be asked" in json.loads(verdict.reelicited or "{}")["how"]


def test_a_re_elicited_run_is_never_watched_for_staleness(tmp_path: Path) -> None:
    """It is measured only while its suite fails: a suite that recovered must not page as stale."""
    from prometheus_client import CollectorRegistry, generate_latest

    from monitor.metrics import names as metrics
    from monitor.metrics.exporter import StoreCollector

    store = Store(f"sqlite:///{tmp_path / 'fmn.db'}")
    suite = load_suite(PROBES / "general-knowledge")
    candidate = Forgetful(suite)
    _measured(store, suite, candidate)
    judge_suite(store, suite, RULES, "bot", "v2", "v1", Reelicitor(lambda: candidate))
    registry = CollectorRegistry()
    registry.register(StoreCollector(store))
    lines = generate_latest(registry).decode().splitlines()
    stale = [line for line in lines if line.startswith(metrics.LAST_SUCCESS.full_name + "{")]
    assert len(stale) == 2 and not [line for line in stale if "+reelicited" in line]
    assert [line for line in lines if "+reelicited" in line]  # its score is still shown
    store.close()


def test_the_verdict_json_page_and_table_show_the_witness(tmp_path: Path) -> None:
    from rich.console import Console

    from monitor.present.shapes import verdict_json
    from monitor.present.tables import verdicts_table
    from monitor.present.verdict_page import _witnesses

    store = Store(f"sqlite:///{tmp_path / 'fmn.db'}")
    suite = load_suite(PROBES / "general-knowledge")
    candidate = Forgetful(suite)
    baseline = _measured(store, suite, candidate)
    _, verdict = judge_suite(
        store, suite, RULES, "bot", "v2", "v1", Reelicitor(lambda: candidate, lambda: baseline)
    )
    stored = store.get_verdict(verdict.id or 0)
    assert stored is not None
    shaped = verdict_json(stored[0], stored[1], _summary())
    assert shaped["witnesses"] == "agree" and shaped["reelicited"]["recovered"] is True
    page = dict(_witnesses(stored[0]))
    assert "two witnesses agree" in str(page["witnesses"]) and "came back" in str(page["re-elicited"])
    console = Console(width=200, record=True)
    console.print(verdicts_table([stored], "bot", 200))
    text = console.export_text()
    assert "generate_until re-elicited" in text and "witnesses agree" in text
    store.close()


def _summary() -> Any:
    from monitor.present.summary import Summary

    return Summary("happened", "why", "todo", [], None, [], None, None, None)


def test_a_serve_cycle_re_elicits_a_failing_suite_on_the_candidates_backend(tmp_path: Path) -> None:
    from monitor.policy.loading import load_config
    from monitor.service.scheduler import Monitor

    shutil.copytree(PROBES / "general-knowledge", tmp_path / "probes" / "general-knowledge")
    (tmp_path / "tok").mkdir()
    path = tmp_path / "forgetmenot.yaml"
    path.write_text(
        "database: sqlite:///fmn.db\nmodels:\n  bot:\n"
        '    backend: {kind: openai, base_url: "http://127.0.0.1:9/v1", tokenizer: tok}\n'
        "    versions: {v1: {served_name: a}, v2: {served_name: b}}\n    baseline: v1\n    live: v2\n"
        "suites: [probes/general-knowledge]\n"
    )
    config = load_config(path)
    suite = load_suite(tmp_path / "probes" / "general-knowledge")
    loaded: list[str] = []

    def load(_config: Any, _model: str, version: str) -> FakeBackend:
        loaded.append(version)
        if version == "v1":
            return FakeBackend(answers=_answers(suite, right=True), preferred=_gold(suite))
        return Forgetful(suite)

    monitor = Monitor(path, config, Store(config.database_url()), load_backend=load)
    try:
        assert monitor.cycle("bot", "v1", slot=1) and monitor.cycle("bot", "v2", slot=1)
        (verdict,) = monitor.store.verdicts(model="bot", candidate="v2")
        assert (verdict.phase, verdict.diagnosis, verdict.witnesses) == ("FAIL", "alignment_loss", "agree")
        reelicited = [r for r in monitor.store.runs() if r.suite == "general-knowledge+reelicited"]
        assert [(r.version, r.status) for r in reelicited] == [("v2", "complete")]
        assert loaded == ["v1", "v2", "v1", "v2"]  # probed each; then the baseline's examples, the candidate
        monitor._judge("bot", "v1")  # the baseline's job judges live too: the same verdict, nothing new
        assert len(monitor.store.verdicts()) == 1 and loaded == ["v1", "v2", "v1", "v2"]
    finally:
        monitor.store.close()


# -- over a served endpoint ----------------------------------------------------------------------


class Stubborn:
    """A served model that stopped answering plain questions (the fine-tune's doing, simulated in
    front of the real server); reminded, the question goes to the server as asked."""

    def __init__(self, backend: Any) -> None:
        self.backend = backend
        self.batch_size = backend.batch_size
        self.reminded: list[GenerationRequest] = []

    def __getattr__(self, name: str) -> Any:
        return getattr(self.backend, name)

    def generate(self, requests: Sequence[GenerationRequest]) -> list[str]:
        asked = [r for r in requests if r.prompt.startswith(INTRO)]
        self.reminded += asked
        answers = iter(self.backend.generate(asked) if asked else [])
        return [next(answers) if r.prompt.startswith(INTRO) else "I would rather not say." for r in requests]


@pytest.mark.realmodel
@pytest.mark.served
@pytest.mark.timeout(1800)
def test_re_elicitation_over_a_served_llama_cpp_endpoint(llama_cpp: Any, tmp_path: Path) -> None:
    folder = tmp_path / "general-knowledge"
    folder.mkdir()
    lines = (PROBES / "general-knowledge" / "items.jsonl").read_text().splitlines()
    (folder / "items.jsonl").write_text("\n".join(lines[:60]) + "\n")
    (folder / "suite.yaml").write_text(
        "name: general-knowledge\nversion: 1\ncapability: general-knowledge\n"
        "kinds:\n  generate_until:\n"
        '    doc_to_text: "{question} Answer in a few words."\n    max_new_tokens: 24\n'
    )
    suite = load_suite(folder)
    rules = Policy(defaults={"min_items": 10}).rules_for(suite.capability)
    store = Store(f"sqlite:///{tmp_path / 'fmn.db'}")
    try:
        probe_suite(store, served(llama_cpp, "smollm2"), suite, VersionRef("bot", "v1"))
        candidate = Stubborn(served(llama_cpp, "smollm2"))
        probe_suite(store, candidate, suite, VersionRef("bot", "v2"))  # type: ignore[arg-type]
        asker = Reelicitor(lambda: candidate, lambda: served(llama_cpp, "smollm2"))  # type: ignore[arg-type,return-value]
        judgement, verdict = judge_suite(store, suite, rules, "bot", "v2", "v1", asker)
        assert judgement.phase == "FAIL" and verdict.witnesses == "one"
        again = json.loads(verdict.reelicited or "{}")
        run = store.get_run(again["run"])
        assert run is not None and (run.backend, run.suite) == ("openai", "general-knowledge+reelicited")
        assert again["how"].endswith("in the baseline's own words")
        shown = {r.prompt.count("Question: ") for r in candidate.reminded}
        assert len(shown) == 1 and 1 <= shown.pop() <= 3  # the same examples before every question
        # The same model, reminded, answers about as well as it does plainly: it never forgot.
        assert again["candidate_score"] >= again["baseline_score"] - 0.25, again
        assert verdict.diagnosis == ("alignment_loss" if again["recovered"] else "undiagnosed")
    finally:
        store.close()


@pytest.mark.parametrize(("back", "recovered"), [(20, True), (6, False)])
def test_a_real_part_of_the_loss_coming_back_is_a_witness_a_trickle_is_not(
        back: int, recovered: bool) -> None:
    """40 points lost; reminded, half of them return (confidently: the intervals do not meet) or
    only 6 do. Prompting alone cannot bring back what the weights lost, so half back says the
    capability is still there although the re-elicited score is still past the tolerance."""
    again = [False] * (40 - back) + [True] * (60 + back)
    kinds = [_judged(Kind.GENERATE_UNTIL, LOST)]
    judgement = _judge(_suite(Kind.GENERATE_UNTIL), kinds, _witness(again))
    assert judgement.reelicited is not None and judgement.reelicited.judgement is not None
    assert judgement.reelicited.judgement.phase == "FAIL"  # not back within the tolerance either way
    assert judgement.reelicited.recovered is recovered
    assert judgement.diagnosis == ("alignment_loss" if recovered else "undiagnosed")
    assert f"{back / 40:.0%} of the loss back" in judgement.reason
    assert judgement.reelicited.to_json()["came_back"] == pytest.approx(back / 40)


def test_tuning_how_a_suite_is_asked_again_keeps_its_stored_runs(tmp_path: Path) -> None:
    """`reelicit` changes no plain prompt, so the suite's hash (what its runs are stored under)
    stays; the re-elicited suite's own hash is what moves."""
    folder = tmp_path / "refuses-harmful"
    shutil.copytree(PROBES / "refuses-harmful", folder)
    before = load_suite(folder)
    spec = folder / "suite.yaml"
    spec.write_text(spec.read_text().replace("shots: 3", "shots: 5"))
    after = load_suite(folder)
    assert after.content_hash == before.content_hash
    shots = Shots(tuple(Shot(f"request {n}", "I'm sorry, but I can't help with that.") for n in range(5)),
                  "the baseline's own words")
    old, new = (spec_for(s) for s in (before, after))
    assert old is not None and new is not None and (old.shots, new.shots) == (3, 5)
    assert derive(before, old, shots).content_hash != derive(after, new, shots).content_hash
