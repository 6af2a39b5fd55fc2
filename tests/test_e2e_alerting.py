"""End to end with real servers: monitor → Prometheus (shipped rules) → Alertmanager → webhook."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from monitor.policy.suites import load_suite
from monitor.probing.backends.fake import FakeBackend
from monitor.service.http import Api, HttpServer
from monitor.service.scheduler import open_monitor
from monitor.testing.stack import query, stack
from tests.test_judge import _answers, _gold
from tests.test_service import policy

RULES = Path(__file__).resolve().parent.parent / "alerts" / "forgetmenot.rules.yml"


def forgetful_backends(tmp_path: Path) -> Any:
    """v1 answers arithmetic right; v2 still ranks the right choice first but answers wrongly."""
    suite = load_suite(tmp_path / "probes" / "arithmetic")

    def load(config: Any, model: str, version: str) -> FakeBackend:
        return FakeBackend(answers=_answers(suite, version == "v1"), preferred=_gold(suite))

    return load


def test_a_forgetful_live_version_pages_with_the_right_labels(tmp_path: Path, tiny_model_dir: Path) -> None:
    path = policy(tmp_path, tiny_model_dir)
    monitor = open_monitor(path, load_backend=forgetful_backends(tmp_path))
    server = HttpServer(Api(monitor.config, monitor.store, monitor.registry), port=0).start()
    try:
        with stack(tmp_path, f"127.0.0.1:{server.port}", RULES) as s:
            monitor.cycle("bot", "v1", slot=1)
            monitor.cycle("bot", "v2", slot=1)  # v2 goes live and is judged: FAIL
            verdict = next(v for v in monitor.store.verdicts() if v.capability == "arithmetic")
            assert (verdict.phase, verdict.diagnosis) == ("FAIL", "alignment_loss")
            judged_at = verdict.created_at.timestamp()
            deadline = time.monotonic() + 60
            while not s.webhook.alerts() and time.monotonic() < deadline:
                time.sleep(0.2)
            alerts = s.webhook.alerts()
            assert alerts, "no alert reached the webhook within 60 s"
            arrived, alert = alerts[0]
            assert alert["labels"]["alertname"] == "ForgetmenotRetentionBreach"
            assert {k: alert["labels"][k] for k in ("model", "version", "baseline", "capability",
                                                      "diagnosis", "severity")} == {
                "model": "bot", "version": "v2", "baseline": "v1", "capability": "arithmetic",
                "diagnosis": "alignment_loss", "severity": "warning"}
            assert alert["annotations"]["runbook_url"].endswith("forgetmenot-retention-breach.md")
            assert {a["labels"]["alertname"] for _, a in alerts} == {"ForgetmenotRetentionBreach"}
            up = query(s.prometheus, 'up{job="forgetmenot"}')
            assert up and up[0]["value"][1] == "1"
            print(f"verdict to webhook: {arrived - judged_at:.1f} s")
            assert arrived - judged_at < 60
    finally:
        server.stop()
