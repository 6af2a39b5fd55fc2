"""Actions whose process died, or whose database went away mid-move, are ended honestly: the
review found a move deployed but never recorded, and a killed retraining left `planned` for ever."""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from monitor.actions import ladder as actions
from monitor.actions import orphans
from monitor.errors import StoreError
from monitor.store import Action, Store
from monitor.store.coordination import process_id
from monitor.testing.stack import WebhookReceiver
from tests.test_actions import setup, verdict

NOW = timedelta(0)  # settle at once: these tests do not wait out a heartbeat interval


def orphan(store: Store, status: str, holder: str = "killed-host:4242", kind: str = "rollback") -> Action:
    return store.add_action(Action(model="bot", kind=kind, trigger="manual", status=status,
                                   from_version="v3", to_version="v2", holder=holder, actor="sre"))


@contextmanager
def webhook_deployer(on_move: Callable[[], None]) -> Iterator[str]:
    """A real HTTP receiver that runs `on_move` as serving moves, then answers 200; yields the
    policy's deployer setting for it."""

    class Deployer(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            self.rfile.read(int(self.headers["Content-Length"]))
            on_move()
            self.send_response(200)
            self.end_headers()

        def log_message(self, *_: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Deployer)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"{{kind: webhook, url: 'http://127.0.0.1:{server.server_port}/'}}"
    finally:
        server.shutdown()
        server.server_close()


def test_a_move_records_its_intent_before_the_deployer_acts(store: Store, tmp_path: Path) -> None:
    seen: list[str] = []
    # what the database says while serving moves
    with webhook_deployer(lambda: seen.append(store.actions()[-1].status)) as hook:
        config = setup(tmp_path, store, deployer=hook)
        verdict(store, "v2", "PASS")
        done = actions.rollback(store, config, "bot", "v2", "sre")
    assert seen == ["deploying"] and done.status == "done" and done.holder == process_id()


def test_a_killed_move_is_settled_by_asking_the_deployer(store: Store, tmp_path: Path) -> None:
    """kill -9 after the registry deployer wrote its file, and after it wrote nothing."""
    config = setup(tmp_path, store)
    moved = orphan(store, "deploying")
    (tmp_path / "live").mkdir()
    (tmp_path / "live" / "bot.json").write_text(json.dumps({"model": "bot", "live": "v2"}))
    [ended] = orphans.settle(store, config, process_id(), NOW)
    assert (ended.id, ended.status) == (moved.id, "done") and "took effect" in ended.detail
    assert store.live("bot") == "v2"
    (tmp_path / "live" / "bot.json").write_text(json.dumps({"model": "bot", "live": "v3"}))
    stuck = orphan(store, "deploying")
    [ended] = orphans.settle(store, config, process_id(), NOW)
    assert (ended.id, ended.status) == (stuck.id, "failed") and "did not take effect" in ended.detail
    assert store.live("bot") == "v2", "the pointer is not moved by a move that did not happen"


def test_a_killed_retraining_is_failed_and_alerted_never_left_planned(store: Store, tmp_path: Path) -> None:
    hook = WebhookReceiver().start()
    try:
        config = setup(tmp_path, store)
        config = config.model_copy(update={"policy": config.policy.model_copy(update={
            "alertmanager": config.policy.alertmanager or _alertmanager(hook.port)})})
        killed = orphan(store, "planned", kind="retrain")
        alive = orphan(store, "planned", holder="busy-host:1")
        store.beat("busy-host:1")  # a replica still beating: its hour-long retraining is left alone
        [ended] = orphans.settle(store, config, process_id(), timedelta(seconds=60))
    finally:
        hook.stop()
    assert (ended.id, ended.status) == (killed.id, "failed") and "stopped before finishing" in ended.detail
    assert store.get_action(alive.id or 0).status == "planned"  # type: ignore[union-attr]
    [pushed] = json.loads(hook.raw[0][1])  # one alert, pushed to Alertmanager's v2 API
    assert pushed["labels"]["alertname"] == "ForgetmenotNoRollbackTarget"
    assert "was cut short" in pushed["annotations"]["summary"]


def _alertmanager(port: int) -> Any:
    from monitor.policy.schema import AlertmanagerSpec

    return AlertmanagerSpec(url=f"http://127.0.0.1:{port}")


def test_an_action_in_hand_is_never_taken_for_an_orphan(store: Store, tmp_path: Path) -> None:
    config = setup(tmp_path, store)
    mine = orphan(store, "planned", holder=process_id())
    actions.IN_HAND.add(mine.id or 0)
    try:
        assert orphans.settle(store, config, process_id(), NOW) == []
    finally:
        actions.IN_HAND.discard(mine.id or 0)
    assert [a.id for a in orphans.settle(store, config, process_id(), NOW)] == [mine.id]


@pytest.mark.postgres
def test_the_database_gone_while_a_move_is_in_flight(tmp_path: Path) -> None:
    """The real PostgreSQL stops taking connections while the webhook deployer is moving serving:
    the move happened, the pointer could not be written. When the database is back, the action
    is settled: a webhook cannot say where live is, so it fails saying so (and alerts, where an
    Alertmanager is configured)."""
    from tests.conftest import database_switch, postgres_database

    with postgres_database() as url, database_switch(url) as allow:
        store = Store(url)
        # serving moves; the database goes away before the pointer is written
        with webhook_deployer(lambda: allow(False)) as hook:
            config = setup(tmp_path, store, deployer=hook)
            verdict(store, "v2", "PASS")
            with pytest.raises(StoreError):
                actions.rollback(store, config, "bot", "v2", "sre")
        allow(True)
        [in_flight] = store.actions()
        assert in_flight.status == "deploying" and store.live("bot") is None
        [ended] = orphans.settle(store, config, process_id(), NOW)
        store.close()
    assert ended.status == "failed" and "cannot say which version is live" in ended.detail
