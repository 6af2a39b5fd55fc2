"""Bad input from outside, each with the exact error it must get: the file, the line, the key and
what is wrong, never a traceback, and nothing read from outside where it belongs.

Each case reproduces a finding of the security review (names used in paths, suite items read
from anywhere, YAML alias bombs, unbounded sizes, format specs in templates).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

from monitor.actions.deployers import RegistryDeployer
from monitor.cli.app import app
from monitor.errors import ConfigError, DeployError, SuiteError
from monitor.policy import bounds
from monitor.policy.loading import load_config
from monitor.policy.suites import load_suite
from tests.conftest import PROBES

POLICY = """\
models:
  {model}:
    versions: {{{version}: {{path: w}}}}
    baseline: {version}
    live: {version}
suites: [probes/arithmetic]
"""

runner = CliRunner()
MC_TEMPLATE = 'doc_to_text: "Question: {question}\\nAnswer:"'  # as arithmetic/suite.yaml writes it


def _policy(tmp_path: Path, text: str) -> Path:
    shutil.copytree(PROBES / "arithmetic", tmp_path / "probes" / "arithmetic", dirs_exist_ok=True)
    (tmp_path / "w").mkdir(exist_ok=True)
    path = tmp_path / "forgetmenot.yaml"
    path.write_text(text)
    return path


def _problems(path: Path) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    return [str(p) for p in caught.value.problems]


@pytest.mark.parametrize(("model", "version", "line", "key", "name"), [
    ("../../escaped-registry", "v1", 2, "models.../../escaped-registry", "../../escaped-registry"),
    ("bot", "../v1", 3, "models.bot.versions.../v1", "../v1"),
    ("bot", ".hidden", 3, "models.bot.versions..hidden", ".hidden"),
    ("a" * 65, "v1", 2, f"models.{'a' * 65}", "a" * 65),
])
def test_names_that_would_leave_their_folder_are_refused(tmp_path: Path, model: str, version: str,
                                                         line: int, key: str, name: str) -> None:
    path = _policy(tmp_path, POLICY.format(model=json.dumps(model), version=json.dumps(version)))
    expected = f"{path}:{line}: {key}: '{name}' is not a safe name: use {bounds.NAME_RULE}"
    assert any(p.startswith(expected) for p in _problems(path)), _problems(path)


def test_a_self_referencing_alias_is_refused_not_recursed(tmp_path: Path) -> None:
    path = _policy(tmp_path, "x: &a [*a]\n")
    assert _problems(path) == [f"{path}:1: YAML aliases (*a) are not allowed here: write the value out"]


def test_an_alias_bomb_is_refused_before_it_expands(tmp_path: Path) -> None:
    """494 bytes that expanded to 1.2 GB in the position index: refused at the first alias."""
    lines = ['a: &a ["x","x","x","x","x","x","x","x","x"]']
    for n, name in enumerate("bcdefghi"):
        previous = "abcdefghi"[n]
        lines.append(f"{name}: &{name} [{','.join(['*' + previous] * 9)}]")
    path = _policy(tmp_path, "\n".join(lines) + "\n")
    assert _problems(path) == [f"{path}:2: YAML aliases (*a) are not allowed here: write the value out"]


def test_a_policy_larger_than_the_cap_is_not_read(tmp_path: Path) -> None:
    path = _policy(tmp_path, "# " + "x" * bounds.MAX_POLICY_BYTES + "\n")
    size = path.stat().st_size
    assert _problems(path) == [f"{path}: the file is {size:,} bytes; at most {bounds.MAX_POLICY_BYTES:,} "
                               "are read"]


def test_a_policy_of_too_many_nodes_is_refused(tmp_path: Path) -> None:
    path = _policy(tmp_path, "x: [" + "1," * (bounds.MAX_YAML_NODES + 1) + "1]\n")
    [problem] = _problems(path)
    assert problem == f"{path}:1: more than {bounds.MAX_YAML_NODES:,} YAML nodes"


def test_validate_reports_a_bad_name_without_a_traceback(tmp_path: Path) -> None:
    path = _policy(tmp_path, POLICY.format(model='"../x"', version="v1"))
    result = runner.invoke(app, ["validate", "-c", str(path)], env={"COLUMNS": "300"})
    assert result.exit_code == 2 and "is not a safe name" in result.output
    assert "Traceback" not in result.output and isinstance(result.exception, SystemExit)


# -- suites -----------------------------------------------------------------------------------


def _suite(tmp_path: Path, **changes: str) -> Path:
    folder = tmp_path / "arithmetic"
    shutil.copytree(PROBES / "arithmetic", folder)
    spec = (folder / "suite.yaml").read_text()
    for old, new in changes.items():
        assert old in spec, old
        spec = spec.replace(old, new)
    (folder / "suite.yaml").write_text(spec)
    return folder


def _suite_problems(folder: Path) -> list[str]:
    with pytest.raises(SuiteError) as caught:
        load_suite(folder)
    return [str(p) for p in caught.value.problems]


def _with_items(folder: Path, items: str) -> Path:
    spec = folder / "suite.yaml"
    spec.write_text(f"{spec.read_text().rstrip()}\nitems: {json.dumps(items)}\n")
    return folder


@pytest.mark.parametrize("items", ["../../../../etc/passwd", "/etc/passwd", "../arithmetic-copy/items.jsonl"])
def test_suite_items_must_be_inside_the_suite_folder(tmp_path: Path, items: str) -> None:
    folder = _with_items(_suite(tmp_path), items)
    assert _suite_problems(folder) == [
        f"{folder / 'suite.yaml'}: items: '{items}' leads outside the suite folder {folder}; "
        "items must be a file inside it"]


def test_suite_items_may_not_be_a_symlink_out_of_the_folder(tmp_path: Path) -> None:
    outside = tmp_path / "secret.jsonl"
    outside.write_text('{"id": "x", "question": "q", "choices": ["a", "b"], "gold": 0}\n')
    folder = _suite(tmp_path)
    (folder / "linked.jsonl").symlink_to(outside)
    _with_items(folder, "linked.jsonl")
    assert _suite_problems(folder) == [
        f"{folder / 'suite.yaml'}: items: 'linked.jsonl' leads outside the suite folder {folder}; "
        "items must be a file inside it"]


@pytest.mark.parametrize(("template", "written"), [
    ("{question:>3000000000}", "{question:>3000000000}"),
    ("{question!r}", "{question!r}"),
    ("{question.__class__}", "{question.__class__}"),
    ("{choices[0]}", "{choices[0]}"),
])
def test_templates_may_only_substitute_plain_fields(tmp_path: Path, template: str, written: str) -> None:
    folder = _suite(tmp_path, **{MC_TEMPLATE: f"doc_to_text: {json.dumps(template)}"})
    [problem] = _suite_problems(folder)
    assert problem.endswith(f"kinds.multiple_choice.doc_to_text: '{written}' is not a plain field: "
                            "templates may only use {field}"), problem


def test_an_unclosed_template_is_a_clear_error(tmp_path: Path) -> None:
    folder = _suite(tmp_path, **{MC_TEMPLATE: 'doc_to_text: "Q: {question"'})
    [problem] = _suite_problems(folder)
    assert problem.endswith("kinds.multiple_choice.doc_to_text: not a valid template: expected '}' before "
                            "end of string"), problem


def test_an_item_line_past_the_cap_is_reported_and_the_rest_still_checked(tmp_path: Path) -> None:
    folder = _suite(tmp_path)
    items = folder / "items.jsonl"
    long = json.dumps({"id": "long", "question": "x" * bounds.MAX_ITEM_LINE_BYTES, "choices": ["a", "b"],
                       "gold": 0})
    items.write_text(items.read_text() + long + "\n")
    number = len(items.read_text().splitlines())
    assert _suite_problems(folder) == [
        f"{items}:{number}: the line is {len(long):,} characters; an item may have at most "
        f"{bounds.MAX_ITEM_LINE_BYTES:,}"]


def test_an_items_file_past_the_cap_is_not_read(tmp_path: Path) -> None:
    folder = _suite(tmp_path)
    items = folder / "items.jsonl"
    with items.open("r+b") as f:
        f.truncate(bounds.MAX_ITEMS_BYTES + 1)  # sparse: the size is what is checked, before reading
    assert _suite_problems(folder) == [
        f"{items}: the file is {bounds.MAX_ITEMS_BYTES + 1:,} bytes; "
        f"at most {bounds.MAX_ITEMS_BYTES:,} are read"]


def test_a_suite_yaml_with_an_alias_is_refused(tmp_path: Path) -> None:
    folder = _suite(tmp_path)
    spec = folder / "suite.yaml"
    spec.write_text(spec.read_text() + "description: &d text\nextra: *d\n")
    [problem] = _suite_problems(folder)
    assert problem.startswith(f"{spec}:") and problem.endswith("YAML aliases (*d) are not allowed here: "
                                                               "write the value out")


def test_the_registry_deployer_never_writes_outside_its_folder(tmp_path: Path) -> None:
    folder = tmp_path / "live"
    with pytest.raises(DeployError, match=r"registry: '\.\./\.\./escaped' is not a safe name"):
        RegistryDeployer(folder).promote("../../escaped", "v1", 1)
    assert not (tmp_path.parent / "escaped.json").exists() and not folder.exists()
