"""A typo is an input error: the CLI exits 2 and lists what it knows, never an empty table with
exit 0, an INCONCLUSIVE, or the code for a broken measurement. `--version`, and every command's
exit codes in its --help."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

import monitor
from monitor.cli.app import app
from monitor.store import Store
from monitor.testing.stack import free_port
from tests.test_cli import _commands
from tests.test_run_errors import served_policy

runner = CliRunner()

TYPOS = [
    # (arguments after the command's -c, what the message must say)
    (["probe", "--suite", "arithmetc"], "did you mean 'arithmetic'?"),
    (["probe", "--kind", "generat"], "did you mean 'generate'?"),
    (["probe", "--kind", "loglikelihood_rolling"], "no suite measures loglikelihood_rolling"),
    (["probe", "--version", "v3"], "'v3' is not one of the versions (base, v2)"),
    (["probe", "--model", "bott"], "did you mean 'bot'?"),
    (["history", "--model", "nope"], "'nope' is not one of the models (bot)"),
    (["history", "--version", "bse"], "did you mean 'base'?"),
    (["history", "--suite", "nope"], "'nope' is not one of the suites (arithmetic)"),
    (["judge", "--suite", "nope", "--no-report"], "'nope' is not one of the suites (arithmetic)"),
    (["judge", "--candidate", "v3", "--no-report"], "'v3' is not one of the versions (base, v2)"),
    (["calibrate", "--suite", "arithmetc"], "did you mean 'arithmetic'?"),
    (["rollback", "bot", "--to", "bse"], "did you mean 'base'?"),
    (["approve", "99"], "action 99 does not exist"),
    (["explain", "1", "--kind", "generat"], "did you mean 'generate'?"),
    (["actions", "--model", "bott"], "did you mean 'bot'?"),
    (["gate", "bot", "v9", "--wait", "0"], "bot has no version 'v9'"),
    (["db", "upgrade", "nope"], "Can't locate revision identified by 'nope'"),
]


@pytest.mark.parametrize(("args", "says"), TYPOS, ids=[" ".join(a) for a, _ in TYPOS])
def test_a_typo_exits_2_and_names_the_valid_ones(tmp_path: Path, args: list[str], says: str) -> None:
    path = served_policy(tmp_path, f"http://127.0.0.1:{free_port()}/v1")
    result = runner.invoke(app, [*args, "-c", str(path)], env={"COLUMNS": "200"})
    assert result.exit_code == 2, result.output
    assert says in " ".join(result.output.split())
    assert "Traceback" not in result.output


def test_the_short_kind_names_the_tables_print_are_accepted(tmp_path: Path) -> None:
    path = served_policy(tmp_path, f"http://127.0.0.1:{free_port()}/v1")
    result = runner.invoke(app, ["probe", "-c", str(path), "--kind", "generate"], env={"COLUMNS": "200"})
    assert result.exit_code == 3, result.output  # accepted; the endpoint is down
    store = Store(f"sqlite:///{tmp_path / 'fmn.db'}")
    assert [s.kind for s in store.summaries([store.runs()[0].id or 0])[store.runs()[0].id or 0]] == [
        "generate_until"]
    store.close()


def test_a_port_in_use_is_one_line_naming_it_and_exit_2(tmp_path: Path) -> None:
    path = served_policy(tmp_path, f"http://127.0.0.1:{free_port()}/v1")
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        done = subprocess.run([sys.executable, "-m", "monitor.cli.app", "serve", "-c", str(path), "--port",
                               str(port)], capture_output=True, text=True, timeout=60,
                              env={**os.environ, "COLUMNS": "200"})
    assert done.returncode == 2, done.stderr
    lines = [line for line in (done.stdout + done.stderr).splitlines() if line.strip()]
    assert len(lines) == 1 and f"127.0.0.1:{port}" in lines[0] and "in use" in lines[0], lines


def test_version_flag_prints_the_version() -> None:
    result = runner.invoke(app, ["--version"])
    assert result.exit_code == 0 and monitor.__version__ in result.output


def test_every_command_lists_its_exit_codes_in_its_help() -> None:
    for path, _ in _commands(app):
        result = runner.invoke(app, [*path, "--help"], env={"COLUMNS": "200"})
        text = " ".join(result.output.split())
        assert result.exit_code == 0, path
        for says in ("Exit codes", "2 your input is wrong", "3 the measurement broke"):
            assert says in text, f"{' '.join(path)}: {text[-300:]}"
