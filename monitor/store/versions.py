"""A model's versions: the policy file's, those the monitor built itself, and candidates.

Recovery retraining makes new versions while the monitor runs; they are recorded in the database
(`model_version` rows with a path), not written into the ML lead's YAML. Candidates registered for
the retention gate are too (rows with a JSON spec). Everything that resolves a version (loading
weights, choosing a rollback target, the live job) works on the policy with these merged in: each
made version right after the version it was made from, so "an earlier version" keeps meaning what
it says, and candidates after all of them, so a rollback never lands on one.
"""

from __future__ import annotations

import logging
from pathlib import Path

from pydantic import ValidationError

from monitor.policy.bounds import inside
from monitor.policy.schema import Config, ModelSpec, VersionSpec
from monitor.store import ModelVersion, Store

log = logging.getLogger(__name__)


def _after(versions: dict[str, VersionSpec], parent: str | None, name: str,
           spec: VersionSpec) -> dict[str, VersionSpec]:
    """`name` placed after `parent` and its earlier descendants, so a rollback from it never
    lands on a release newer than the one it was made from."""
    names = list(versions)
    at = len(names)
    if parent in versions:
        at = names.index(parent) + 1
        while at < len(names) and names[at].startswith(f"{parent}-r"):
            at += 1
    ordered = [*names[:at], name, *names[at:]]
    return {n: spec if n == name else versions[n] for n in ordered}


def with_made(config: Config, store: Store) -> Config:
    """`config` with every version the monitor built, and every candidate registered at runtime,
    added to its model (the file's win on a clash, which `add_made_version` prevents anyway).
    Candidates go last: they are newer than anything a rollback may land on."""
    rows = store.added_versions()
    if not rows:
        return config
    models = dict(config.models)
    for row in sorted(rows, key=lambda r: r.spec is not None):  # made first, candidates last
        spec = models.get(row.model)
        if spec is None or row.version in spec.versions:
            continue
        version = _spec(config, row)
        if version is None:
            continue
        models[row.model] = spec.model_copy(update={"versions": _after(spec.versions, row.parent,
                                                                        row.version, version)})
    return config.model_copy(update={"models": models})  # keeps the file's base dir


def candidate_roots(config: Config, spec: ModelSpec) -> list[Path]:
    """Where a candidate's weights may be: `candidates.roots`, else the folders holding the
    policy's own version paths and retrain's output. Never the filesystem's root."""
    given = spec.candidates.roots or [
        *(str(Path(v.path).parent) for v in spec.versions.values() if v.path),
        *([spec.retrain.output] if spec.retrain.output else [])]
    roots = [config.resolve(r).resolve() for r in given]
    return [r for r in dict.fromkeys(roots) if r != Path(r.anchor)]


def _spec(config: Config, row: ModelVersion) -> VersionSpec | None:
    """A row's version spec; None for a candidate whose spec no longer reads (written by another
    release) or whose weights are no longer under the allowed roots (a symlink moved since)."""
    if row.spec is not None:
        try:
            spec = VersionSpec.model_validate_json(row.spec)
        except ValidationError as exc:
            log.error("candidate %s/%s is skipped: its stored spec does not read: %s", row.model,
                      row.version, str(exc).splitlines()[0])
            return None
        model = config.models[row.model]
        if spec.path and not any(inside(root, config.resolve(spec.path) / (spec.gguf_file or ""))
                                 for root in candidate_roots(config, model)):
            log.error("candidate %s/%s is skipped: %s is no longer under an allowed root", row.model,
                      row.version, spec.path)
            return None
        return spec
    if row.path is not None:
        return VersionSpec(path=row.path, description=f"recovered from {row.parent} by action "
                           f"{row.action_id}")
    return None
