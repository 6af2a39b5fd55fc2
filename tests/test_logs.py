"""What `serve` writes for a log pipeline: one line per record, JSON when asked, a line per run,
verdict and action with their facts as fields, third-party chatter held back, no progress bars,
no secret, and no line broken at a console's width."""

from __future__ import annotations

import io
import json
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from monitor.service.logs import QUIET, configure
from monitor.service.scheduler import open_monitor
from monitor.testing.stack import free_port
from tests.test_gate import backends
from tests.test_service import get, policy

pytestmark = pytest.mark.timeout(240)
RUN_FIELDS = {"model", "version", "suite", "status", "scores", "errors", "duration_s", "run"}
VERDICT_FIELDS = {"model", "candidate", "baseline", "capability", "phase", "diagnosis", "drop", "unit",
                  "verdict"}
ACTION_FIELDS = {"kind", "status", "from", "to", "action", "reason"}
SECRET = "s3cret-Pa55"


@pytest.fixture()
def lines() -> Iterator[io.StringIO]:
    """Log records written to a string, the process's logging put back as it was afterwards."""
    root = logging.getLogger()
    kept = (list(root.handlers), root.level, {name: logging.getLogger(name).level for name in QUIET},
            threading.excepthook)
    for handler in kept[0]:
        root.removeHandler(handler)
    stream = io.StringIO()
    yield stream
    for handler in list(root.handlers):
        root.removeHandler(handler)
    handlers, level, quiet, hook = kept
    for handler in handlers:
        root.addHandler(handler)
    root.setLevel(level)
    for name, was in quiet.items():
        logging.getLogger(name).setLevel(was)
    threading.excepthook = hook
    logging.captureWarnings(False)


def parsed(stream: io.StringIO) -> list[dict[str, Any]]:
    return [json.loads(line) for line in stream.getvalue().splitlines()]


def events(records: list[dict[str, Any]], name: str) -> list[dict[str, Any]]:
    return [record for record in records if record.get("event") == name]


def test_a_cycle_logs_a_json_line_per_run_verdict_and_action(lines: io.StringIO, tmp_path: Path,
                                                            tiny_model_dir: Path) -> None:
    path = policy(tmp_path, tiny_model_dir)
    written = path.read_text().replace("v2:", "bad:").replace("live: v2", "live: bad")
    path.write_text(written + "  on_alignment_loss: [alert]\n")
    configure("info", "json", lines)
    monitor = open_monitor(path, load_backend=backends(tmp_path))
    assert monitor.cycle("bot", "v1", slot=1) and monitor.cycle("bot", "bad", slot=1)
    records = parsed(lines)
    runs = events(records, "run")
    assert {(r["version"], r["suite"]) for r in runs} == {("v1", "arithmetic"), ("v1", "fluency"),
                                                         ("bad", "arithmetic"), ("bad", "fluency")}
    assert all(set(r) >= RUN_FIELDS and r["status"] == "complete" for r in runs), runs
    arithmetic = next(r for r in runs if (r["version"], r["suite"]) == ("bad", "arithmetic"))
    assert set(arithmetic["scores"]) == {"multiple_choice", "generate_until"}
    assert isinstance(arithmetic["run"], int) and arithmetic["errors"] == {}
    failed = next(v for v in events(records, "verdict") if v["capability"] == "arithmetic")
    assert set(failed) >= VERDICT_FIELDS
    assert (failed["phase"], failed["diagnosis"], failed["unit"]) == ("FAIL", "alignment_loss", "pts")
    assert failed["drop"] > 5 and isinstance(failed["verdict"], int)
    alert = events(records, "action")[0]
    assert set(alert) >= ACTION_FIELDS
    assert (alert["kind"], alert["from"], alert["verdict"]) == ("alert", "bad", failed["verdict"])


def test_a_secret_is_masked_in_the_json_line_message_fields_and_traceback(lines: io.StringIO) -> None:
    configure("info", "json", lines)
    logger = logging.getLogger("forgetmenot.test")
    try:
        raise RuntimeError(f"connect to postgresql://fmn:{SECRET}@db/fmn refused")
    except RuntimeError:
        logger.exception("probe of %s failed", f"https://u:{SECRET}@vllm/v1",
                         extra={"event": "run", "fields": {"error": f"Authorization: Bearer {SECRET}"}})
    (record,) = parsed(lines)
    assert SECRET not in lines.getvalue()
    assert record["message"] == "probe of https://u:***@vllm/v1 failed"
    assert record["error"] == "Authorization: Bearer ***"
    assert "postgresql://fmn:***@db/fmn" in record["exception"]


def test_third_party_loggers_say_warnings_only_unless_debug_is_asked(lines: io.StringIO) -> None:
    configure("info", "json", lines)
    for name in ("apscheduler.scheduler", "httpx", "uvicorn.error", "urllib3.connectionpool", "transformers"):
        logging.getLogger(name).info("chatter from %s", name)
        logging.getLogger(name).warning("trouble in %s", name)
    assert [r["message"] for r in parsed(lines)] == [
        "trouble in apscheduler.scheduler", "trouble in httpx", "trouble in uvicorn.error",
        "trouble in urllib3.connectionpool", "trouble in transformers"]
    configure("debug", "json", lines)
    logging.getLogger("apscheduler.scheduler").debug("looking for jobs")
    assert parsed(lines)[-1]["message"] == "looking for jobs"


def _serve(path: Path, port: int, *options: str, env: dict[str, str] | None = None) -> subprocess.Popen[str]:
    command = [sys.executable, "-m", "monitor.cli.app", "serve", "-c", str(path), "--port", str(port),
               *options]
    return subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "COLUMNS": "40", **(env or {})})


class Collected:
    """Every line a process writes on stdout and stderr, read as it comes."""

    def __init__(self, proc: subprocess.Popen[str]) -> None:
        self.proc = proc
        self.lines: list[str] = []
        self._readers = [threading.Thread(target=self._read, args=(pipe,), daemon=True)
                         for pipe in (proc.stdout, proc.stderr)]
        for reader in self._readers:
            reader.start()

    def _read(self, pipe: Any) -> None:
        for line in pipe:
            self.lines.append(line.rstrip("\n"))

    def wait_for(self, done: Callable[[list[str]], bool], seconds: float) -> None:
        deadline = time.monotonic() + seconds
        while not done(self.lines):
            assert time.monotonic() < deadline and self.proc.poll() is None, "\n".join(self.lines[-40:])
            time.sleep(0.3)

    def finish(self) -> list[str]:
        for reader in self._readers:
            reader.join(30)
        return [line for line in self.lines if line.strip()]


def _stop(proc: subprocess.Popen[str]) -> None:
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(60)
    finally:
        if proc.poll() is None:
            proc.kill()


def _judged_both(lines: list[str]) -> bool:
    """A verdict line for each capability, read from the raw lines whatever else they hold."""
    judged = [line for line in lines if '"event": "verdict"' in line]
    wanted = ("arithmetic", "fluency")
    return all(any(f'"capability": "{name}"' in line for line in judged) for name in wanted)


def test_serve_with_log_format_json_writes_only_json_lines(tmp_path: Path, tiny_model_dir: Path) -> None:
    """The real model backend loads weights and the scheduler fires: no progress bar, no scheduler
    chatter, and a run line and a verdict line with their facts."""
    proc = _serve(policy(tmp_path, tiny_model_dir), free_port(), "--run-now", "--log-format", "json")
    collected = Collected(proc)
    try:
        collected.wait_for(_judged_both, 180)
    finally:
        _stop(proc)
    records = [json.loads(line) for line in collected.finish()]
    assert proc.returncode == 0
    runs, verdicts = events(records, "run"), events(records, "verdict")
    assert {(r["version"], r["suite"]) for r in runs} == {("v1", "arithmetic"), ("v1", "fluency"),
                                                         ("v2", "arithmetic"), ("v2", "fluency")}
    assert all(set(r) >= RUN_FIELDS for r in runs), runs
    assert {v["capability"] for v in verdicts} == {"arithmetic", "fluency"}
    assert all(set(v) >= VERDICT_FIELDS for v in verdicts), verdicts
    assert not [r for r in records if r["logger"].startswith("apscheduler") and r["level"] == "info"]
    assert any(r["message"].startswith("stopping") for r in records)


@pytest.mark.parametrize("form", ["text", "json"])
def test_serve_lines_are_whole_at_any_console_width(tmp_path: Path, tiny_model_dir: Path, form: str) -> None:
    """A 40-column console, the format chosen by FORGETMENOT_LOG_FORMAT: each line whole."""
    port = free_port()
    proc = _serve(policy(tmp_path, tiny_model_dir), port, env={"FORGETMENOT_LOG_FORMAT": form})
    collected = Collected(proc)
    try:
        collected.wait_for(lambda lines: any("serving on" in line for line in lines), 60)
        assert get(port, "/readyz")[0] == 200
    finally:
        _stop(proc)
    written = collected.finish()
    serving = next(line for line in written if "serving on" in line)
    assert f"http://127.0.0.1:{port} (metrics, healthz, readyz, api/v1), no credentials required" in serving
    if form == "json":
        assert all(json.loads(line) for line in written)
