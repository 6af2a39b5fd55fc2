"""Actions whose process died, or whose database went away mid-move, are ended honestly: the
review found a move deployed but never recorded, and a killed retraining left `planned` for ever."""

from __future__ import annotations

import json
import threading
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


def test_a_move_records_its_intent_before_the_deployer_acts(store: Store, tmp_path: Path) -> None:
    seen: list[str] = []

    class Deployer(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            self.rfile.read(int(self.headers["Content-Length"]))
            seen.append(store.actions()[-1].status)  # what the database says while serving moves
            self.send_response(200)
            self.end_headers()

        def log_message(self, *_: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Deployer)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        hook = f"{{kind: webhook, url: 'http://127.0.0.1:{server.server_port}/'}}"
        config = setup(tmp_path, store, deployer=hook)
        verdict(store, "v2", "PASS")
        done = actions.rollback(store, config, "bot", "v2", "sre")
    finally:
        server.shutdown()
        server.server_close()
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
    is settled: a webhook cannot say where live is, so it fails saying so, and a human is told."""
    from sqlalchemy import create_engine, text

    from tests.conftest import PG_ADMIN, postgres_database

    with postgres_database() as url:
        name = url.rsplit("/", 1)[1]
        admin = create_engine(PG_ADMIN, isolation_level="AUTOCOMMIT")

        def allow(allowed: bool) -> None:
            with admin.connect() as conn:
                conn.execute(text(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS {str(allowed).lower()}'))
                if not allowed:
                    conn.execute(text("SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                                      "WHERE datname = :name"), {"name": name})

        class Deployer(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                self.rfile.read(int(self.headers["Content-Length"]))
                allow(False)  # serving moves; the database goes away before the pointer is written
                self.send_response(200)
                self.end_headers()

            def log_message(self, *_: object) -> None:
                pass

        server = ThreadingHTTPServer(("127.0.0.1", 0), Deployer)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        store = Store(url)
        try:
            hook = f"{{kind: webhook, url: 'http://127.0.0.1:{server.server_port}/'}}"
            config = setup(tmp_path, store, deployer=hook)
            verdict(store, "v2", "PASS")
            with pytest.raises(StoreError):
                actions.rollback(store, config, "bot", "v2", "sre")
        finally:
            allow(True)
            server.shutdown()
            server.server_close()
        [in_flight] = store.actions()
        assert in_flight.status == "deploying" and store.live("bot") is None
        [ended] = orphans.settle(store, config, process_id(), NOW)
        store.close()
        admin.dispose()
    assert ended.status == "failed" and "cannot say which version is live" in ended.detail
