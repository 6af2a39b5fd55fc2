"""The policy ladder on a real store: rollback targets, guards, exactly-once, audit, deployers."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

from monitor.actions import ladder as actions
from monitor.cli.app import app
from monitor.policy.loading import load_config
from monitor.policy.schema import Config
from monitor.store import Store, Verdict
from monitor.testing.stack import WebhookReceiver, free_port
from tests.conftest import PROBES


def policy(tmp_path: Path, database: str, guards: str = "{}", deployer: str = "{kind: registry, path: live}",
           versions: str = "{v1: {path: w1}, v2: {path: w2}, v3: {path: w3}}") -> Path:
    shutil.copytree(PROBES / "arithmetic", tmp_path / "probes" / "arithmetic", dirs_exist_ok=True)
    for name in ("w1", "w2", "w3"):
        (tmp_path / name).mkdir(exist_ok=True)
    path = tmp_path / "forgetmenot.yaml"
    path.write_text(f"""\
database: {database}
models:
  bot:
    versions: {versions}
    baseline: v1
    live: v3
    deployer: {deployer}
suites: [probes/arithmetic]
policy:
  guards: {guards}
""")
    return path


def verdict(store: Store, candidate: str, phase: str, diagnosis: str = "knowledge_loss",
            capability: str = "arithmetic") -> Verdict:
    return store.save_verdict(Verdict(model="bot", candidate=candidate, baseline="v1", suite=capability,
                                      capability=capability, content_hash="h", phase=phase,
                                      diagnosis=diagnosis, reason=f"{phase} on {capability}"), [])


def setup(tmp_path: Path, store: Store, **kwargs: str) -> Config:
    return load_config(policy(tmp_path, store.url, **kwargs))


def test_knowledge_loss_alerts_and_rolls_back_to_the_newest_passing_version(
        store: Store, tmp_path: Path) -> None:
    config = setup(tmp_path, store)
    verdict(store, "v2", "PASS")
    verdict(store, "v3", "FAIL")
    done = actions.act(store, config, "bot", "replica-a")
    assert [(a.kind, a.status, a.from_version, a.to_version) for a in done] == [
        ("alert", "done", "v3", None), ("rollback", "done", "v3", "v2")]
    assert store.live("bot") == "v2" == store.live_version(config, "bot")
    pointer = json.loads((tmp_path / "live" / "bot.json").read_text())
    assert pointer["live"] == "v2" and pointer["action"] == done[1].id
    assert done[0].verdict_id == done[1].verdict_id and done[1].actor == "replica-a"


def test_a_verdict_is_acted_on_once_across_replicas(store: Store, tmp_path: Path) -> None:
    config = setup(tmp_path, store)
    verdict(store, "v3", "FAIL")
    assert len(actions.act(store, config, "bot", "replica-a")) == 2
    assert actions.act(store, config, "bot", "replica-b") == []
    assert len(store.actions("bot")) == 2


def test_a_failure_is_acted_on_once_not_once_per_cycle(store: Store, tmp_path: Path) -> None:
    config = setup(tmp_path, store, deployer="{kind: webhook, url: 'http://127.0.0.1:9/'}")
    verdict(store, "v3", "FAIL", diagnosis="alignment_loss")
    assert len(actions.act(store, config, "bot", "r")) == 2
    verdict(store, "v3", "FAIL", diagnosis="alignment_loss")  # the next cycle: still failing
    verdict(store, "v3", "ERROR")
    assert actions.act(store, config, "bot", "r") == []
    verdict(store, "v3", "PASS")
    verdict(store, "v3", "FAIL", diagnosis="alignment_loss")  # a new failure
    assert [a.kind for a in actions.act(store, config, "bot", "r")] == ["alert", "retrain"]


@pytest.mark.parametrize(("v2_phase", "target"), [(None, "v1"), ("FAIL", "v1"), ("ERROR", "v1"),
                                                   ("PASS", "v2")])
def test_rollback_never_goes_to_an_unjudged_or_failing_version(store: Store, tmp_path: Path,
                                                              v2_phase: str | None, target: str) -> None:
    config = setup(tmp_path, store)
    if v2_phase:
        verdict(store, "v2", v2_phase)
    verdict(store, "v3", "FAIL")
    rolled = [a for a in actions.act(store, config, "bot", "r") if a.kind == "rollback"]
    assert rolled[0].to_version == target and store.live("bot") == target


def test_with_no_qualifying_version_it_alerts_and_stops(store: Store, tmp_path: Path) -> None:
    config = setup(tmp_path, store, versions="{v3: {path: w3}, v1: {path: w1}}")
    verdict(store, "v3", "FAIL")
    done = actions.act(store, config, "bot", "r")
    assert [(a.kind, a.status) for a in done] == [("alert", "done"), ("rollback", "refused")]
    assert "no earlier version qualifies" in done[1].detail and store.live("bot") is None


def test_dry_run_records_what_would_happen_and_changes_nothing(store: Store, tmp_path: Path) -> None:
    config = setup(tmp_path, store, guards="{dry_run: true}")
    verdict(store, "v3", "FAIL")
    done = actions.act(store, config, "bot", "r")
    assert [(a.kind, a.status) for a in done] == [("alert", "dry_run"), ("rollback", "dry_run")]
    assert "would make v1 live instead of v3" in done[1].detail
    assert store.live("bot") is None and not (tmp_path / "live" / "bot.json").exists()


def test_manual_approval_holds_the_rollback_until_approved(store: Store, tmp_path: Path) -> None:
    config = setup(tmp_path, store, guards="{approval: manual}")
    verdict(store, "v3", "FAIL")
    held = actions.act(store, config, "bot", "r")[1]
    assert held.status == "pending_approval" and store.live("bot") is None
    assert held.id is not None
    approved = actions.approve(store, config, held.id, "alice")
    assert approved.status == "done" and "approved by alice" in approved.actor and store.live("bot") == "v1"


def test_approval_after_live_moved_away_does_nothing(store: Store, tmp_path: Path) -> None:
    """A rollback held for approval is moot once the failing version is no longer live."""
    config = setup(tmp_path, store, guards="{approval: manual}")
    verdict(store, "v2", "PASS")
    verdict(store, "v3", "FAIL")
    held = actions.act(store, config, "bot", "r")[1]
    assert (held.from_version, held.to_version) == ("v3", "v2")
    store.set_live("bot", "v2", None)  # moved by hand meanwhile
    assert held.id is not None
    approved = actions.approve(store, config, held.id, "alice")
    assert approved.status == "refused" and "live moved from v3 to v2" in approved.detail
    assert store.live("bot") == "v2" and "approved by alice" in approved.actor


def test_cooldown_and_daily_limit_refuse_further_moves(store: Store, tmp_path: Path) -> None:
    config = setup(tmp_path, store, guards="{cooldown: 1h, max_actions_per_day: 5}")
    verdict(store, "v3", "FAIL")
    actions.act(store, config, "bot", "r")
    second = actions.rollback(store, config, "bot", "v1", "bob")
    assert second.status == "refused" and second.detail.startswith("cooldown")
    config = setup(tmp_path, store, guards="{cooldown: 0s, max_actions_per_day: 1}")
    third = actions.rollback(store, config, "bot", "v1", "bob")
    assert third.status == "refused" and third.detail.startswith("limit: 1 actions per day")


def test_alignment_loss_takes_its_own_ladder(store: Store, tmp_path: Path) -> None:
    config = setup(tmp_path, store)
    verdict(store, "v3", "FAIL", diagnosis="alignment_loss")
    done = actions.act(store, config, "bot", "r")
    assert [(a.kind, a.diagnosis) for a in done] == [("alert", "alignment_loss"),
                                                      ("retrain", "alignment_loss")]
    assert store.live("bot") is None


def test_errors_and_single_marginal_verdicts_never_act(store: Store, tmp_path: Path) -> None:
    config = setup(tmp_path, store)
    for phase in ("ERROR", "ERROR", "ERROR", "MARGINAL", "INCONCLUSIVE"):
        verdict(store, "v3", phase)
    assert actions.act(store, config, "bot", "r") == [] and store.actions() == []


def test_webhook_deployer_posts_the_move_and_a_failed_post_changes_nothing(
        store: Store, tmp_path: Path) -> None:
    receiver = WebhookReceiver().start()
    try:
        config = setup(tmp_path, store, deployer=f"{{kind: webhook, url: 'http://127.0.0.1:{receiver.port}/'}}")
        verdict(store, "v3", "FAIL")
        moved = actions.act(store, config, "bot", "r")[1]
        assert moved.status == "done" and store.live("bot") == "v1"
        assert receiver.received[0][1] == {"model": "bot", "version": "v1", "action": moved.id,
                                           "path": str(tmp_path / "w1")}
    finally:
        receiver.stop()
    dead = f"{{kind: webhook, url: 'http://127.0.0.1:{free_port()}/'}}"
    config = setup(tmp_path, store, deployer=dead, guards="{cooldown: 0s, max_actions_per_day: 9}")
    failed = actions.rollback(store, config, "bot", "v1", "bob")
    assert failed.status == "failed" and "webhook" in failed.detail


def test_cli_rollback_actions_and_approve(tmp_path: Path) -> None:
    path = policy(tmp_path, "sqlite:///fmn.db", guards="{approval: manual}")
    runner, wide = CliRunner(), {"COLUMNS": "250"}
    result = runner.invoke(app, ["rollback", "bot", "--to", "v2", "-c", str(path), "--by", "carol"], env=wide)
    assert result.exit_code == 1 and "refused" in result.output  # v2 was never judged
    result = runner.invoke(app, ["rollback", "bot", "--to", "v1", "-c", str(path), "--by", "carol"], env=wide)
    assert result.exit_code == 0 and "done" in result.output
    result = runner.invoke(app, ["actions", "-c", str(path)], env=wide)
    assert result.exit_code == 0 and result.output.count("carol") == 2
    result = runner.invoke(app, ["approve", "2", "-c", str(path)], env=wide)
    assert result.exit_code == 2 and "not pending approval" in result.output  # the asker's input


def test_alert_is_pushed_to_a_real_alertmanager_with_the_verdicts_facts(store: Store, tmp_path: Path) -> None:
    import time

    from monitor.testing.stack import stack

    rules = Path(__file__).resolve().parent.parent / "alerts" / "forgetmenot.rules.yml"
    work = tmp_path / "stack"
    work.mkdir()
    with stack(work, f"127.0.0.1:{free_port()}", rules) as real:
        path = policy(tmp_path, store.url)
        path.write_text(path.read_text() + f"  alertmanager: {{url: '{real.alertmanager}', "
                                           "link_base: 'http://monitor:9108'}\n")
        config = load_config(path)
        failing = verdict(store, "v3", "FAIL")
        alert = actions.act(store, config, "bot", "r")[0]
        assert alert.kind == "alert" and alert.status == "done" and "/api/v2/alerts" in alert.detail
        deadline = time.monotonic() + 30
        while not real.webhook.alerts() and time.monotonic() < deadline:
            time.sleep(0.2)
        [(_, delivered)] = real.webhook.alerts()
    assert delivered["labels"] | {"severity": "warning"} == {
        "alertname": "ForgetmenotActionTaken", "model": "bot", "version": "v3", "baseline": "v1",
        "capability": "arithmetic", "diagnosis": "knowledge_loss", "severity": "warning"}
    annotations = delivered["annotations"]
    assert annotations.get("command") == "forgetmenot rollback bot --to v1", "the verdict page's command"
    assert annotations["what_to_do"].startswith("Roll back: the knowledge left the weights")
    assert "next: rollback" in annotations["ladder"], "what the ladder does after this alert"
    assert annotations["runbook_url"] == "alerts/runbooks/forgetmenot-retention-breach.md"
    assert annotations["summary"] == "bot v3 FAIL on arithmetic against v1: knowledge loss: both kinds " \
                                     "dropped, the knowledge left the weights."
    assert annotations["verdict"] == f"http://monitor:9108/verdicts/{failing.id}"
    assert annotations["description"] == "FAIL on arithmetic"


def test_alertmanager_down_is_a_failed_action_and_the_ladder_goes_on(store: Store, tmp_path: Path) -> None:
    path = policy(tmp_path, store.url)
    path.write_text(path.read_text() + f"  alertmanager: {{url: 'http://127.0.0.1:{free_port()}'}}\n")
    verdict(store, "v3", "FAIL")
    done = actions.act(store, load_config(path), "bot", "r")
    assert [(a.kind, a.status) for a in done] == [("alert", "failed"), ("rollback", "done")]


def test_a_rollback_with_nowhere_to_go_pages_a_human(store: Store, tmp_path: Path) -> None:
    import time

    from monitor.testing.stack import stack

    rules = Path(__file__).resolve().parent.parent / "alerts" / "forgetmenot.rules.yml"
    (tmp_path / "stack").mkdir()
    with stack(tmp_path / "stack", f"127.0.0.1:{free_port()}", rules) as real:
        path = policy(tmp_path, store.url, versions="{v3: {path: w3}, v1: {path: w1}}")
        path.write_text(path.read_text() + f"  alertmanager: {{url: '{real.alertmanager}'}}\n")
        verdict(store, "v3", "FAIL")
        done = actions.act(store, load_config(path), "bot", "r")
        deadline = time.monotonic() + 30
        while len(real.webhook.alerts()) < 2 and time.monotonic() < deadline:
            time.sleep(0.2)
        delivered = {alert["labels"]["alertname"]: alert for _, alert in real.webhook.alerts()}
    assert [(a.kind, a.status) for a in done] == [("alert", "done"), ("rollback", "refused")]
    stranded = delivered["ForgetmenotNoRollbackTarget"]
    assert stranded["labels"]["version"] == "v3"
    assert "no earlier version qualifies" in stranded["annotations"]["description"]


def test_a_webhook_sending_its_headers_slowly_fails_the_move_at_the_deadline() -> None:
    """The webhook runs under the move lock; a receiver trickling its answer must not hold it."""
    import time

    from monitor.actions.deployers import WebhookDeployer
    from monitor.errors import DeployError
    from monitor.testing.faults import FaultProxy

    slow = FaultProxy(f"http://127.0.0.1:{free_port()}")
    slow.mode, slow.pause = "slow_headers", 0.02
    try:
        began = time.monotonic()
        with pytest.raises(DeployError) as caught:
            WebhookDeployer(f"http://127.0.0.1:{slow.port}/", timeout_s=1).promote("bot", "v1", 1)
        took = time.monotonic() - began
    finally:
        slow.stop()
    assert took < 2.5, f"took {took:.1f} s against a 1 s timeout"
    assert "no whole answer within 1 s" in str(caught.value) and "may have acted on it" in str(caught.value)
