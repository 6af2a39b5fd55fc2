"""Recovery retraining: bring back what an alignment loss lost, without losing the fine-tune.

Alignment loss means the model still knows (multiple choice held) but stopped answering in prose;
a handful of examples of the old behaviour is usually enough to bring it back. So the ladder's
`retrain` step trains a small LoRA on the live version, on the *recovery split* of every failing
capability (never the probe split, which would make the gate that follows meaningless), mixed with
replay of the fine-tune's own data so the skill it was made for stays. The merged result is a new
version, registered in the database, probed on every suite, and judged like any other candidate:
it becomes live only if every counted capability PASSes against the baseline and the fine-tune's
target task keeps its score. Otherwise it stays on disk for inspection and the alert says why.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from monitor.actions.retrain.gate import Outcome, gate
from monitor.actions.retrain.plan import Plan, capabilities_for, plan, teach
from monitor.actions.retrain.training import Steps, device_for, train
from monitor.errors import BackendError, RetrainFailed, RetrainRefused
from monitor.policy.bounds import inside
from monitor.policy.loading import load_suites
from monitor.policy.schema import Config
from monitor.policy.suites import Suite
from monitor.probing import weights
from monitor.probing.factory import backend_for
from monitor.probing.version import Track
from monitor.store import Action, ModelVersion, Store
from monitor.store.versions import with_made
from monitor.vocabulary import ActionKind


@dataclass(frozen=True)
class Hooks:
    """How long work reports progress: `steps(total, label)` for training, `track` for probing."""

    steps: Steps | None = None
    track: Track | None = None


def check(config: Config, model: str) -> None:
    """Refuse, with the reason, what retraining could not judge alike or its result could not serve."""
    from monitor.actions.deployers import DEPLOYERS

    spec = config.models[model]
    if spec.backend.kind != "transformers":
        raise RetrainRefused(f"{model} is measured through a server (backend {spec.backend.kind}); "
                             "retraining needs the weights in process to train and to judge the result alike")
    deployer = DEPLOYERS[spec.deployer.kind]
    if not deployer.merged_weights:
        raise RetrainRefused(f"{model} is {deployer.why_not}")


def recover(store: Store, config: Config, action: Action,
            hooks: Hooks | None = None) -> tuple[Config, Outcome]:
    """Train, register, probe and judge a recovered version of `action.from_version`."""

    hooks = hooks or Hooks()
    model, source = action.model, action.from_version or store.live_version(config, action.model)
    check(config, model)
    suites = load_suites(config)
    the_plan = plan(config, suites, model, capabilities_for(store, config, action))
    spec = config.models[model].retrain
    if spec.answers == "baseline":
        the_plan = _taught(config, model, suites, the_plan)
    name = f"{source}-r{action.id}"
    root = config.resolve(spec.output) if spec.output else weights.home() / "candidates" / model
    out = root / name
    if not inside(root, out):  # names are checked by the policy; this holds even if one was not
        raise RetrainRefused(f"{out} is not inside {root}")
    if out.exists():
        raise RetrainRefused(f"{out} already exists; remove it or choose another retrain.output")
    start = weights.weights_dir(config, model, source)
    try:
        backend = config.models[model].backend
        trained = train(start, the_plan.examples(), spec, out, device_for(backend.device), hooks.steps,
                        backend.dtype)
    except (RuntimeError, ValueError, OSError) as exc:
        raise RetrainFailed(f"training {model}/{source} failed: {exc.__class__.__name__}: {exc}") from exc
    store.add_made_version(ModelVersion(model=model, version=name, source=ActionKind.RETRAIN,
                                        path=str(out), parent=source, action_id=action.id))
    merged = with_made(config, store)
    outcome = gate(store, merged, suites, model, name, source, the_plan, hooks.track)
    summary = f"{the_plan.describe()}; {trained} → {name}; {outcome.summary}"
    return merged, Outcome(name, summary, outcome.problems, outcome.figures, outcome.target)


def _taught(config: Config, model: str, suites: Sequence[Suite], the_plan: Plan) -> Plan:
    baseline = config.models[model].baseline
    try:
        teacher = backend_for(config, model, baseline)
        try:
            return teach(the_plan, suites, teacher)
        finally:
            teacher.close()
    except BackendError as exc:
        raise RetrainFailed(f"the baseline {baseline} could not answer the recovery items: {exc}") from exc
