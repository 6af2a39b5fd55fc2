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
from monitor.service.scheduler import Monitor
from monitor.store import Store, Verdict
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
    path.write_text(f"""\
database: {store.url}
models:
  bot:
    backend: {{kind: transformers, device: cpu, dtype: float32, batch_size: 16}}
    versions: {{v1: {{path: v1}}, v2: {{path: v2}}}}
    baseline: v1
    live: v2
    deployer: {{kind: registry, path: live}}
    retrain: {{max_examples: 8, replay: replay.jsonl, replay_examples: 4, epochs: 1, rank: 4, alpha: 8,
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
