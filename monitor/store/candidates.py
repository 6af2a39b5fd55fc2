"""Candidates: versions registered while the monitor runs, to be judged before they take traffic.

A rollout (Argo Rollouts, Flagger) or a CI pipeline registers the version it is about to ship;
every replica's scheduler picks it up from the database, probes it at once on every suite, judges
it against the baseline and the live version, and from then on watches it like any version. The
retention gate (`monitor.judge.gate`) answers from those verdicts.

What arrives here comes from the network, so it is checked before anything is kept: the model
exists, the name is safe and new, the spec fits the model's backend, and a path sits under one of
the roots the policy allows (the monitor would load whatever weights it names).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import ValidationError
from sqlalchemy.exc import IntegrityError

from monitor.errors import CandidateError, StoreError
from monitor.policy.bounds import inside, name_problem
from monitor.policy.schema import Config, ModelSpec, VersionSpec
from monitor.store import ModelVersion, Store
from monitor.store.versions import with_made

SOURCE = "candidate"
FIELDS = ("path", "gguf_file", "served_name", "adapter", "description")


def register(store: Store, config: Config, model: str, body: dict[str, Any], actor: str) -> ModelVersion:
    """Check and keep one candidate: `body` is {"version": name, and path, gguf_file,
    served_name or adapter, with an optional description}."""
    spec = _model(config, model)
    name, version = _parse(body)
    _check_free(store, config, model, name)
    _check_fits(config, model, spec, version)
    if len(store.candidates(model)) >= spec.candidates.max:
        raise CandidateError(f"{model} already has {spec.candidates.max} candidates "
                             f"(models.{model}.candidates.max); remove one first")
    row = ModelVersion(model=model, version=name, source=f"{SOURCE}:{actor[:64]}",
                       spec=version.model_dump_json(exclude_defaults=True))
    try:
        return store.add_made_version(row)
    except (StoreError, IntegrityError) as exc:  # registered by another request meanwhile
        raise CandidateError(f"{model} already has a version '{name}'", conflict=True) from exc


def _model(config: Config, model: str) -> ModelSpec:
    if model not in config.models:
        raise CandidateError(f"no model '{model[:64]}' in the policy (models: {', '.join(config.models)})")
    return config.models[model]


def _parse(body: dict[str, Any]) -> tuple[str, VersionSpec]:
    if not isinstance(body, dict):
        raise CandidateError("the body must be a JSON object: {\"version\": ..., \"path\" | "
                             "\"served_name\" | \"adapter\" | \"gguf_file\": ...}")
    name = body.get("version")
    if not isinstance(name, str):
        raise CandidateError("'version' is required: the candidate's name, a string")
    problem = name_problem(name)
    if problem:
        raise CandidateError(f"version: {problem}")
    unknown = sorted(set(body) - {"version", *FIELDS})
    if unknown:
        raise CandidateError(f"unknown field(s) {', '.join(k[:40] for k in unknown)}; "
                             f"known: version, {', '.join(FIELDS)}")
    try:
        version = VersionSpec.model_validate({k: v for k, v in body.items() if k != "version"})
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "body"
        raise CandidateError(f"{where}: {first['msg']}") from None
    if len(version.description) > 500:
        raise CandidateError("description: at most 500 characters")
    return name, version


def _check_free(store: Store, config: Config, model: str, name: str) -> None:
    known = with_made(config, store).models[model].versions
    if name in known or any(r.version == name for r in store.versions_seen(model)):
        raise CandidateError(f"{model} already has a version '{name}': a candidate needs a new name, "
                             "so scores of different weights never share one", conflict=True)


def _check_fits(config: Config, model: str, spec: ModelSpec, version: VersionSpec) -> None:
    """The spec names something this model's backend can load, and nothing outside the roots."""
    if spec.backend.kind == "openai":
        if version.path or version.gguf_file:
            raise CandidateError(f"{model} is served (openai backend): give served_name or adapter, "
                                 "not a path")
        if not (version.served_name or version.adapter):
            raise CandidateError(f"{model} is served: give served_name or adapter")
        return
    given = version.path or version.gguf_file
    if not given:
        raise CandidateError(f"{model} runs in process: give the candidate's weights as path "
                             "(a transformers folder) or gguf_file")
    path = config.resolve(given)
    roots = _roots(config, model, spec)
    if not any(inside(root, path) for root in roots):
        shown = ", ".join(str(r) for r in roots) or "none configured"
        raise CandidateError(f"{given[:200]} is not under an allowed root ({shown}); add its folder "
                             f"to models.{model}.candidates.roots")
    if not path.exists():
        raise CandidateError(f"{given[:200]} does not exist on the monitor's machine")


def _roots(config: Config, model: str, spec: ModelSpec) -> list[Path]:
    if spec.candidates.roots:
        return [config.resolve(r) for r in spec.candidates.roots]
    folders = [config.resolve(v.path).parent for v in spec.versions.values() if v.path]
    if spec.retrain.output:
        folders.append(config.resolve(spec.retrain.output))
    return list(dict.fromkeys(folders))
