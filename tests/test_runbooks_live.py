"""The runbooks walked step by step against a live `serve`, as on-call would run them.

A monitor measures a live version that lost a capability (alignment loss: a FAIL) and a candidate
whose every request fails (an ERROR); then `forgetmenot serve` runs on that database. Every command
and every request each runbook names is run as written, placeholders filled in: each exists and
answers, the look steps change nothing stored, and each leads to the data it names."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import text
from typer.testing import CliRunner

from monitor.cli.app import app
from monitor.service.scheduler import Monitor, open_monitor
from monitor.store.candidates import register, retire
from monitor.testing.stack import free_port
from monitor.vocabulary import Phase
from tests.test_gate import backends
from tests.test_service import policy

RUNBOOKS = Path(__file__).resolve().parent.parent / "alerts" / "runbooks"
COMMAND = re.compile(r"`(forgetmenot [^`]+)`|^ {4}(forgetmenot .+)$", re.MULTILINE)
REQUEST = re.compile(r"`GET (/[^` ]+)`|`(/(?:readyz|healthz|verdicts/[^`]+))`")
ACTS = ("rollback", "approve")  # the steps that change what serves; every other one only looks
# The version each runbook's alert names: the erroring candidate for ForgetmenotProbesErroring.
VERSION = {"forgetmenot-probes-erroring.md": "broken"}
TABLES = ("verdict", "action", "run", "item_result", "claim", "live_version")


@pytest.fixture()
def walked(tmp_path: Path, tiny_model_dir: Path) -> Iterator[tuple[Monitor, dict[str, str], int]]:
    path = policy(tmp_path, tiny_model_dir)
    written = path.read_text().replace("v2:", "bad:").replace("live: v2", "live: bad")
    path.write_text(written + "  on_alignment_loss: [alert]\n")
    monitor = open_monitor(path, load_backend=backends(tmp_path))
    register(monitor.store, monitor.config, "bot", {"version": "broken", "path": str(tiny_model_dir)}, "t")
    for version in ("v1", "bad", "broken"):
        assert monitor.cycle("bot", version, slot=1)
    retire(monitor.store, monitor.config, "bot", "broken", "t")  # measured; serve need not probe it again
    port = free_port()
    env = {**os.environ, "FORGETMENOT_HOME": str(tmp_path)}
    served = subprocess.Popen([sys.executable, "-m", "monitor.cli.app", "serve", "-c", str(path), "--port",
                               str(port)], cwd=tmp_path, env=env, stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL)
    try:
        _wait_healthy(port)
        yield monitor, _placeholders(monitor, tmp_path), port
    finally:
        served.terminate()
        served.wait(30)


def _wait_healthy(port: int) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if _get(port, "/healthz")[0] == 200:
            return
        time.sleep(0.2)
    raise AssertionError("serve did not start")


def _placeholders(monitor: Monitor, folder: Path) -> dict[str, str]:
    failed = monitor.store.verdicts(model="bot", candidate="bad", capability="arithmetic", newest=1)[-1]
    broken = monitor.store.verdicts(model="bot", candidate="broken", newest=1)[-1]
    assert (failed.phase, broken.phase) == (Phase.FAIL, Phase.ERROR)
    action = monitor.store.actions("bot")[-1]
    return {"<model>": "bot", "<version>": "bad", "<live>": "bad", "<baseline>": "v1",
            "<capability>": "arithmetic", "<verdict id>": str(failed.id), "<action>": str(action.id),
            "<id>": broken.candidate_runs.split(",")[0], "<spool>": str(folder / "spool"),
            "broken verdict": str(broken.id)}


def _filled(said: str, names: dict[str, str]) -> str:
    for placeholder, value in names.items():
        said = said.replace(placeholder, value)
    return said


def _steps(pattern: re.Pattern[str], written: str) -> list[str]:
    return [" ".join(next(g for g in match.groups() if g).split()) for match in pattern.finditer(written)]


def _counts(monitor: Monitor) -> dict[str, int]:
    with monitor.store.engine.connect() as conn:
        return {table: int(conn.execute(text(f"SELECT count(*) FROM {table}")).scalar() or 0)
                for table in TABLES}


def _get(port: int, path: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=120) as reply:
            return reply.status, reply.read().decode(errors="replace")
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode(errors="replace")
    except OSError:
        return 0, ""


def _run(command: str, config: str) -> tuple[int, str]:
    args = command.split()[1:]
    if "-c" in args:
        args[args.index("-c") + 1] = config
    else:
        args += ["-c", config]
    result = CliRunner().invoke(app, args, env={"COLUMNS": "200"})
    return result.exit_code, result.output


def test_every_runbook_step_exists_looks_without_writing_and_finds_its_data(
        walked: tuple[Monitor, dict[str, str], int]) -> None:
    monitor, names, port = walked
    config = str(monitor.config_path)
    before = _counts(monitor)
    looked: dict[str, str] = {}
    acts: list[str] = []
    for runbook in sorted(RUNBOOKS.glob("*.md")):
        written = runbook.read_text()
        named = {**names, "<version>": VERSION.get(runbook.name, names["<version>"])}
        for command in _steps(COMMAND, written):
            filled = _filled(command, named)
            if filled.split()[1] in ACTS:
                acts.append(filled)
                continue
            status, output = _run(filled, config)
            assert status == 0, f"{runbook.name}: `{filled}` exited {status}:\n{output}"
            looked[filled] = output
        for request in _steps(REQUEST, written):
            status, body = _get(port, _filled(request, named))
            assert status in (200, 503), f"{runbook.name}: GET {request} answered {status}: {body[:300]}"
            looked[request] = body
    assert _counts(monitor) == before, "a look step wrote to the database"
    fails = looked["forgetmenot verdicts --model bot --version bad --capability arithmetic"]
    errors = looked["forgetmenot verdicts --model bot --version broken --phase ERROR"]
    assert names["<verdict id>"] in fails and "FAIL" in fails
    assert names["broken verdict"] in errors and "ERROR" in errors and "FAIL" not in errors
    run = looked["/api/v1/runs/<id>"]
    assert '"errors"' in run and "first_error" in run, "the run names its cause"
    assert "alert" in looked["forgetmenot actions --model bot"]
    assert {command.split()[1] for command in acts} == {"rollback"}
    status, output = _run("forgetmenot rollback bot --to v1", config)
    assert status == 0 and monitor.store.live_version(monitor.config, "bot") == "v1", output
