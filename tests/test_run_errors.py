"""A run that broke says why, wherever it is looked at: `probe`'s output and bar, the stored run,
and `/api/v1/runs/{id}`. Against real endpoints on loopback: one that is down (a closed port) and
one that answers garbage."""

from __future__ import annotations

import http.client
import json
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

from rich.progress import Progress
from typer.testing import CliRunner

from monitor.cli.app import app
from monitor.cli.context import RunBar
from monitor.policy.loading import load_config
from monitor.service.http import Api, HttpServer
from monitor.store import ItemResult, Store
from monitor.testing.stack import free_port
from tests.conftest import PROBES
from tests.test_endpoint import Scripted, scripted  # noqa: F401 (a fixture)

runner = CliRunner()


def served_policy(tmp_path: Path, base_url: str) -> Path:
    shutil.copytree(PROBES / "arithmetic", tmp_path / "probes" / "arithmetic")
    path = tmp_path / "forgetmenot.yaml"
    path.write_text(f"""\
database: sqlite:///fmn.db
models:
  bot:
    backend: {{kind: openai, base_url: "{base_url}", max_retries: 0, timeout: 5s}}
    versions:
      base: {{served_name: base}}
      v2: {{served_name: v2}}
    baseline: base
    live: v2
suites: [probes/arithmetic]
""")
    return path


def run_json(config_path: Path, run_id: int) -> dict[str, Any]:
    config = load_config(config_path)
    store = Store(config.database_url())
    server = HttpServer(Api(config, store), port=0).start()
    try:
        conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
        conn.request("GET", f"/api/v1/runs/{run_id}")
        body: dict[str, Any] = json.loads(conn.getresponse().read())
        conn.close()
        return body
    finally:
        server.stop()
        store.close()


def test_an_endpoint_that_is_down_is_named_with_its_cause_in_probe_the_run_and_api(tmp_path: Path) -> None:
    port = free_port()
    path = served_policy(tmp_path, f"http://127.0.0.1:{port}/v1")
    result = runner.invoke(app, ["probe", "-c", str(path)], env={"COLUMNS": "200"})
    assert result.exit_code == 3, result.output
    said = " ".join(result.output.split())
    assert f"127.0.0.1:{port}" in said and "Connection refused" in said and "156 unreachable" in said
    store = Store(f"sqlite:///{tmp_path / 'fmn.db'}")
    run = store.runs()[0]
    store.close()
    assert run.error is not None and run.error.startswith("no item could be measured: 156 unreachable")
    assert f"error arithmetic (run {run.id}): {run.error}" in said
    body = run_json(path, run.id or 0)
    assert body["errors"] == [{"kind": "unreachable", "count": 156}]
    assert f"127.0.0.1:{port}" in body["first_error"] and "Connection refused" in body["first_error"]
    assert body["error"] == run.error


def test_an_endpoint_that_answers_garbage_is_named_with_its_kind(tmp_path: Path,
                                                                 scripted: Callable[..., Scripted],  # noqa: F811
                                                                 ) -> None:
    server = scripted([(200, b"<html>it works!</html>")])
    path = served_policy(tmp_path, server.url)
    result = runner.invoke(app, ["probe", "-c", str(path), "--kind", "generate_until"],
                           env={"COLUMNS": "200"})
    assert result.exit_code == 3, result.output
    store = Store(f"sqlite:///{tmp_path / 'fmn.db'}")
    run = store.runs()[0]
    store.close()
    assert run.error is not None and "78 invalid_response" in run.error and "first: " in run.error
    assert run.error in " ".join(result.output.split())
    body = run_json(path, run.id or 0)
    assert body["errors"] == [{"kind": "invalid_response", "count": 78}]
    assert "JSON" in body["first_error"] or "json" in body["first_error"]


def test_the_summary_counts_each_kind_and_keeps_no_credential(store: Store) -> None:
    from monitor.policy.suites import load_suite
    from monitor.probing.run import VersionRef, open_run

    suite = load_suite(PROBES / "fluency")
    run = open_run(store, suite, VersionRef("bot", "v1"), backend="openai", device="-", dtype="-")
    failed = [ItemResult(item_id=f"i{n}", kind="loglikelihood_rolling", error_kind=kind,
                         error=f"POST https://user:hunter22@llm.example/v1: {kind}")
              for n, kind in enumerate(["timeout", "unreachable", "timeout"])]
    scored = ItemResult(item_id="ok", kind="loglikelihood_rolling", score=-3.0)
    store.add_results(run.id or 0, [*failed, scored])
    finished = store.finish_run(run.id or 0, "complete")
    assert finished.error == ("3 of 4 measurements failed: 2 timeout, 1 unreachable; "
                              "first: POST https://user:***@llm.example/v1: timeout")
    assert "hunter22" not in (finished.error or "")


def test_the_bar_of_a_broken_run_is_red() -> None:
    progress = Progress(RunBar())
    task = progress.add_task("arithmetic", total=4, completed=4)
    progress.update(task, broken=True)
    bar = RunBar().render(progress.tasks[0])
    assert bar.complete_style == "red" and bar.finished_style == "red"
    fine = progress.add_task("fluency", total=4, completed=4)
    assert RunBar().render(progress.tasks[fine]).finished_style != "red"
