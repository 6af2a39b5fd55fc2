"""The policy file: one clear error per problem, naming file, line and key."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from monitor.errors import ConfigError
from monitor.policy.loading import load_config
from monitor.policy.schema import parse_duration
from tests.conftest import PROBES

GOOD = """\
database: sqlite:///fmn.db
schedule: {every: 15m, jitter: 30s}
models:
  support-bot:
    backend: {kind: transformers, device: auto, dtype: auto}
    versions:
      v1: {path: models/v1}
      v2: {path: models/v2}
    baseline: v1
    live: v2
suites: [probes/general-knowledge, probes/arithmetic]
policy:
  defaults: {max_drop: 0.05, confidence: 0.95}
  capabilities:
    general-knowledge: {max_drop: 0.10}
    arithmetic: {muted: true}
"""


@pytest.fixture()
def workdir(tmp_path: Path) -> Path:
    for name in ("general-knowledge", "arithmetic"):
        shutil.copytree(PROBES / name, tmp_path / "probes" / name)
    for version in ("v1", "v2"):
        (tmp_path / "models" / version).mkdir(parents=True)
    return tmp_path


def write(workdir: Path, text: str) -> Path:
    path = workdir / "forgetmenot.yaml"
    path.write_text(text)
    return path


def problems(workdir: Path, text: str) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        load_config(write(workdir, text))
    return [str(p) for p in caught.value.problems]


def test_good_file_loads_with_paths_resolved_against_the_file(workdir: Path) -> None:
    config = load_config(write(workdir, GOOD))
    assert config.models["support-bot"].baseline == "v1"
    assert config.schedule.every is not None and config.schedule.every.total_seconds() == 900
    assert config.resolve("probes/arithmetic") == workdir / "probes" / "arithmetic"
    assert config.database_url() == f"sqlite:///{workdir / 'fmn.db'}"


def test_the_shipped_demo_policy_parses() -> None:
    config = load_config(PROBES.parent / "forgetmenot.yaml", check_paths=False)
    assert config.models["support-bot"].live == "v2"


BROKEN = [
    # (what, replace this, with this, expected line, expected text)
    ("baseline not a version", "baseline: v1", "baseline: v0", 9,
     "models.support-bot.baseline: 'v0' is not one of the versions (v1, v2)"),
    ("live not a version", "live: v2", "live: v3", 10, "models.support-bot.live: 'v3' is not one"),
    ("misspelt key with suggestion", "baseline: v1", "basline: v1", 9,
     "models.support-bot.basline: unknown key 'basline' (did you mean 'baseline'?)"),
    ("unknown top-level key", "database:", "databse:", 1,
     "databse: unknown key 'databse' (did you mean 'database'?)"),
    ("negative max_drop", "max_drop: 0.10", "max_drop: -0.1", 15,
     "policy.capabilities.general-knowledge.max_drop: Input should be greater than or equal to 0"),
    ("wrong type", "confidence: 0.95", "confidence: high", 13,
     "policy.defaults.confidence: Input should be a valid number"),
    ("confidence out of range", "confidence: 0.95", "confidence: 1.5", 13, "less than 1"),
    ("bad duration", "every: 15m", "every: 15 minutes", 2, "schedule.every: '15 minutes' is not a duration"),
    ("missing suite directory", "probes/arithmetic]", "probes/arithmetc]", 11,
     "suites[1]: suite directory"),
    ("unknown backend kind", "kind: transformers", "kind: tensorflow", 5,
     "models.support-bot.backend.kind: Input should be 'transformers' or 'openai'"),
    ("capability no suite measures", "arithmetic: {muted: true}", "arithmetik: {muted: true}", 16,
     "policy.capabilities.arithmetik: 'arithmetik' is not one of the capabilities the suites "
     "measure (arithmetic, general-knowledge); did you mean 'arithmetic'?"),
    ("version path missing", "v2: {path: models/v2}", "v2: {path: models/v9}", 8,
     "models.support-bot.versions.v2.path:"),
    ("version with no source", "v2: {path: models/v2}", "v2: {description: nothing}", 8,
     "models.support-bot.versions.v2: a version needs path"),
    ("bad database url", "sqlite:///fmn.db", "mysql://x/y", 1, "database: use sqlite"),
    ("unknown action", "  capabilities:", "  on_knowledge_loss: [alert, explode]\n  capabilities:", 14,
     "policy.on_knowledge_loss[1]: Input should be 'alert', 'rollback' or 'retrain'"),
    ("missing required key", "suites: [probes/general-knowledge, probes/arithmetic]\n", "", None,
     "suites: required key is missing"),
    ("openai without base_url", "kind: transformers", "kind: openai", 5,
     "models.support-bot.backend.base_url: the openai backend needs base_url"),
]


@pytest.mark.parametrize(("old", "new", "line", "expected"), [b[1:] for b in BROKEN],
                         ids=[b[0] for b in BROKEN])
def test_broken_file_names_file_line_and_key(workdir: Path, old: str, new: str, line: int | None,
                                             expected: str) -> None:
    assert old in GOOD
    found = problems(workdir, GOOD.replace(old, new, 1))
    where = f"{workdir / 'forgetmenot.yaml'}:{line}: " if line else f"{workdir / 'forgetmenot.yaml'}"
    assert any(p.startswith(where) and expected in p for p in found), found


def test_invalid_yaml_reports_the_line(workdir: Path) -> None:
    found = problems(workdir, GOOD.replace("live: v2", "live: [v2"))
    assert found == [f"{workdir / 'forgetmenot.yaml'}:11: invalid YAML: expected ',' or ']', but got "
                     "':' (while parsing a flow sequence on line 10)"]


def test_every_problem_is_reported_not_just_the_first(workdir: Path) -> None:
    text = GOOD.replace("baseline: v1", "baseline: v0").replace("live: v2", "live: v9")
    found = problems(workdir, text)
    assert len(found) == 2 and "baseline" in found[0] and "live" in found[1]


def test_broken_suite_is_reported_through_the_policy(workdir: Path) -> None:
    items = workdir / "probes" / "arithmetic" / "items.jsonl"
    lines = items.read_text().splitlines()
    lines[4] = '{"id": "broken", "question": "1+1?"'
    items.write_text("\n".join(lines) + "\n")
    found = problems(workdir, GOOD)
    assert any(p.startswith(f"{items}:5: ") and "not valid JSON" in p for p in found), found


def test_empty_and_non_mapping_files(workdir: Path) -> None:
    assert "must be a mapping" in problems(workdir, "- just\n- a list\n")[0]
    with pytest.raises(ConfigError, match="not found"):
        load_config(workdir / "missing.yaml")


@pytest.mark.parametrize(("text", "seconds"), [("30s", 30), ("15m", 900), ("1h", 3600), ("2d", 172800),
                                               (45, 45), ("250ms", 0.25)])
def test_durations(text: object, seconds: float) -> None:
    assert parse_duration(text).total_seconds() == seconds  # type: ignore[union-attr]
