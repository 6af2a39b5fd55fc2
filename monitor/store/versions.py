"""A model's versions: the policy file's, and those the monitor built itself.

Recovery retraining makes new versions while the monitor runs; they are recorded in the database
(`model_version` rows with a path), not written into the ML lead's YAML. Everything that resolves
a version (loading weights, choosing a rollback target, the live job) works on the policy with
these merged in, each listed right after the version it was made from, so "an earlier version"
keeps meaning what it says.
"""

from __future__ import annotations

from monitor.policy.schema import Config, VersionSpec
from monitor.store import ModelVersion, Store


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
    for row in rows:
        spec = models.get(row.model)
        version = _spec(row)
        if spec is None or row.version in spec.versions or version is None:
            continue
        models[row.model] = spec.model_copy(update={"versions": _after(spec.versions, row.parent,
                                                                        row.version, version)})
    return config.model_copy(update={"models": models})  # keeps the file's base dir


def _spec(row: ModelVersion) -> VersionSpec | None:
    if row.spec is not None:
        return VersionSpec.model_validate_json(row.spec)
    if row.path is not None:
        return VersionSpec(path=row.path, description=f"recovered from {row.parent} by action "
                           f"{row.action_id}")
    return None
