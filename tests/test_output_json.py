"""`--output json` on every read command: the same shapes the HTTP API answers, typed (objects,
integers, nulls), so a script reads the CLI and the API alike.

A monitor measures a baseline, a live version that lost a capability (a FAIL, and an alert) and a
good candidate with scripted backends; the API is served from the same database, and each command's
JSON is compared with the API's answer for the same rows."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from monitor.cli.app import app
from monitor.service.http import HttpServer
from monitor.service.scheduler import Monitor, open_monitor
from monitor.store.candidates import register
from tests.conftest import PROBES
from tests.test_gate import backends, request, serving
from tests.test_service import policy

runner = CliRunner()


@dataclass
class Served:
    path: Path
    monitor: Monitor
    server: HttpServer

    def api(self, path: str) -> Any:
        status, body, _ = request(self.server.port, path)
        assert status in (200, 412), body
        return body

    def cli(self, *args: str, code: int = 0) -> Any:
        result = runner.invoke(app, [*args, "-c", str(self.path)], env={"COLUMNS": "60"})
        assert result.exit_code == code, result.output
        return json.loads(result.stdout)


@pytest.fixture()
def served(tmp_path: Path, tiny_model_dir: Path) -> Iterator[Served]:
    path = policy(tmp_path, tiny_model_dir)
    written = path.read_text().replace("v2:", "bad:").replace("live: v2", "live: bad")
    path.write_text(written + "  on_alignment_loss: [alert]\n")
    monitor = open_monitor(path, load_backend=backends(tmp_path))
    register(monitor.store, monitor.config, "bot", {"version": "cand", "path": str(tiny_model_dir)}, "t")
    for version in ("v1", "bad", "cand"):
        assert monitor.cycle("bot", version, slot=1)
    server = serving(monitor, tmp_path)
    yield Served(path, monitor, server)
    server.stop()
    monitor.store.close()


def test_verdicts_output_json_is_the_apis_list_and_json_stays_its_alias(served: Served) -> None:
    listed = served.cli("verdicts", "--output", "json")
    assert listed == served.api("/api/v1/verdicts?limit=20")
    assert served.cli("verdicts", "--json") == listed


def test_verdict_json_is_typed(served: Served) -> None:
    failed, *_ = served.cli("verdicts", "--output", "json", "--phase", "FAIL", "--capability", "arithmetic")
    passed, *_ = served.cli("verdicts", "--output", "json", "--phase", "PASS")
    assert isinstance(failed["rules"], dict) and failed["rules"]["max_drop"] == 0.05
    assert all(isinstance(run, int) for run in [*failed["candidate_runs"], *failed["baseline_runs"]])
    assert len(failed["candidate_runs"]) == 1 and failed["diagnosis"] == "alignment_loss"
    assert passed["diagnosis"] is None


def test_judge_output_json_gives_each_verdict_as_the_api_does(served: Served) -> None:
    judged = served.cli("judge", "--candidate", "bad", "--no-report", "--output", "json", code=1)
    assert (judged["model"], judged["candidate"], judged["baseline"], judged["phase"]) == (
        "bot", "bad", "v1", "FAIL")
    for verdict in judged["verdicts"]:
        assert verdict == served.api(f"/api/v1/verdicts/{verdict['id']}")


def test_explain_output_json_gives_the_verdict_and_its_regressed_items(served: Served) -> None:
    failed, *_ = served.cli("verdicts", "--output", "json", "--phase", "FAIL", "--capability", "arithmetic")
    explained = served.cli("explain", str(failed["id"]), "--output", "json")
    assert explained["verdict"] == served.api(f"/api/v1/verdicts/{failed['id']}")
    lost = explained["regressions"]["generate_until"]
    assert lost and {"item", "baseline", "candidate"} <= set(lost[0])
    assert (lost[0]["baseline"]["correct"], lost[0]["candidate"]["correct"]) == (True, False)
    assert explained["regressions"]["multiple_choice"] == []


def test_history_output_json_gives_each_run_as_the_api_does(served: Served) -> None:
    runs = served.cli("history", "--output", "json")
    assert len(runs) == 7  # 2 suites × 3 versions, and bad's failing arithmetic re-elicited
    assert [r["suite"] for r in runs].count("arithmetic+reelicited") == 1
    for run in runs:
        assert run == served.api(f"/api/v1/runs/{run['id']}")


def test_actions_output_json_is_the_apis_list_oldest_first(served: Served) -> None:
    listed = served.cli("actions", "--output", "json")
    assert [a["kind"] for a in listed] == ["alert"]
    assert listed == list(reversed(served.api("/api/v1/actions")))


def test_candidate_list_output_json_is_the_apis_list(served: Served) -> None:
    listed = served.cli("candidate", "list", "--output", "json")
    assert listed == served.api("/api/v1/models/bot/candidates")
    assert listed[0]["spec"]["path"]


def test_gate_output_json_is_the_apis_answer(served: Served) -> None:
    answered = served.cli("gate", "bot", "cand", "--wait", "0", "--output", "json")
    asked = served.api("/api/v1/gate?model=bot&version=cand&mode=metric")
    assert (answered["decision"], answered["passed"]) == ("pass", True)
    assert {**answered, "waited_s": 0} == {**asked, "waited_s": 0}


def test_suites_output_json_gives_each_suite(served: Served) -> None:
    result = runner.invoke(app, ["suites", str(PROBES / "arithmetic"), "--output", "json"])
    assert result.exit_code == 0, result.output
    (suite,) = json.loads(result.stdout)
    assert (suite["name"], suite["capability"]) == ("arithmetic", "arithmetic")
    assert suite["kinds"] == ["multiple_choice", "generate_until"]
    assert isinstance(suite["probe"], int) and isinstance(suite["recovery"], int)
