"""Load a policy file, or explain every way in which it is wrong.

Three layers, each reported with file, line and key: YAML syntax, the schema (`monitor.policy.schema`,
through `monitor.policy.parsing`), then the rules that span fields (a baseline must be a version, a
suite directory must exist and load, a policy must name a capability some suite measures), run on
whatever parsed so one pass reports all of them. Beside the errors, warnings about what loads but
cannot work as written (`monitor.policy.caveats`).
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from monitor.errors import ConfigError, Problem, SuiteError
from monitor.policy import caveats, parsing
from monitor.policy import positions as yamlpos
from monitor.policy.schema import Config
from monitor.policy.suites import Suite, load_suite
from monitor.vocabulary import Severity


@dataclass(frozen=True)
class Checked:
    """A policy file as `forgetmenot validate` sees it: the Config of what parsed (None when too
    little did; never to be used while there are errors), the suites that loaded, and every
    problem found in one pass, errors and warnings (`Problem.severity`)."""

    config: Config | None
    suites: list[Suite]
    problems: list[Problem]

    @property
    def errors(self) -> list[Problem]:
        return [p for p in self.problems if p.severity == Severity.ERROR]

    @property
    def warnings(self) -> list[Problem]:
        return [p for p in self.problems if p.severity == Severity.WARNING]


def load_config(path: Path | str, *, check_paths: bool = True) -> Config:
    """Parse and check `path`; raise ConfigError listing every problem found."""
    return load_policy(path, check_paths=check_paths)[0]


def load_policy(path: Path | str, *, check_paths: bool = True) -> tuple[Config, list[Suite]]:
    """`load_config`, and the suites it names as checking loaded them: a command that needs both
    reads, parses and hashes each suite once. Warnings never stop a policy loading."""
    checked = check_policy(path, check_paths=check_paths)
    if checked.errors or checked.config is None:
        raise ConfigError(checked.errors)
    return checked.config, checked.suites


def check_policy(path: Path | str, *, check_paths: bool = True) -> Checked:
    """Every problem with `path`, errors and warnings, without raising: the checks that span fields
    run on whatever parsed, beside the schema's errors."""
    path = Path(path)
    if not path.is_file():
        return Checked(None, [], [Problem(str(path), None, "", "policy file not found")])
    try:
        located = yamlpos.load(path)
    except ConfigError as exc:
        return Checked(None, [], exc.problems)
    if not isinstance(located.data, dict):
        return Checked(None, [], [located.problem((), "the policy file must be a mapping of keys")])
    parsed = parsing.parse(located)
    if parsed.config is None:
        return Checked(None, [], parsed.problems)
    config = parsed.config
    config._base_dir = path.parent.resolve()
    config._source = str(path)
    found, suites = _cross_field_problems(config, located, check_paths)
    found += caveats.warnings(config, suites, located)
    kept = [p for p in found if p.file != located.file or parsed.untouched(p)]
    return Checked(config, suites, [*parsed.problems, *kept])


def load_suites(config: Config) -> list[Suite]:
    return [load_suite(config.resolve(s)) for s in config.suites]


def _cross_field_problems(config: Config, located: yamlpos.Located,
                          check_paths: bool) -> tuple[list[Problem], list[Suite]]:
    problems = _version_problems(config, located, check_paths)
    suites, suite_problems = _suite_problems(config, located)
    problems += suite_problems
    problems += _capability_problems(config, located, suites)
    problems += _retrain_problems(config, located, suites, check_paths)
    problems += _database_problems(config, located)
    problems += _inline_credential_problems(config, located)
    problems += _schedule_problems(config, located)
    return problems, suites


def _inline_credential_problems(config: Config, located: yamlpos.Located) -> list[Problem]:
    """A password written into a URL would be committed, reviewed and shown with the file; the
    policy names where each credential is read instead."""
    urls: list[tuple[tuple[str, ...], str | None, str]] = [
        (("database",), config.database, "database_password")]
    for name, spec in config.models.items():
        urls += [(("models", name, "backend", "base_url"), spec.backend.base_url, "backend.api_key"),
                 (("models", name, "deployer", "url"), spec.deployer.url, "deployer.api_key")]
    if config.policy.alertmanager:
        urls.append((("policy", "alertmanager", "url"), config.policy.alertmanager.url, "token"))
    return [located.problem(loc, f"the URL carries a password; take it out and name where it is "
                                 f"read with {instead}: {{env: VARIABLE}} or {{file: PATH}}")
            for loc, url, instead in urls if url and _has_password(url)]


def _has_password(url: str) -> bool:
    from urllib.parse import urlsplit

    try:
        return bool(urlsplit(url).password)
    except ValueError:
        return False


def _schedule_problems(config: Config, located: yamlpos.Located) -> list[Problem]:
    """Replicas agree on a firing's slot only if jitter cannot push it half an interval away."""
    every, jitter = config.schedule.every, config.schedule.jitter
    if every is not None and jitter * 2 >= every:
        return [located.problem(("schedule", "jitter"), "must be under half of schedule.every")]
    if config.schedule.cron:
        return _cron_problems(config.schedule.cron, located)
    return []


def _cron_problems(cron: str, located: yamlpos.Located) -> list[Problem]:
    """Checked here, not first at `serve` start, where it would have stopped the monitor."""
    from apscheduler.triggers.cron import CronTrigger

    try:
        CronTrigger.from_crontab(cron)
    except ValueError as exc:
        return [located.problem(("schedule", "cron"), f"'{cron[:80]}' is not a crontab line "
                                f"(minute hour day month weekday, e.g. '*/15 * * * *'): {exc}")]
    return []


def choice_message(value: str, allowed: list[str], what: str) -> str:
    """'x' is not one of the WHAT (the allowed ones); with the close one, where there is one."""
    message = f"'{value}' is not one of the {what} ({', '.join(allowed)})"
    close = difflib.get_close_matches(value, allowed, n=1, cutoff=0.6)
    return f"{message}; did you mean '{close[0]}'?" if close else message


def _version_problems(config: Config, located: yamlpos.Located, check_paths: bool) -> list[Problem]:
    problems = []
    for name, model in config.models.items():
        versions = list(model.versions)
        for role in ("baseline", "live"):
            value = getattr(model, role)
            if value not in model.versions:
                loc = ("models", name, role)
                problems.append(located.problem(loc, choice_message(value, versions, "versions")))
        for version, spec in model.versions.items():
            problems += _version_source_problems(config, located, (name, version), spec, check_paths)
        if model.backend.kind == "openai":
            problems += _openai_problems(config, located, name, check_paths)
        if model.deployer.kind == "webhook" and not model.deployer.url:
            problems.append(located.problem(("models", name, "deployer", "url"),
                                            "the webhook deployer needs url"))
    return problems


def _openai_problems(config: Config, located: yamlpos.Located, name: str, check_paths: bool) -> list[Problem]:
    """A served model is measured where it is served: by URL and served name, not by weights."""
    model = config.models[name]
    backend = ("models", name, "backend")
    problems = []
    url = model.backend.base_url
    if not url:
        problems.append(located.problem((*backend, "base_url"), "the openai backend needs base_url"))
    elif not url.startswith(("http://", "https://")):
        problems.append(located.problem((*backend, "base_url"),
                                        f"'{url}' is not an http:// or https:// URL"))
    tokenizer = model.backend.tokenizer
    if check_paths and tokenizer and not config.resolve(tokenizer).exists():
        problems.append(located.problem((*backend, "tokenizer"),
                                        f"{config.resolve(tokenizer)} does not exist"))
    for version, spec in model.versions.items():
        if not (spec.served_name or spec.adapter):
            problems.append(located.problem(
                ("models", name, "versions", version),
                "with the openai backend a version is a served_name or a LoRA adapter name on the server"))
    return problems


def _version_source_problems(config: Config, located: yamlpos.Located, key: tuple[str, str],
                             spec: Any, check_paths: bool) -> list[Problem]:
    loc = ("models", key[0], "versions", key[1])
    if not (spec.path or spec.served_name or spec.adapter or spec.image):
        return [located.problem(loc, "a version needs path (weights), served_name, adapter or image")]
    if check_paths and spec.path and not config.resolve(spec.path).exists():
        return [located.problem((*loc, "path"), f"{config.resolve(spec.path)} does not exist")]
    return []


def _suite_problems(config: Config, located: yamlpos.Located) -> tuple[list[Suite], list[Problem]]:
    suites, problems = [], []
    for index, entry in enumerate(config.suites):
        directory = config.resolve(entry)
        if not directory.is_dir():
            problems.append(located.problem(("suites", index), f"suite directory {directory} not found"))
            continue
        try:
            suites.append(load_suite(directory))
        except SuiteError as exc:
            problems += exc.problems
    return suites, problems


def _retrain_problems(config: Config, located: yamlpos.Located, suites: list[Suite],
                      check_paths: bool) -> list[Problem]:
    problems = []
    names = sorted(s.name for s in suites)
    for model, spec in config.models.items():
        loc = ("models", model, "retrain")
        target = spec.retrain.target_suite
        if target and len(suites) == len(config.suites) and target not in names:
            problems.append(located.problem((*loc, "target_suite"),
                                            choice_message(target, names, "suites")))
        replay = spec.retrain.replay
        if check_paths and replay and not config.resolve(replay).is_file():
            problems.append(located.problem((*loc, "replay"), f"{config.resolve(replay)} does not exist"))
    return problems


def _capability_problems(config: Config, located: yamlpos.Located, suites: list[Suite]) -> list[Problem]:
    if len(suites) != len(config.suites):
        return []  # a missing suite was already reported; its capability is unknown
    measured = sorted({s.capability for s in suites})
    return [
        located.problem(("policy", "capabilities", name),
                        choice_message(name, measured, "capabilities the suites measure"))
        for name in config.policy.capabilities
        if name not in measured
    ]


def _database_problems(config: Config, located: yamlpos.Located) -> list[Problem]:
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    try:
        url = make_url(config.database)
    except ArgumentError:
        return [located.problem(("database",), f"'{config.database}' is not a database URL")]
    if url.get_backend_name() not in ("sqlite", "postgresql"):
        return [located.problem(("database",), "use sqlite:///FILE or postgresql+psycopg://...")]
    return []
