"""Recovery retraining: bring back what an alignment loss lost, without losing the fine-tune.

Alignment loss means the model still knows (multiple choice held) but stopped answering in prose;
a handful of examples of the old behaviour is usually enough to bring it back. So the ladder's
`retrain` step trains a small LoRA on the live version, on the *recovery split* of every failing
capability (never the probe split, which would make the gate that follows meaningless), mixed with
replay of the fine-tune's own data so the skill it was made for stays. The merged result is a new
version, registered in the database, probed on every suite, and judged like any other candidate:
it becomes live only if every counted capability PASSes against the baseline and the fine-tune's
target task keeps its score. Where it is rejected only because capabilities still fail by
alignment loss, another round trains with more examples for exactly those (`Recovery.again`), up to
the policy's budget; what never passes stays on disk for inspection and the alert says why.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, replace
from pathlib import Path

from monitor.actions.retrain.gate import Outcome, figures, gate, lacking
from monitor.actions.retrain.plan import Plan, capabilities_for, extend, plan, teach
from monitor.actions.retrain.record import RECORD, write_record
from monitor.actions.retrain.training import Steps, device_for, train, train_on
from monitor.errors import BackendError, RetrainFailed, RetrainRefused
from monitor.policy.bounds import inside
from monitor.policy.loading import load_suites
from monitor.policy.schema import Config
from monitor.probing import weights
from monitor.probing.factory import backend_for
from monitor.probing.version import Track
from monitor.store import Action, ModelVersion, Store
from monitor.store.versions import with_made
from monitor.vocabulary import ActionKind


@dataclass(frozen=True)
class Hooks:
    """How long work reports progress: `steps(total, label)` for training, `track` for probing;
    `hold()` is held around a round's work on the device (the monitor's device slot, so local
    retraining never shares a device with a probe run); `stopping()` says the monitor is stopping
    (work running elsewhere, on Ray, is cancelled)."""

    steps: Steps | None = None
    track: Track | None = None
    hold: Callable[[], AbstractContextManager[object]] = nullcontext
    stopping: Callable[[], bool] | None = None


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


class Recovery:
    """One recovery of `action.from_version`, round by round: the plan grows between rounds, and
    the baseline answers only the items each round adds.

    Every round retrains from the version being repaired, on every example so far plus the new
    ones, rather than continuing the last round's adapter: each candidate is then one LoRA on one
    known set of examples from the live version (what the audit row says is exactly what it was
    trained on), a later round cannot inherit an earlier one's damage to the target task, and the
    cost is a training of at most `max_examples` + replay examples, seconds to minutes.
    """

    def __init__(self, store: Store, config: Config, action: Action, hooks: Hooks | None = None) -> None:
        self.store, self.config, self.hooks = store, config, hooks or Hooks()
        self.model = action.model
        self.source = action.from_version or store.live_version(config, action.model)
        check(config, self.model)
        self.spec = config.models[self.model].retrain
        self.suites = load_suites(config)
        capabilities = capabilities_for(store, config, action)
        self.plan = plan(config, self.suites, self.model, capabilities, self._losses(capabilities))

    def attempt(self, action: Action) -> tuple[Config, Outcome]:
        """Train this round's LoRA, register the version, probe and gate it (as `action`)."""
        with self.hooks.hold():
            if self.spec.answers == "baseline":
                self.plan = self._taught(self.plan)
            name = f"{self.source}-r{action.id}"
            out = self._output(name)
            began = time.monotonic()
            trained = self._train(out)
            seconds = time.monotonic() - began
            self.store.add_made_version(ModelVersion(model=self.model, version=name,
                                                     source=ActionKind.RETRAIN, path=str(out),
                                                     parent=self.source, action_id=action.id))
            merged = with_made(self.config, self.store)
            outcome = gate(self.store, merged, self.suites, self.model, name, self.source, self.plan,
                           self.hooks.track)
        summary = f"round {self.plan.round}: {self.plan.describe()}; {trained} → {name}; {outcome.summary}"
        outcome = replace(outcome, summary=summary)
        write_record(out / RECORD, self.plan, outcome, seconds)
        return merged, outcome

    def _train(self, out: Path) -> str:
        """The LoRA, here or as a Ray task on a worker with the model's resources (which then
        writes `out` on the storage every worker shares with the monitor)."""
        start = weights.weights_dir(self.config, self.model, self.source)
        backend = self.config.models[self.model].backend
        try:
            if self.config.executor.kind == "ray":
                from monitor.probing import remote

                return remote.call(self.config, self.model, train_on, start, self.plan.examples(), self.spec,
                                   out, backend.device, backend.dtype, stopping=self.hooks.stopping)
            return train(start, self.plan.examples(), self.spec, out, device_for(backend.device),
                         self.hooks.steps, backend.dtype)
        except (RuntimeError, ValueError, OSError, BackendError) as exc:
            raise RetrainFailed(f"training {self.model}/{self.source} failed: "
                                f"{exc.__class__.__name__}: {exc}") from exc

    def again(self, outcome: Outcome) -> str | None:
        """Plan another round where the gate rejected only what more examples could fix and the
        budget allows; otherwise say why not (the plan stays as it was)."""
        if not outcome.retrainable():
            return "what still fails is not alignment loss that more examples could bring back"
        if self.plan.round >= self.spec.max_rounds:
            return f"max_rounds ({self.spec.max_rounds}) reached"
        following = extend(self.config, self.suites, self.model, self.plan, outcome.retry)
        if following is None:
            return (f"max_examples ({self.spec.max_examples}) spent or the failing suites' recovery "
                    "splits have no more items")
        self.plan = following
        return None

    def _losses(self, capabilities: Sequence[str]) -> dict[str, float]:
        """Points each failing suite lost on the version being repaired, against the baseline."""
        baseline = self.config.models[self.model].baseline
        found = {}
        for suite in self.suites:
            if suite.capability in capabilities:
                shown = figures(self.store, suite, self.model, baseline, self.source, self.source)
                if any(f.baseline is not None for f in shown):
                    found[suite.name] = lacking(shown)
        return found

    def _output(self, name: str) -> Path:
        root = (self.config.resolve(self.spec.output) if self.spec.output
                else weights.home() / "candidates" / self.model)
        out = root / name
        if not inside(root, out):  # names are checked by the policy; this holds even if one was not
            raise RetrainRefused(f"{out} is not inside {root}")
        if out.exists():
            raise RetrainRefused(f"{out} already exists; remove it or choose another retrain.output")
        return out

    def _taught(self, the_plan: Plan) -> Plan:
        """The baseline answers this round's new items, then is unloaded: it must not hold a
        second model's memory through the training and probing that follow."""
        baseline = self.config.models[self.model].baseline
        try:
            teacher = backend_for(self.config, self.model, baseline)
            try:
                return teach(the_plan, self.suites, teacher)
            finally:
                teacher.close()
        except BackendError as exc:
            raise RetrainFailed(f"the baseline {baseline} could not answer the recovery items: "
                                f"{exc}") from exc
