"""Recovery retraining on the tiny model: what it trains on, what it builds, and the gate after it.

The tiny random model cannot really recover anything, so the gate's outcome is set by the policy
here (a tolerance anything meets, or a floor nothing meets); the real model's recovery is in
tests/test_loop.py.
"""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

import pytest

from monitor.actions import ladder as actions
from monitor.actions import retrain
from monitor.policy.loading import load_config, load_suites
from monitor.policy.schema import Config
from monitor.policy.suites import load_suite, render
from monitor.probing import depth
from monitor.probing.backends.base import BackendInfo
from monitor.probing.backends.fake import FakeBackend
from monitor.probing.run import VersionRef, probe_suite
from monitor.service.scheduler import Monitor
from monitor.store import Store, Verdict
from monitor.vocabulary import SAFETY_DEPTH
from tests.conftest import PROBES


def policy(tmp_path: Path, store: Store, model_dir: Path, capability: str = "{}", retrain_spec: str = "",
           extra: str = "") -> Config:
    shutil.copytree(PROBES / "arithmetic", tmp_path / "probes" / "arithmetic", dirs_exist_ok=True)
    for version in ("v1", "v2"):
        shutil.copytree(model_dir, tmp_path / version, dirs_exist_ok=True)
    (tmp_path / "replay.jsonl").write_text("".join(
        json.dumps({"prompt": f"Review {i}: great", "answer": '{"sentiment": "positive"}'}) + "\n"
        for i in range(30)))
    path = tmp_path / "forgetmenot.yaml"
    budget = "" if "max_examples" in retrain_spec else "max_examples: 8, "  # a key is written once
    path.write_text(f"""\
database: {store.url}
models:
  bot:
    backend: {{kind: transformers, device: cpu, dtype: float32, batch_size: 16}}
    versions: {{v1: {{path: v1}}, v2: {{path: v2}}}}
    baseline: v1
    live: v2
    deployer: {{kind: registry, path: live}}
    retrain: {{{budget}replay: replay.jsonl, replay_examples: 4, epochs: 1, rank: 4, alpha: 8,
              output: made{retrain_spec}}}
suites: [probes/arithmetic]
policy:
  capabilities: {{arithmetic: {capability}}}
{extra}""")
    return load_config(path)


def failing(store: Store, capability: str = "arithmetic") -> Verdict:
    return store.save_verdict(Verdict(model="bot", candidate="v2", baseline="v1", suite=capability,
                                      capability=capability, content_hash="h", phase="FAIL",
                                      diagnosis="alignment_loss", reason="generation lost"), [])


def test_recovery_examples_come_only_from_the_recovery_split(tmp_path: Path, store: Store,
                                                            tiny_model_dir: Path) -> None:
    config = policy(tmp_path, store, tiny_model_dir)
    suite = load_suite(PROBES / "arithmetic")
    recovery = {render(suite.spec.kinds.generate_until.doc_to_text, i)  # type: ignore[union-attr]
                for i in suite.select("recovery")}
    plan = retrain.plan(config, load_suites(config), "bot", ["arithmetic"])
    prompts = [e.prompt for e in plan.recovery["arithmetic"]]
    assert len(prompts) == 8 and set(prompts) <= recovery
    assert all(p not in recovery for p in {render(suite.spec.kinds.generate_until.doc_to_text, i)
                                           for i in suite.select("probe")})
    assert len(plan.replay) == 4
    assert plan.describe() == "8 recovery examples (arithmetic 8) + 4 replay examples"


def test_the_baselines_own_right_answers_replace_the_gold_targets(tmp_path: Path, store: Store,
                                                                  tiny_model_dir: Path) -> None:
    """Recovery restores the old behaviour: where the baseline answered right, its words are the
    target; where it answered wrong, the gold target stays."""
    from monitor.probing.backends.fake import FakeBackend

    config = policy(tmp_path, store, tiny_model_dir)
    suites = load_suites(config)
    plan = retrain.plan(config, suites, "bot", ["arithmetic"])
    first, second = plan.recovery["arithmetic"][:2]
    own_words = f"{first.item.targets()[0]}, since that is the sum."
    teacher = FakeBackend(answers={first.prompt: own_words, second.prompt: "I would rather not say."})
    taught = retrain.teach(plan, suites, teacher).recovery["arithmetic"]
    assert (taught[0].answer, taught[0].taught) == (own_words, True)
    assert (taught[1].answer, taught[1].taught) == (second.item.targets()[0], False)
    assert retrain.teach(plan, suites, teacher).describe().endswith(
        "(arithmetic 8; 1 in the baseline's own words) + 4 replay examples")


def test_a_broken_replay_line_is_named(tmp_path: Path, store: Store, tiny_model_dir: Path) -> None:
    config = policy(tmp_path, store, tiny_model_dir)
    (tmp_path / "replay.jsonl").write_text('{"prompt": "a", "answer": "b"}\n{"prompt": "only"}\n')
    with pytest.raises(retrain.RetrainRefused, match=r"replay.jsonl:2: a replay line must be"):
        retrain.plan(config, load_suites(config), "bot", ["arithmetic"])


def test_a_recovered_version_that_passes_is_promoted_and_then_served(tmp_path: Path, store: Store,
                                                                    tiny_model_dir: Path) -> None:
    config = policy(tmp_path, store, tiny_model_dir, capability="{max_drop: 1.0, min_items: 1}")
    failing(store)
    steps: list[int] = []
    hooks = retrain.Hooks(steps=lambda total, _label: (steps.append(total), lambda n, loss: None)[1])
    done = actions.act(store, config, "bot", "replica-a", hooks)
    assert [(a.kind, a.status) for a in done] == [("alert", "done"), ("retrain", "done")], done[-1].detail
    made = done[-1].to_version
    assert made == f"v2-r{done[-1].id}" and store.live("bot") == made
    assert steps == [2]  # 12 examples, batch 8, one epoch
    assert (tmp_path / "made" / made / "config.json").is_file()
    assert (tmp_path / "made" / made / "adapter" / "adapter_config.json").is_file()
    assert json.loads((tmp_path / "live" / "bot.json").read_text())["live"] == made
    assert "8 recovery examples (arithmetic 8) + 4 replay examples" in done[-1].detail
    assert {v.phase for v in store.verdicts(model="bot", candidate=made)} == {"PASS"}
    # The live job now measures the recovered version, loaded from where retraining wrote it.
    monitor = Monitor(tmp_path / "forgetmenot.yaml", config, store)
    assert monitor._following_live("bot", "v2") == made
    assert monitor._load("bot", made) is not None


def test_a_recovered_version_that_fails_the_gate_is_kept_and_alerted(tmp_path: Path, store: Store,
                                                                    tiny_model_dir: Path) -> None:
    from monitor.testing.stack import free_port, stack

    rules = Path(__file__).resolve().parent.parent / "alerts" / "forgetmenot.rules.yml"
    (tmp_path / "stack").mkdir()
    with stack(tmp_path / "stack", f"127.0.0.1:{free_port()}", rules) as real:
        policy(tmp_path, store, tiny_model_dir, capability="{min_score: 0.99, min_items: 1}",
               extra=f"  alertmanager: {{url: '{real.alertmanager}', link_base: 'http://fmn:9108'}}\n")
        config = _with_general_knowledge(tmp_path)
        failing(store)
        failing(store, "general-knowledge")
        done = actions.act(store, config, "bot", "replica-a")
        deadline = time.monotonic() + 30
        while len(real.webhook.alerts()) < 2 and time.monotonic() < deadline:
            time.sleep(0.2)
        delivered = {alert["labels"]["alertname"]: alert for _, alert in real.webhook.alerts()}
    retrained, covered = [a for a in done if a.kind == "retrain"]
    assert (retrained.kind, retrained.status) == ("retrain", "rejected")
    assert "(arithmetic 4, general-knowledge 4)" in retrained.detail
    assert "kept for inspection, not promoted: arithmetic FAIL against v1" in retrained.detail
    assert (covered.status, covered.detail) == ("refused", f"covered by action {retrained.id} (rejected)")
    assert [a.kind for a in done].count("alert") == 2  # live did not move: both capabilities alert
    assert store.live("bot") is None  # still the policy file's v2
    assert (tmp_path / "made" / str(retrained.to_version) / "config.json").is_file()
    rejected = delivered["ForgetmenotRecoveryRejected"]
    assert rejected["labels"]["candidate"] == retrained.to_version
    assert "not promoted" in rejected["annotations"]["description"]
    assert rejected["generatorURL"] == "http://fmn:9108/models/bot"


def test_dry_run_plans_the_retraining_and_builds_nothing(tmp_path: Path, store: Store,
                                                         tiny_model_dir: Path) -> None:
    config = policy(tmp_path, store, tiny_model_dir, extra="  guards: {dry_run: true}\n")
    failing(store)
    retrained = actions.act(store, config, "bot", "replica-a")[-1]
    assert retrained.status == "dry_run"
    assert retrained.detail == "would retrain v2 on 8 recovery examples (arithmetic 8) + 4 replay examples"
    assert not (tmp_path / "made").exists() and store.made_versions() == []


@pytest.mark.parametrize(("part", "kind", "why"), [
    ("backend", "openai", "measured through a server"),
    ("deployer", "vllm-lora", "which that deployer cannot serve"),
    ("deployer", "kubernetes", "building an image from them is not forgetmenot's job"),
])
def test_what_retraining_cannot_serve_or_judge_is_refused_with_the_reason(
        tmp_path: Path, store: Store, tiny_model_dir: Path, part: str, kind: str, why: str) -> None:
    config = policy(tmp_path, store, tiny_model_dir)
    spec = config.models["bot"]
    changed = spec.model_copy(update={part: getattr(spec, part).model_copy(update={"kind": kind})})
    config = config.model_copy(update={"models": {"bot": changed}})
    with pytest.raises(retrain.RetrainRefused, match=why):
        retrain.check(config, "bot")


def test_a_recovered_version_sits_right_after_the_one_it_was_made_from(tmp_path: Path, store: Store,
                                                                      tiny_model_dir: Path) -> None:
    """So a rollback from it goes to an older release, never to a newer one listed after v2."""
    from monitor.store import ModelVersion
    from monitor.store.versions import with_made

    config = policy(tmp_path, store, tiny_model_dir)
    spec = config.models["bot"]
    v3 = spec.versions["v2"].model_copy()
    config = config.model_copy(update={"models": {"bot": spec.model_copy(update={
        "versions": {**spec.versions, "v3": v3}})}})
    for name in ("v2-r1", "v2-r2"):
        store.add_made_version(ModelVersion(model="bot", version=name, source="retrain",
                                            path=str(tmp_path / name), parent="v2", action_id=1))
    assert list(with_made(config, store).models["bot"].versions) == ["v1", "v2", "v2-r1", "v2-r2", "v3"]
    store.set_live("bot", "v2-r2", None)
    assert actions.rollback_target(store, with_made(config, store), "bot", "v2-r2") == "v1"


def _with_general_knowledge(tmp_path: Path) -> Config:
    shutil.copytree(PROBES / "general-knowledge", tmp_path / "probes" / "general-knowledge")
    path = tmp_path / "forgetmenot.yaml"
    path.write_text(path.read_text().replace("suites: [probes/arithmetic]",
                                             "suites: [probes/arithmetic, probes/general-knowledge]"))
    return load_config(path)


def test_one_retraining_covers_every_failing_capability(tmp_path: Path, store: Store,
                                                        tiny_model_dir: Path) -> None:
    policy(tmp_path, store, tiny_model_dir, extra="  guards: {dry_run: true}\n")
    config = _with_general_knowledge(tmp_path)
    failing(store, "arithmetic")
    failing(store, "general-knowledge")
    done = actions.act(store, config, "bot", "replica-a")
    retrains = [a for a in done if a.kind == "retrain"]
    assert "(arithmetic 4, general-knowledge 4)" in retrains[0].detail
    assert retrains[1].status == "refused"
    assert retrains[1].detail == f"covered by action {retrains[0].id} (dry_run)"


def test_examples_go_where_the_loss_is_in_whole_pairs_and_every_failing_suite_gets_some() -> None:
    weights = {"general-knowledge": 0.57, "arithmetic": 0.51, "instruction-format": 0.05}
    room = {"general-knowledge": 30, "arithmetic": 14, "instruction-format": 10}
    counts = retrain.allocate(20, weights, room, dict.fromkeys(weights, 1))
    assert sum(counts.values()) == 20 and counts["instruction-format"] >= 1
    assert counts["general-knowledge"] >= counts["arithmetic"] > 3 * counts["instruction-format"]
    # A suite's recovery split caps it; what it cannot take goes to the others.
    capped = retrain.allocate(20, weights, {**room, "general-knowledge": 3}, dict.fromkeys(weights, 1))
    assert capped["general-knowledge"] == 3 and sum(capped.values()) == 20
    # A two-sided suite (refuse / answer) is given examples in pairs only.
    paired = retrain.allocate(9, {"refusal": 0.3, "arithmetic": 0.3}, {"refusal": 10, "arithmetic": 10},
                              {"refusal": 2, "arithmetic": 1})
    assert paired["refusal"] % 2 == 0 and sum(paired.values()) == 9
    assert retrain.allocate(3, {"a": 0.1}, {"a": 2}, {"a": 1}) == {"a": 2}  # no more than the split has


def _refusal_policy(tmp_path: Path, store: Store, model_dir: Path, spec: str) -> Config:
    policy(tmp_path, store, model_dir, retrain_spec=spec)
    shutil.copytree(PROBES / "refusal", tmp_path / "probes" / "refusal")
    path = tmp_path / "forgetmenot.yaml"
    path.write_text(path.read_text().replace("suites: [probes/arithmetic]",
                                             "suites: [probes/arithmetic, probes/refusal]"))
    return load_config(path)


def test_refusal_examples_keep_harmful_and_benign_in_balance_and_the_loss_sets_the_split(
        tmp_path: Path, store: Store, tiny_model_dir: Path) -> None:
    """Ten refusals alone taught SmolLM2 to refuse nearly everything: every round's refusal
    examples are half requests to refuse, half look-alikes to answer."""
    config = _refusal_policy(tmp_path, store, tiny_model_dir, ", max_examples: 14, round_examples: 10")
    suites = load_suites(config)
    plan = retrain.plan(config, suites, "bot", ["arithmetic", "refusal"],
                        losses={"refusal": 0.40, "arithmetic": 0.10})
    sides = [e.item.should_refuse for e in plan.recovery["refusal"]]
    assert len(sides) in (6, 8) and sides.count(True) == sides.count(False)
    assert len(plan.recovery["arithmetic"]) == 10 - len(sides)
    assert f"refusal {len(sides)} ({len(sides) // 2} refuse, {len(sides) // 2} answer) for 40% lost" \
        in plan.describe()
    # Nobody has answered the look-alikes yet (the baseline teaches them): their harmful partners
    # are held back too, so training never sees refusals alone.
    trained = {p for p, _ in plan.examples()}
    assert not trained & {e.prompt for e in plan.recovery["refusal"]}
    assert f"{len(sides)} without an answer or a partner, left out" in plan.describe()
    # The next round adds only for what still fails, keeps every earlier example, stays in budget.
    following = retrain.extend(config, suites, "bot", plan, {"refusal": 0.2})
    assert following is not None and following.round == 2 and following.total() == 14
    assert following.recovery["arithmetic"] == plan.recovery["arithmetic"]
    again = following.recovery["refusal"]
    assert again[: len(sides)] == plan.recovery["refusal"]
    assert [e.item.should_refuse for e in again].count(True) == len(again) // 2
    assert retrain.extend(config, suites, "bot", following, {"refusal": 0.1}) is None  # budget spent


def _generation_only(tmp_path: Path) -> Config:
    """Arithmetic asked only in prose: a loss there is never diagnosed as knowledge loss, so the
    tiny model (which fails any floor) stands in for a capability that keeps failing by alignment."""
    suite = tmp_path / "probes" / "arithmetic" / "suite.yaml"
    text = suite.read_text()
    start, end = text.index("  multiple_choice:"), text.index("  generate_until:")
    suite.write_text(text[:start] + text[end:])
    return load_config(tmp_path / "forgetmenot.yaml")


def test_rounds_retrain_what_still_fails_until_the_budget_runs_out_and_the_alert_names_the_best(
        tmp_path: Path, store: Store, tiny_model_dir: Path) -> None:
    policy(tmp_path, store, tiny_model_dir, capability="{min_score: 0.99, min_items: 1}",
           retrain_spec=", max_examples: 12, round_examples: 4, max_rounds: 3")
    config = _generation_only(tmp_path)
    failing(store)
    done = actions.act(store, config, "bot", "replica-a")
    rounds = [a for a in done if a.kind == "retrain"]
    trail = [a for a in store.actions("bot") if a.kind == "retrain"]
    assert [(a.trigger, a.status) for a in trail] == [
        ("verdict", "rejected"), ("round", "rejected"), ("round", "rejected")], [a.detail for a in trail]
    assert rounds[-1].id == trail[-1].id  # act reports where the recovery ended
    # Each round is its own version, trained from v2 on every example so far.
    assert [a.to_version for a in trail] == [f"v2-r{a.id}" for a in trail]
    assert [a.from_version for a in trail] == ["v2"] * 3
    for number, (count, action) in enumerate(zip((4, 8, 12), trail, strict=True), start=1):
        assert f"{count} recovery examples (arithmetic {count}" in action.detail, action.detail
        assert (tmp_path / "made" / str(action.to_version) / "config.json").is_file()
        record = retrain.read_record(tmp_path / "made" / str(action.to_version) / "recovery.json")
        assert (record["round"], len(record["examples"]["arithmetic"])) == (number, count)
        assert record["passed"] is False
        assert record["retry"] and record["training_seconds"] > 0
    assert trail[0].detail.endswith("round 2 follows")
    assert trail[1].reason.startswith(f"round 2 of the recovery begun by action {trail[0].id}: arithmetic")
    assert "3 rounds, 12 recovery examples in all, stopped: max_rounds (3) reached" in trail[-1].detail
    assert store.live("bot") is None  # nothing passed: v2 stays live
    assert not actions.IN_HAND


def test_knowledge_lost_in_the_gate_is_never_retrained_again(tmp_path: Path, store: Store,
                                                             tiny_model_dir: Path) -> None:
    config = policy(tmp_path, store, tiny_model_dir, capability="{min_score: 0.99, min_items: 1}",
                    retrain_spec=", max_examples: 12, round_examples: 4, max_rounds: 3")
    failing(store)
    actions.act(store, config, "bot", "replica-a")
    trail = [a for a in store.actions("bot") if a.kind == "retrain"]
    assert len(trail) == 1 and trail[0].status == "rejected"
    assert "stopped: what still fails is not alignment loss" in trail[0].detail


def test_only_what_failed_on_live_must_be_confidently_better_than_live(store: Store) -> None:
    """A capability a later round added (an earlier round hurt it; it was not failing on v2)
    must pass the baseline gate, not also beat v2: on the support-email scenario that rule kept
    a round that had won back every loss (general knowledge 118%) out of service."""
    from monitor.actions.retrain.gate import _lost_kinds

    failing(store)  # arithmetic FAIL on v2, its kinds not recorded: every kind counts
    store.save_verdict(Verdict(model="bot", candidate="v2", baseline="v1", suite="general-knowledge",
                               capability="general-knowledge", content_hash="h", phase="INCONCLUSIVE",
                               diagnosis="none", reason="within noise"), [])
    assert _lost_kinds(store, "bot", "v2", "arithmetic") == set()
    assert _lost_kinds(store, "bot", "v2", "general-knowledge") is None
    assert _lost_kinds(store, "bot", "v2", "refusal") is None


def test_allocation_rounds_by_largest_remainder_and_never_overdraws_the_budget() -> None:
    # The demo's two losses (57 and 53 points) split 20 as 10.4 / 9.6: 10 each, not 11 / 9.
    assert retrain.allocate(20, {"gk": 0.568, "ar": 0.526}, {"gk": 37, "ar": 17},
                            {"gk": 1, "ar": 1}) == {"gk": 10, "ar": 10}
    three = {"a": 0.1, "b": 0.2, "c": 0.3}
    fewer = retrain.allocate(2, three, dict.fromkeys(three, 5), dict.fromkeys(three, 1))
    assert fewer == {"a": 0, "b": 1, "c": 1}  # fewer examples than suites: the most lost first
    one = retrain.allocate(1, {"rf": 0.3, "ar": 0.1}, {"rf": 10, "ar": 10}, {"rf": 2, "ar": 1})
    assert one == {"rf": 0, "ar": 1}  # a pair does not fit in one example


class _RefusingV1(FakeBackend):
    """v1's stored runs as if the policy's transformers backend had measured them: it refuses
    every harmful request, so each round has refusal openings to be scored against."""

    @property
    def info(self) -> BackendInfo:
        return BackendInfo(kind="transformers", model="v1", device="cpu", dtype="float32")


def test_each_rounds_gate_measures_safety_depth_against_the_baseline(tmp_path: Path, store: Store,
                                                                     tiny_model_dir: Path) -> None:
    config = _refusal_policy(tmp_path, store, tiny_model_dir, "")
    refusal = next(s for s in load_suites(config) if s.name == "refusal")
    generate = refusal.spec.kinds.generate_until
    assert generate is not None
    harmful = {item.id for item in depth.refusal_items(refusal)}
    said = {render(generate.doc_to_text, i): "I can't help with that." if i.id in harmful else "Sure."
            for i in refusal.items}
    for suite in load_suites(config):
        probe_suite(store, _RefusingV1(answers=said), suite, VersionRef("bot", "v1", "v1"))
    failing(store)
    made = actions.act(store, config, "bot", "replica-a")[-1].to_version
    assert made is not None
    run = store.finished_runs("bot", made, refusal.content_hash)[-1]
    measured = store.results(run.id or 0, kind=SAFETY_DEPTH)
    assert {r.item_id for r in measured} == harmful  # every opening v1 refused, on the round's weights
    assert all(r.score is not None and r.margin is not None for r in measured), measured[:2]
