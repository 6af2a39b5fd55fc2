"""The retention gate on the real SmolLM2 demo versions, through a running `forgetmenot serve`:
the JSON fine-tune (v2) registered as a candidate is stopped with alignment loss, v1's own weights
registered as a candidate go on, and the chart's Argo Rollouts AnalysisTemplate reads the gate's
real answers the way Argo would."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from tests.conftest import PROBES
from tests.test_service import _free_port

pytestmark = pytest.mark.realmodel
TOKEN = "real-gate-token-9876543210"


def _policy(tmp_path: Path, v1: Path) -> Path:
    (tmp_path / "probes").symlink_to(PROBES)
    path = tmp_path / "forgetmenot.yaml"
    path.write_text(f"""\
database: sqlite:///fmn.db
schedule: {{every: 6h, jitter: 0s}}
models:
  support-bot:
    backend: {{kind: transformers, device: cpu, dtype: float32, batch_size: 16}}
    versions:
      v1: {{path: {v1}}}
    baseline: v1
    live: v1
suites: [probes/arithmetic]
policy:
  capabilities:
    arithmetic: {{max_drop: 0.10}}
""")
    return path


def _call(port: int, path: str, body: Any = None) -> tuple[int, Any]:
    data = None if body is None else json.dumps(body).encode()
    headers = {"Authorization": f"Bearer {TOKEN}", **({"Content-Type": "application/json"} if data else {})}
    req = urllib.request.Request(f"http://127.0.0.1:{port}{path}", data=data, headers=headers)
    try:
        with urllib.request.urlopen(req, timeout=330) as reply:
            return reply.status, json.loads(reply.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def _decided(port: int, version: str, mode: str = "flagger") -> tuple[int, Any]:
    """Ask the gate, waiting server-side, until it has decided (about a minute a version here)."""
    deadline = time.monotonic() + 900
    while True:
        status, body = _call(port, f"/api/v1/gate?model=support-bot&version={version}&wait=300&mode={mode}")
        if body.get("decision") != "pending" or time.monotonic() > deadline:
            return status, body


def argo(condition: str, result: Any) -> bool:
    """An Argo Rollouts condition (expr language) as Argo evaluates it on a web metric's JSON:
    only the forms the chart uses (field access, ==, !=, &&, ||, string literals) are accepted."""
    if not re.fullmatch(r'(\s|result(\.\w+)+|==|!=|&&|\|\||"[\w-]*"|true|false)+', condition):
        raise AssertionError(f"the test's evaluator does not know this condition: {condition}")
    python = condition.replace("&&", " and ").replace("||", " or ").replace("true", "True").replace(
        "false", "False")
    return bool(eval(python, {"__builtins__": {}}, {"result": _namespace(result)}))


def _namespace(value: Any) -> Any:
    if isinstance(value, dict):
        return SimpleNamespace(**{k: _namespace(v) for k, v in value.items()})
    return value


def test_the_gate_stops_the_json_fine_tune_and_lets_v1_through(
        tmp_path: Path, demo_versions: dict[str, Path]) -> None:
    from tests.test_chart import analysis_template

    path = _policy(tmp_path, demo_versions["v1"])
    (tmp_path / "tokens").write_text(TOKEN + "\n")
    port = _free_port()
    serve = subprocess.Popen([sys.executable, "-m", "monitor.cli.app", "serve", "-c", str(path), "--port",
                              str(port), "--run-now", "--token-file", str(tmp_path / "tokens")],
                             stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                             env={**os.environ, "COLUMNS": "200"})
    try:
        _wait_ready(port)
        for name, built in (("v2-candidate", demo_versions["v2"]), ("v1-candidate", demo_versions["v1"])):
            status, body = _call(port, "/api/v1/models/support-bot/candidates",
                                 {"version": name, "path": str(built), "description": "from the test"})
            assert status == 201, body

        status, stopped = _decided(port, "v2-candidate")
        assert (status, stopped["decision"]) == (412, "fail"), stopped
        knowledge = next(v for v in stopped["verdicts"] if v["suite"] == "arithmetic")
        assert (knowledge["baseline"], knowledge["phase"], knowledge["diagnosis"]) == (
            "v1", "FAIL", "alignment_loss")
        status, passed = _decided(port, "v1-candidate")
        assert (status, passed["decision"], passed["passed"]) == (200, "pass", True), passed

        # What Argo Rollouts would conclude from the same answers, with the chart's own template.
        metric = analysis_template()["spec"]["metrics"][0]
        for version, success, failure in (("v2-candidate", False, True), ("v1-candidate", True, False)):
            status, body = _decided(port, version, mode="metric")
            assert status == 200
            assert argo(metric["successCondition"], body) is success
            assert argo(metric["failureCondition"], body) is failure

        junit = tmp_path / "gate.xml"
        cli = subprocess.run([sys.executable, "-m", "monitor.cli.app", "gate", "support-bot", "v2-candidate",
                              "--url", f"http://127.0.0.1:{port}", "--junit", str(junit)],
                             capture_output=True, text=True, env={**os.environ, "FORGETMENOT_TOKEN": TOKEN,
                                                                  "COLUMNS": "200"}, timeout=300)
        assert cli.returncode == 1, cli.stdout + cli.stderr
        assert 'type="alignment_loss"' in junit.read_text()
    finally:
        serve.send_signal(signal.SIGTERM)
        try:
            serve.communicate(timeout=120)
        finally:
            if serve.poll() is None:
                serve.kill()


def _wait_ready(port: int) -> None:
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=5) as reply:
                if reply.status == 200:
                    return
        except (OSError, urllib.error.HTTPError):
            pass
        time.sleep(0.5)
    raise AssertionError("serve did not become ready")
