"""Candidates: versions registered while the monitor runs, to be judged before they take traffic.

A rollout (Argo Rollouts, Flagger) or a CI pipeline registers the version it is about to ship;
every replica's scheduler picks it up from the database, probes it at once on every suite, judges
it against the baseline and the live version, and from then on watches it like any version. The
retention gate (`monitor.judge.gate`) answers from those verdicts. Once shipped or abandoned it is
retired: no longer probed, its name kept so scores of other weights never take it.

What arrives here comes from the network, so it is checked before anything is kept: the model
exists, the name is safe, new and not one recovery retraining would make, the spec fits the
model's backend, and the weights sit under one of the roots the policy allows (the monitor loads
whatever they name). The path is kept resolved, so every replica loads what was checked, and
`monitor.store.versions` checks it against the roots again whenever it is loaded.
"""

from __future__ import annotations

import re
from typing import Any

from pydantic import ValidationError
from sqlalchemy.exc import IntegrityError

from monitor.errors import CandidateError, StoreError
from monitor.policy.bounds import file_name_problem, inside, name_problem
from monitor.policy.schema import Config, ModelSpec, VersionSpec
from monitor.store import ModelVersion, Store
from monitor.store.versions import candidate_roots
from monitor.vocabulary import CANDIDATE

FIELDS = ("path", "gguf_file", "served_name", "adapter", "description")
RECOVERED = re.compile(r".*-r[0-9]+$")  # the names recovery retraining gives what it makes
MAX_TEXT = 500


def register(store: Store, config: Config, model: str, body: Any, actor: str) -> ModelVersion:
    """Check and keep one candidate: `body` is {"version": name, and path (with gguf_file for a
    GGUF inside it), served_name or adapter, with an optional description}."""
    spec = _model(config, model)
    name, version = _parse(body)
    _check_free(store, config, model, name)
    version = _fitted(config, model, spec, version)
    if len(store.candidates(model)) >= spec.candidates.max:
        raise CandidateError(f"{model} already has {spec.candidates.max} candidates "
                             f"(models.{model}.candidates.max); retire one first: forgetmenot "
                             f"candidate retire {model} VERSION")
    row = ModelVersion(model=model, version=name, source=f"{CANDIDATE}:{actor[:64]}",
                       spec=version.model_dump_json(exclude_defaults=True))
    try:
        return store.add_made_version(row)
    except StoreError as exc:  # registered by another request meanwhile, or the database broke
        if "already has a version" in str(exc) or isinstance(exc.__cause__, IntegrityError):
            raise CandidateError(f"{model} already has a version '{name}'", status=409) from exc
        raise


def retire(store: Store, config: Config, model: str, version: str, actor: str) -> ModelVersion:
    """Stop watching a candidate; its name stays taken and its scores stay, as history. One that
    has been made live stays: it is what serves."""
    if model in config.models and store.live_version(config, model) == version:
        raise CandidateError(f"{model} {version} is live: move live first (forgetmenot rollback "
                             f"{model} --to VERSION), then retire it", status=409)
    row = store.retire_candidate(model, version, f"{CANDIDATE}-retired:{actor[:64]}")
    if row is None:
        raise CandidateError(f"{model} has no candidate '{version[:64]}'", status=404)
    return row


def _model(config: Config, model: str) -> ModelSpec:
    if model not in config.models:
        raise CandidateError(f"no model '{model[:64]}' in the policy (models: {', '.join(config.models)})")
    return config.models[model]


def _parse(body: Any) -> tuple[str, VersionSpec]:
    if not isinstance(body, dict):
        raise CandidateError("the body must be a JSON object: {\"version\": ..., \"path\" | "
                             "\"served_name\" | \"adapter\": ...}")
    name = body.get("version")
    if not isinstance(name, str):
        raise CandidateError("'version' is required: the candidate's name, a string")
    problem = name_problem(name)
    if problem:
        raise CandidateError(f"version: {problem}")
    if RECOVERED.fullmatch(name):
        raise CandidateError(f"version: names ending in -r<number> are kept for the versions recovery "
                             f"retraining makes; choose another than '{name}'")
    unknown = sorted(set(body) - {"version", *FIELDS})
    if unknown:
        raise CandidateError(f"unknown field(s) {', '.join(k[:40] for k in unknown)}; "
                             f"known: version, {', '.join(FIELDS)}")
    fields = {k: v for k, v in body.items() if k != "version"}
    for key, value in fields.items():
        if isinstance(value, str) and (len(value) > MAX_TEXT or any(ord(c) < 32 for c in value)):
            raise CandidateError(f"{key}: at most {MAX_TEXT} characters, no control characters")
    try:
        return name, VersionSpec.model_validate(fields)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "body"
        raise CandidateError(f"{where}: {first['msg']}") from None


def _check_free(store: Store, config: Config, model: str, name: str) -> None:
    """Free of the policy's names and of every row: versions measured, made or registered."""
    if name in config.models[model].versions or any(r.version == name for r in store.versions_seen(model)):
        raise CandidateError(f"{model} already has a version '{name}': a candidate needs a new name, "
                             "so scores of different weights never share one", status=409)


def _fitted(config: Config, model: str, spec: ModelSpec, version: VersionSpec) -> VersionSpec:
    """The spec as it will be kept: checked against the backend, its path resolved."""
    if spec.backend.kind == "openai":
        if version.path or version.gguf_file:
            raise CandidateError(f"{model} is served (openai backend): give served_name or adapter, "
                                 "not a path")
        if not (version.served_name or version.adapter):
            raise CandidateError(f"{model} is served: give served_name or adapter")
        return version
    if version.served_name or version.adapter:
        raise CandidateError(f"{model} runs in process: give path, not served_name or adapter")
    if not version.path:
        raise CandidateError(f"{model} runs in process: give the candidate's weights as path (a "
                             "transformers folder, or a folder with gguf_file naming the GGUF in it)")
    misnamed = file_name_problem(version.gguf_file) if version.gguf_file else None
    if misnamed:
        raise CandidateError(f"gguf_file: {misnamed}")
    folder = config.resolve(version.path).resolve()
    weights = folder / version.gguf_file if version.gguf_file else folder
    roots = candidate_roots(config, spec)
    if not any(inside(root, weights) for root in roots):
        shown = ", ".join(str(r) for r in roots) or "none configured"
        raise CandidateError(f"{version.path[:200]} is not under an allowed root ({shown}); add its "
                             f"folder to models.{model}.candidates.roots")
    if not weights.exists():
        raise CandidateError(f"{version.path[:200]} does not exist on the monitor's machine")
    return version.model_copy(update={"path": str(folder)})
