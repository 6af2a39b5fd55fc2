"""A stop reaches the calls in flight: `forgetmenot serve` probing a server that never finishes
its answer still ends on SIGTERM within seconds, its run recorded as cut short, never as forgetting."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from monitor.store import Store
from monitor.testing.faults import FaultProxy
from monitor.testing.stack import free_port
from tests.conftest import PROBES

pytestmark = pytest.mark.timeout(180)


def _policy(tmp_path: Path, base_url: str, tokenizer: Path) -> Path:
    shutil.copytree(PROBES / "arithmetic", tmp_path / "probes" / "arithmetic")
    path = tmp_path / "forgetmenot.yaml"
    path.write_text(f"""\
database: sqlite:///{tmp_path / 'fmn.db'}
models:
  bot:
    backend: {{kind: openai, base_url: "{base_url}", tokenizer: {tokenizer}, timeout: 120s}}
    versions: {{v1: {{served_name: a}}, v2: {{served_name: b}}}}
    baseline: v1
    live: v2
suites: [probes/arithmetic]
""")
    return path


def _wait_for_a_request(proxy: FaultProxy, store: Store, seconds: float) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if proxy.requests and store.runs(status="running"):
            return
        time.sleep(0.2)
    raise AssertionError("serve never started a run against the slow server")


def test_sigterm_ends_serve_while_a_server_sends_its_headers_a_byte_a_second(
        tmp_path: Path, tiny_model_dir: Path) -> None:
    slow = FaultProxy(f"http://127.0.0.1:{free_port()}/v1")
    slow.mode = "slow_headers"  # a byte a second: a 120 s timeout per read never fires
    path = _policy(tmp_path, slow.base_url, tiny_model_dir)
    command = [sys.executable, "-m", "monitor.cli.app", "serve", "-c", str(path), "--port", str(free_port()),
               "--run-now"]
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env={**os.environ, "COLUMNS": "200"})
    store = Store(f"sqlite:///{tmp_path / 'fmn.db'}")
    try:
        _wait_for_a_request(slow, store, 90)
        time.sleep(1)
        proc.send_signal(signal.SIGTERM)
        began = time.monotonic()
        output, _ = proc.communicate(timeout=15)
        took = time.monotonic() - began
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
        slow.stop()
    assert proc.returncode == 0, output
    assert took < 15, f"took {took:.1f} s to stop"
    runs = store.runs()
    assert runs and {r.status for r in runs} <= {"interrupted", "error"}, [r.status for r in runs]
    assert all(v.phase != "FAIL" for v in store.verdicts()), "a stop must never look like forgetting"
