"""The CLI end to end on a tiny model saved to disk: validate, suites, probe, history."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

from monitor.cli.app import app
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


def test_validate_takes_the_policy_like_every_other_command(tmp_path: Path, tiny_model_dir: Path) -> None:
    path = policy(tmp_path, tiny_model_dir)
    for args in (["validate", "-c", str(path)], ["validate", "--config", str(path)], ["validate", str(path)]):
        result = runner.invoke(app, args)
        assert result.exit_code == 0 and "2 suite(s)" in result.output, args


def _commands(group: object, prefix: tuple[str, ...] = ()) -> list[tuple[tuple[str, ...], object]]:
    import typer.main

    command = typer.main.get_command(group) if not hasattr(group, "commands") else group
    found = []
    for name, sub in getattr(command, "commands", {}).items():
        found += _commands(sub, (*prefix, name)) if hasattr(sub, "commands") else [((*prefix, name), sub)]
    return found


def test_every_command_that_reads_a_policy_takes_c_and_config() -> None:
    """One spelling everywhere: `-c/--config`, never a positional file alone."""
    reading = []
    for path, command in _commands(app):
        options = {o for p in command.params for o in getattr(p, "opts", [])}
        if "--config" in options or any("polic" in (p.help or "").lower()
                                         for p in command.params if hasattr(p, "help")):
            reading.append(path)
            assert {"-c", "--config"} <= options, f"{' '.join(path)} reads a policy without -c/--config"
    assert {("validate",), ("probe",), ("judge",), ("serve",), ("rollback",), ("demo",)} <= set(reading)


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
    said = " ".join(result.output.split())
    assert f"error arithmetic (run {runs[0].id}): {runs[0].error}" in said, "the reason is printed"


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


def _judged_policy(tmp_path: Path, tiny_model_dir: Path, database: str | None = None) -> Path:
    """Runs of v1 (right) and v2 (wrong in prose, same multiple-choice picks) stored for the CLI."""
    from monitor.policy.suites import load_suite
    from monitor.probing.backends.fake import FakeBackend
    from monitor.probing.run import VersionRef, probe_suite

    path = policy(tmp_path, tiny_model_dir, database)
    path.write_text(path.read_text().replace("broken: {path:", "v2: {path:").replace(
        str(tmp_path / "probes") + "}", str(tiny_model_dir) + "}").replace("live: v1", "live: v2"))
    suite = load_suite(tmp_path / "probes" / "arithmetic")
    spec = suite.spec.kinds.generate_until
    assert spec is not None
    gold = {f"Question: {i.question}\nAnswer:": i.gold or 0 for i in suite.items}
    right = {spec.doc_to_text.format_map(i.fields()): i.targets()[0] for i in suite.items}
    store = Store(database or f"sqlite:///{tmp_path / 'fmn.db'}")
    for version, answers in (("v1", right), ("v2", {})):
        backend = FakeBackend(answers=answers, preferred=lambda r: gold[r.context])
        probe_suite(store, backend, suite, VersionRef("bot", version))
    fluency = load_suite(tmp_path / "probes" / "fluency")
    for version in ("v1", "v2"):
        probe_suite(store, FakeBackend(), fluency, VersionRef("bot", version))
    store.close()
    return path


def test_judge_prints_verdicts_writes_reports_and_exits_1_on_fail(tmp_path: Path,
                                                                  tiny_model_dir: Path) -> None:
    path = _judged_policy(tmp_path, tiny_model_dir)
    result = runner.invoke(app, ["judge", "-c", str(path)], env={"COLUMNS": "220"})
    assert result.exit_code == 1, result.output
    assert "alignment_loss" in result.output and "overall: FAIL" in result.output
    store = Store(f"sqlite:///{tmp_path / 'fmn.db'}")
    arithmetic = store.verdicts(capability="arithmetic")[-1]
    assert arithmetic.phase == "FAIL" and arithmetic.report is not None
    html = Path(arithmetic.report).read_text()
    assert "valid JSON" in html and "refusal" in html
    explained = runner.invoke(app, ["explain", str(arithmetic.id), "-c", str(path), "--kind",
                                    "generate_until", "--limit", "3"], env={"COLUMNS": "220"})
    assert explained.exit_code == 0, explained.output
    assert "item(s) regressed (showing 3)" in explained.output and "I don't know." in explained.output


def test_judge_a_version_without_runs_says_what_to_run(tmp_path: Path, tiny_model_dir: Path) -> None:
    path = policy(tmp_path, tiny_model_dir)
    result = runner.invoke(app, ["judge", "-c", str(path), "--candidate", "broken", "--no-report"])
    assert result.exit_code == 3
    assert "forgetmenot probe --version" in result.output.replace("\n", "")


@pytest.mark.parametrize("columns", ["80", "120"])
def test_judge_keeps_the_verdict_id_explain_needs_at_80_and_120_columns(tmp_path: Path, tiny_model_dir: Path,
                                                                       columns: str) -> None:
    path = _judged_policy(tmp_path, tiny_model_dir)
    result = runner.invoke(app, ["judge", "-c", str(path), "--no-report"], env={"COLUMNS": columns})
    store = Store(f"sqlite:///{tmp_path / 'fmn.db'}")
    ids = [str(v.id) for v in store.verdicts()]
    store.close()
    table = re.split(r"^[\w-]+ (?:PASS|FAIL|MARGINAL|INCONCLUSIVE|ERROR): ", result.output, flags=re.M)[0]
    words = table.split()
    assert all(i in words for i in ids) and "alignment_loss" in words and "FAIL" in words, result.output
    assert "…" not in table, result.output


def test_judging_three_times_leaves_one_verdict_per_suite(store: Store, tmp_path: Path,
                                                         tiny_model_dir: Path) -> None:
    path = _judged_policy(tmp_path, tiny_model_dir, store.url)
    for _ in range(3):
        result = runner.invoke(app, ["judge", "-c", str(path), "--no-report"], env={"COLUMNS": "200"})
        assert result.exit_code == 1, result.output
    assert [v.capability for v in store.verdicts()] == ["arithmetic", "fluency"]


def test_verdicts_lists_them_newest_first_and_writes_nothing(store: Store, tmp_path: Path,
                                                             tiny_model_dir: Path) -> None:
    """What a runbook tells on-call to look with: listing is never judging."""
    import json

    path = _judged_policy(tmp_path, tiny_model_dir, store.url)
    assert runner.invoke(app, ["judge", "-c", str(path), "--no-report"]).exit_code == 1
    stored = store.verdicts()

    def verdicts(*options: str) -> str:
        result = runner.invoke(app, ["verdicts", "-c", str(path), *options], env={"COLUMNS": "80"})
        assert result.exit_code == 0, result.output
        return result.output

    listed = json.loads(verdicts("--json"))
    assert [(v["id"], v["capability"], v["phase"]) for v in listed] == [
        (stored[1].id, "fluency", "PASS"), (stored[0].id, "arithmetic", "FAIL")]
    assert [k["kind"] for k in listed[1]["kinds"]] == ["multiple_choice", "generate_until"]
    assert [v["id"] for v in json.loads(verdicts("--json", "--limit", "1"))] == [stored[1].id]
    assert json.loads(verdicts("--json", "--version", "v1")) == []
    failing = verdicts("--phase", "fail", "--capability", "arithmetic", "--model", "bot")
    assert "arithmetic" in failing and "fluency" not in failing and "FAIL" in failing
    assert "alignment" in failing and "+100.0 pts" in failing, "the headline drop, in points"
    assert "no verdict" in verdicts("--capability", "refusal")
    assert runner.invoke(app, ["verdicts", "-c", str(path), "--phase", "FIALED"]).exit_code == 2
    assert runner.invoke(app, ["verdicts", "-c", str(path), "--model", "nope"]).exit_code == 2
    assert store.verdicts() == stored and store.actions() == []
