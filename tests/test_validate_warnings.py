"""`validate` warns about a policy that loads but cannot do what it says: a tolerance no kind of its
suite uses, a capability with too few items to ever PASS or FAIL (loudest when critical), a
retraining ladder with nothing to retrain on. `--strict` fails on them. And every problem is
reported in one pass: a schema error does not hide the cross-field ones."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

from monitor.cli.app import app
from monitor.errors import ConfigError
from monitor.policy.loading import check_policy, load_config
from monitor.vocabulary import Severity
from tests.conftest import PROBES

runner = CliRunner()

POLICY = """\
database: sqlite:///fmn.db
models:
  bot:
    versions: {v1: {path: w}, v2: {path: w}}
    baseline: v1
    live: v2
suites: [probes/arithmetic, probes/fluency, probes/tiny]
policy:
  capabilities:
    fluency: {max_drop: 0.10}
    arithmetic: {max_drop_nats: 0.2}
    tiny: {critical: true}
"""
TINY = """\
name: tiny
version: 1
capability: tiny
split: {recovery_fraction: 0.0, seed: 0}
kinds:
  generate_until: {scorer: exact}
"""


@pytest.fixture()
def workdir(tmp_path: Path) -> Path:
    for name in ("arithmetic", "fluency"):
        shutil.copytree(PROBES / name, tmp_path / "probes" / name)
    tiny = tmp_path / "probes" / "tiny"
    tiny.mkdir()
    (tiny / "suite.yaml").write_text(TINY)
    items = [{"id": f"t{n}", "question": f"What is {n} plus {n}?", "target": str(2 * n)} for n in range(8)]
    (tiny / "items.jsonl").write_text("".join(json.dumps(i) + "\n" for i in items))
    (tmp_path / "w").mkdir()
    return tmp_path


def write(workdir: Path, text: str = POLICY) -> Path:
    path = workdir / "forgetmenot.yaml"
    path.write_text(text)
    return path


def test_what_cannot_work_is_warned_about_with_file_line_and_key(workdir: Path) -> None:
    path = write(workdir)
    checked = check_policy(path)
    assert checked.errors == []
    warnings = [str(w).replace(str(path), "{file}") for w in checked.warnings]
    assert all(w.severity == Severity.WARNING for w in checked.warnings)
    assert warnings == [
        "{file}:10: policy.capabilities.fluency.max_drop: applies to multiple_choice and generate_until, "
        "and suite 'fluency' measures only loglikelihood_rolling: it is never used (max_drop_nats is the "
        "tolerance of loglikelihood_rolling)",
        "{file}:11: policy.capabilities.arithmetic.max_drop_nats: applies to loglikelihood_rolling, and "
        "suite 'arithmetic' measures only multiple_choice and generate_until: it is never used (max_drop "
        "is the tolerance of multiple_choice and generate_until)",
        "{file}:7: suites[2]: suite 'tiny' has 8 probe items per kind, under min_items 20: capability "
        "'tiny' can never PASS or FAIL, only INCONCLUSIVE (unmonitored); add items or lower min_items",
        "{file}:12: policy.capabilities.tiny.critical: 'tiny' is critical but unmeasurable: suite 'tiny' "
        "has 8 probe items per kind, under min_items 20",
        "{file}:7: suites[2]: suite 'tiny' has no recovery items (split.recovery_fraction 0.0), and "
        "capability 'tiny' retrains on alignment loss: retraining would have nothing to learn from",
    ]
    load_config(path)  # a warning never stops the monitor


def test_validate_prints_warnings_and_exits_0_and_strict_exits_2(workdir: Path) -> None:
    path = write(workdir)
    result = runner.invoke(app, ["validate", "-c", str(path)], env={"COLUMNS": "300"})
    assert result.exit_code == 0, result.output
    assert f"warning {path}:10: policy.capabilities.fluency.max_drop:" in result.output
    assert "5 warning(s)" in result.output
    strict = runner.invoke(app, ["validate", "-c", str(path), "--strict"], env={"COLUMNS": "300"})
    assert strict.exit_code == 2 and f"warning {path}:12: policy.capabilities.tiny.critical" in strict.output


def test_a_clean_policy_has_no_warnings(workdir: Path) -> None:
    path = write(workdir, POLICY.replace(", probes/tiny]", "]").split("policy:")[0])
    assert check_policy(path).warnings == []
    result = runner.invoke(app, ["validate", "-c", str(path), "--strict"])
    assert result.exit_code == 0 and "warning" not in result.output


def test_schema_and_cross_field_errors_come_in_one_pass(workdir: Path) -> None:
    broken = POLICY.replace("baseline: v1", "baseline: v0").replace("{max_drop: 0.10}", "{max_dorp: 0.10}")
    path = write(workdir, broken)
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    got = [str(p).replace(str(path), "{file}") for p in caught.value.problems]
    assert got == [
        "{file}:10: policy.capabilities.fluency.max_dorp: unknown key 'max_dorp' (did you mean 'max_drop'?)",
        "{file}:5: models.bot.baseline: 'v0' is not one of the versions (v1, v2)",
    ]


def test_a_cross_field_check_on_a_part_that_did_not_parse_is_left_out(workdir: Path) -> None:
    """The versions did not parse, so whether the baseline is one of them is not known."""
    broken = POLICY.replace("v2: {path: w}}", "v2: {path: w, size: 3}}")
    broken = broken.replace("baseline: v1", "baseline: v0")
    with pytest.raises(ConfigError) as caught:
        load_config(write(workdir, broken))
    assert [p.key for p in caught.value.problems] == ["models.bot.versions.v2.size"]
