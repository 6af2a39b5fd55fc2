"""Bad input from outside, each with the exact error it must get: the file, the line, the key and
what is wrong, never a traceback, and nothing read from outside where it belongs.

Each case reproduces a finding of the security review (names used in paths, suite items read
from anywhere, YAML alias bombs, unbounded sizes, format specs in templates).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import NoReturn

import pytest
from typer.testing import CliRunner

from monitor.actions.deployers import RegistryDeployer
from monitor.cli.app import app
from monitor.errors import BackendError, ConfigError, DeployError, SuiteError
from monitor.policy import bounds, positions
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


@pytest.mark.parametrize("gguf_file", ["../model.gguf", "sub/model.gguf", "..", "..\\model.gguf"])
def test_a_gguf_file_is_a_file_name_in_the_policy_as_over_the_api(tmp_path: Path, gguf_file: str) -> None:
    written = f"{{path: w, gguf_file: {json.dumps(gguf_file)}}}"
    text = POLICY.format(model="bot", version="v1").replace("{path: w}", written)
    path = _policy(tmp_path, text)
    expected = f"{path}:3: models.bot.versions.v1.gguf_file: {bounds.file_name_problem(gguf_file)}"
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
    written = spec.read_text()
    assert "\nitems: items.jsonl\n" in written
    spec.write_text(written.replace("\nitems: items.jsonl\n", f"\nitems: {json.dumps(items)}\n"))
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


# -- what the policy file means is what it says ----------------------------------------------

GOOD = POLICY.format(model="bot", version="v1")  # six lines; what a case adds starts on line 7


def test_a_duplicate_key_is_refused_naming_both_lines(tmp_path: Path) -> None:
    """A reviewer reads `dry_run: true`; a YAML mapping keeps the last `dry_run`, `false`."""
    guards = "policy:\n  guards:\n    dry_run: true\n    cooldown: 1h\n    dry_run: false\n"
    path = _policy(tmp_path, GOOD + guards)
    assert _problems(path) == [f"{path}:11: policy.guards.dry_run: duplicate key (first written on line 9); "
                               "a YAML mapping keeps only the last, so remove one"]


def test_keys_that_build_the_same_value_are_duplicates(tmp_path: Path) -> None:
    """`yes` and `true` are both the boolean true to YAML: one key written twice."""
    path = _policy(tmp_path, GOOD + "custom: {yes: 1, true: 2}\n")
    [problem] = _problems(path)
    expected = f"{path}:7: custom.true: duplicate key (first written as 'yes' on line 7)"
    assert problem.startswith(expected), problem


def test_every_duplicate_is_reported_at_once(tmp_path: Path) -> None:
    twice = "schedule: {every: 1h}\nsuites: [probes/arithmetic]\nschedule: {every: 2h}\n"
    path = _policy(tmp_path, GOOD + twice)
    where = [p.split(": ", 2)[:2] for p in _problems(path)]
    assert where == [[f"{path}:8", "suites"], [f"{path}:9", "schedule"]]


def test_the_strict_parse_is_reusable_for_any_yaml_a_user_hands_over() -> None:
    with pytest.raises(ConfigError) as caught:
        positions.parse("basic_auth_users:\n  alice: x\n  alice: y\n", "web.yml")
    assert [str(p) for p in caught.value.problems] == [
        "web.yml:3: basic_auth_users.alice: duplicate key (first written on line 2); a YAML mapping keeps "
        "only the last, so remove one"]


def test_a_suite_yaml_with_a_duplicate_key_is_refused(tmp_path: Path) -> None:
    folder = _suite(tmp_path)
    spec = folder / "suite.yaml"
    spec.write_text(spec.read_text() + "version: 7\n")
    [problem] = _suite_problems(folder)
    assert problem.startswith(f"{spec}:") and "version: duplicate key (first written on line 2)" in problem


RANGE = f"must be from 0s to {bounds.MAX_DURATION_DAYS}d"
AT_LEAST_A_SECOND = (f"must be at least {bounds.MIN_INTERVAL_S}s: the scheduler counts in whole seconds, "
                     "and a probe cycle takes longer than that anyway")


@pytest.mark.parametrize(("written", "message"), [
    ("1ms", f"{AT_LEAST_A_SECOND} (got '1ms')"),
    ("999ms", f"{AT_LEAST_A_SECOND} (got '999ms')"),
    ("0.5", f"{AT_LEAST_A_SECOND} (got 0.5)"),
    (".inf", f"{RANGE} (got inf)"),
    ("-.inf", f"{RANGE} (got -inf)"),
    (".nan", f"{RANGE} (got nan)"),
    ("-60", f"{RANGE} (got -60)"),
    ("1.0e+300", f"{RANGE} (got 1e+300)"),
    ("99999999999999999d", f"{RANGE} (got '99999999999999999d')"),
    (f"{bounds.MAX_DURATION_DAYS + 1}d", f"{RANGE} (got '{bounds.MAX_DURATION_DAYS + 1}d')"),
])
def test_a_schedule_serve_cannot_run_is_refused(tmp_path: Path, written: str, message: str) -> None:
    path = _policy(tmp_path, GOOD + f"schedule: {{every: {written}}}\n")
    assert _problems(path) == [f"{path}:7: schedule.every: {message}"]


@pytest.mark.parametrize(("setting", "line", "key", "message"), [
    ("schedule: {jitter: .inf}", 7, "schedule.jitter", f"{RANGE} (got inf)"),
    ("schedule: {jitter: -1}", 7, "schedule.jitter", f"{RANGE} (got -1)"),
    ("executor: {start_timeout: 0s}", 7, "executor.start_timeout",
     "must be more than 0s: with no time to wait, every run would be an error (got '0s')"),
    ("executor: {start_timeout: .inf}", 7, "executor.start_timeout", f"{RANGE} (got inf)"),
    ("policy: {guards: {cooldown: .inf}}", 7, "policy.guards.cooldown", f"{RANGE} (got inf)"),
    ("policy: {guards: {cooldown: -3600}}", 7, "policy.guards.cooldown", f"{RANGE} (got -3600)"),
    ("policy: {alertmanager: {url: 'http://am', resolve_after: 100000000000}}", 7,
     "policy.alertmanager.resolve_after", f"{RANGE} (got 100000000000)"),
])
def test_a_duration_outside_its_bounds_is_refused(tmp_path: Path, setting: str, line: int, key: str,
                                                 message: str) -> None:
    path = _policy(tmp_path, GOOD + setting + "\n")
    assert _problems(path) == [f"{path}:{line}: {key}: {message}"]


@pytest.mark.parametrize(("written", "message"), [
    ("0s", "must be more than 0s: with no time to wait, every run would be an error (got '0s')"),
    (".inf", f"{RANGE} (got inf)"),
    ("1.0e+300", f"{RANGE} (got 1e+300)"),
])
def test_a_backend_timeout_outside_its_bounds_is_refused(tmp_path: Path, written: str, message: str) -> None:
    text = GOOD.replace("    versions:", f"    backend: {{timeout: {written}}}\n    versions:")
    path = _policy(tmp_path, text)
    assert _problems(path) == [f"{path}:3: models.bot.backend.timeout: {message}"]


@pytest.mark.parametrize(("setting", "key", "message"), [
    ("resources: {num_gpus: .inf}", "resources.num_gpus", "Input should be a finite number (got inf)"),
    ("retrain: {seed: 18446744073709551616}", "retrain.seed",
     "Input should be less than 18446744073709551616 (got 18446744073709551616)"),
])
def test_a_model_setting_retraining_or_ray_cannot_use_is_refused(tmp_path: Path, setting: str, key: str,
                                                                message: str) -> None:
    path = _policy(tmp_path, GOOD.replace("    versions:", f"    {setting}\n    versions:"))
    assert _problems(path) == [f"{path}:3: models.bot.{key}: {message}"]


@pytest.mark.parametrize("every", [f"{bounds.MIN_INTERVAL_S}s", f"{bounds.MAX_DURATION_DAYS}d"])
def test_serve_schedules_the_bounds_validate_accepts(tmp_path: Path, every: str) -> None:
    from monitor.service.scheduler import open_monitor

    def unloadable(_config: object, model: str, version: str) -> NoReturn:
        raise BackendError(f"{model}/{version}: not loaded in this test")

    text = GOOD + f"database: sqlite:///fmn.db\nspool: spool\nschedule: {{every: {every}}}\n"
    monitor = open_monitor(_policy(tmp_path, text), load_backend=unloadable)
    try:
        monitor.start()
        assert monitor.not_ready() is None
    finally:
        monitor.stop(wait=True)


HUGE_INT = "1" + "0" * 5000  # past the 4,300 digits Python converts


@pytest.mark.parametrize(("written", "message"), [
    (HUGE_INT, f"'{HUGE_INT[:40]}…' is not a valid int"),
    ("2001-02-30", "'2001-02-30' is not a valid timestamp: day is out of range for month"),
    ("!!float abc", "'abc' is not a valid float"),
])
def test_a_scalar_python_cannot_build_is_a_yaml_error_on_its_line(tmp_path: Path, written: str,
                                                                 message: str) -> None:
    path = _policy(tmp_path, GOOD + f"database: {written}\n")
    [problem] = _problems(path)
    assert problem.startswith(f"{path}:7: invalid YAML: {message}"), problem


DEEP = [
    ("5,000 nested lists", "x: " + "[" * 5000 + "]" * 5000 + "\n", 7),
    ("3,000 nested maps", "x: " + "{a: " * 3000 + "1" + "}" * 3000 + "\n", 7),
    ("block maps, one a line", "x:\n" + "".join(" " * n + "a:\n" for n in range(1, 1000)) + "   b: 1\n",
     7 + bounds.MAX_DEPTH),
]


@pytest.mark.parametrize(("text", "line"), [d[1:] for d in DEEP], ids=[d[0] for d in DEEP])
def test_deep_nesting_is_refused_before_anything_recurses(tmp_path: Path, text: str, line: int) -> None:
    path = _policy(tmp_path, GOOD + text)
    assert _problems(path) == [f"{path}:{line}: lists and mappings nested more than {bounds.MAX_DEPTH} deep; "
                               "no setting needs more than a few levels, so flatten it"]


def test_a_suite_yaml_nested_too_deep_is_refused(tmp_path: Path) -> None:
    folder = _suite(tmp_path)
    spec = folder / "suite.yaml"
    spec.write_text(spec.read_text() + "description: " + "[" * 5000 + "]" * 5000 + "\n")
    [problem] = _suite_problems(folder)
    assert problem.startswith(f"{spec}:") and f"nested more than {bounds.MAX_DEPTH} deep" in problem


def test_a_policy_that_is_not_utf8_names_its_line(tmp_path: Path) -> None:
    path = _policy(tmp_path, "")
    path.write_bytes(GOOD.encode() + b"# caf\xe9 au lait\n")
    assert _problems(path) == [f"{path}:7: not UTF-8 text (invalid continuation byte at byte 6 of the line); "
                               "save the file as UTF-8"]


def test_a_suite_yaml_that_is_not_utf8_names_its_line(tmp_path: Path) -> None:
    folder = _suite(tmp_path)
    spec = folder / "suite.yaml"
    spec.write_bytes(b"# \xff\n" + spec.read_bytes())
    assert _suite_problems(folder) == [f"{spec}:1: not UTF-8 text (invalid start byte at byte 3 of the "
                                       "line); save the file as UTF-8"]


def _add_item_line(folder: Path, raw: bytes) -> tuple[Path, int]:
    items = folder / "items.jsonl"
    items.write_bytes(items.read_bytes() + raw + b"\n")
    return items, len(items.read_bytes().splitlines())


def test_an_item_line_that_is_not_utf8_is_reported_and_the_rest_still_checked(tmp_path: Path) -> None:
    folder = _suite(tmp_path)
    latin = b'{"id": "latin", "question": "caf\xe9", "choices": ["a", "b"], "gold": 0}'
    items, number = _add_item_line(folder, latin)
    byte = latin.index(b"\xe9") + 1
    assert _suite_problems(folder) == [f"{items}:{number}: not UTF-8 text (invalid continuation byte at byte "
                                       f"{byte} of the line); save the file as UTF-8"]


def test_an_item_nested_too_deep_is_refused_before_it_is_parsed(tmp_path: Path) -> None:
    folder = _suite(tmp_path)
    deep = b'{"id": "deep", "question": "q", "choices": ["a", "b"], "gold": 0, "meta": ' + b"[" * 3000
    items, number = _add_item_line(folder, deep + b"]" * 3000 + b"}")
    assert _suite_problems(folder) == [f"{items}:{number}: lists and objects nested more than "
                                       f"{bounds.MAX_DEPTH} deep; an item needs a few levels at most, "
                                       "so flatten it"]


def test_brackets_inside_an_item_string_are_text_not_nesting(tmp_path: Path) -> None:
    folder = _suite(tmp_path)
    question = "What is " + "[" * 100 + '\\"{' * 100 + "?"
    item = {"id": "brackets", "question": question, "choices": ["a", "b"], "gold": 0, "pattern": "a"}
    _add_item_line(folder, json.dumps(item).encode())
    suite = load_suite(folder)
    assert suite.items[-1].question == question


HOSTILE = [
    ("interval too short", GOOD.encode() + b"schedule: {every: 1ms}\n", "schedule.every: must be at least"),
    ("infinite interval", GOOD.encode() + b"schedule: {every: .inf}\n", "schedule.every: must be from 0s"),
    ("nested too deep", GOOD.encode() + b"x: " + b"[" * 5000 + b"]" * 5000 + b"\n",
     "lists and mappings nested more than"),
    ("duplicate key", GOOD.encode() + b"suites: [probes/arithmetic]\n", "suites: duplicate key"),
    ("not UTF-8", GOOD.encode() + b"# \xff\n", "not UTF-8 text"),
]


@pytest.mark.parametrize(("raw", "expected"), [h[1:] for h in HOSTILE], ids=[h[0] for h in HOSTILE])
def test_validate_refuses_hostile_files_with_exit_2_and_no_traceback(tmp_path: Path, raw: bytes,
                                                                     expected: str) -> None:
    path = _policy(tmp_path, "")
    path.write_bytes(raw)
    result = runner.invoke(app, ["validate", "-c", str(path)], env={"COLUMNS": "300"})
    assert result.exit_code == 2 and f"{path}:7: {expected}" in result.output, result.output
    assert "Traceback" not in result.output and isinstance(result.exception, SystemExit)
