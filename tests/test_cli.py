"""The CLI end to end on a tiny model saved to disk: validate, suites, probe, history."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

from monitor.cli import app
from monitor.store import Store
from tests.conftest import PROBES

runner = CliRunner()


def policy(tmp_path: Path, model_dir: Path, database: str | None = None) -> Path:
    for name in ("arithmetic", "fluency"):
        shutil.copytree(PROBES / name, tmp_path / "probes" / name)
    path = tmp_path / "forgetmenot.yaml"
    path.write_text(f"""\
database: {database or "sqlite:///fmn.db"}
models:
  bot:
    backend: {{kind: transformers, device: cpu, dtype: float32, batch_size: 8}}
    versions:
      v1: {{path: {model_dir}}}
      broken: {{path: {tmp_path / "probes"}}}
    baseline: v1
    live: v1
suites: [probes/arithmetic, probes/fluency]
""")
    return path


def test_validate_ok_and_broken(tmp_path: Path, tiny_model_dir: Path) -> None:
    path = policy(tmp_path, tiny_model_dir)
    result = runner.invoke(app, ["validate", str(path)])
    assert result.exit_code == 0 and "ok" in result.output and "2 suite(s)" in result.output
    path.write_text(path.read_text().replace("baseline: v1", "baseline: v0"))
    result = runner.invoke(app, ["validate", str(path)])
    assert result.exit_code == 2
    assert f"{path}:8: models.bot.baseline: 'v0' is not one of the versions (v1, broken)" in \
        result.output.replace("\n", "")


def test_suites_lists_splits_and_hashes() -> None:
    result = runner.invoke(app, ["suites", str(PROBES / "arithmetic")], env={"COLUMNS": "200"})
    assert result.exit_code == 0
    assert "arithmetic" in result.output and "multiple_choice, generate_until" in result.output


def test_probe_stores_runs_then_history_shows_them(tmp_path: Path, tiny_model_dir: Path) -> None:
    path = policy(tmp_path, tiny_model_dir)
    result = runner.invoke(app, ["probe", "-c", str(path)], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    store = Store(f"sqlite:///{tmp_path / 'fmn.db'}")
    runs = store.runs()
    assert [(r.suite, r.status, r.version) for r in runs] == [
        ("arithmetic", "complete", "v1"), ("fluency", "complete", "v1")]
    assert runs[0].item_count == 2 * 78 and runs[0].error_count == 0
    history = runner.invoke(app, ["history", "-c", str(path), "--plot", str(tmp_path / "h.png")],
                            env={"COLUMNS": "200"})
    assert history.exit_code == 0 and "arithmetic" in history.output
    assert (tmp_path / "h.png").stat().st_size > 1000


def test_probe_a_version_that_cannot_load_exits_3_and_records_errors(tmp_path: Path,
                                                                   tiny_model_dir: Path) -> None:
    path = policy(tmp_path, tiny_model_dir)
    result = runner.invoke(app, ["probe", "-c", str(path), "--version", "broken"],
                           env={"COLUMNS": "200"})
    assert result.exit_code == 3
    runs = Store(f"sqlite:///{tmp_path / 'fmn.db'}").runs(version="broken")
    assert [r.status for r in runs] == ["error", "error"]


@pytest.mark.postgres
def test_probe_into_postgres(tmp_path: Path, tiny_model_dir: Path) -> None:
    from tests.conftest import postgres_database

    with postgres_database() as url:
        path = policy(tmp_path, tiny_model_dir, database=url)
        result = runner.invoke(app, ["probe", "-c", str(path), "--suite", "fluency"])
        assert result.exit_code == 0, result.output
        store = Store(url)
        assert [r.suite for r in store.runs(status="complete")] == ["fluency"]
        store.close()


def test_unknown_model_prepare_name_is_refused() -> None:
    result = runner.invoke(app, ["model", "prepare", "gpt5"])
    assert result.exit_code != 0 and "smollm2" in result.output
