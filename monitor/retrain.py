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

import json
import random
import shutil
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from monitor import finetune, models
from monitor.config import Config, RetrainSpec
from monitor.errors import ForgetmenotError
from monitor.judge import JudgeError, judge_suite
from monitor.probing import VersionRef
from monitor.runner import Track, probe_version
from monitor.store import Action, ModelVersion, Store
from monitor.suites import Suite, render
from monitor.validate import load_suites
from monitor.versions import with_made

Pair = tuple[str, str]
Steps = Callable[[int, str], Callable[[int, float], None]]


class RetrainRefused(ForgetmenotError):
    """Retraining cannot run as configured; nothing was built."""


class RetrainFailed(ForgetmenotError):
    """Training itself broke (out of memory, bad weights); nothing was registered."""


@dataclass(frozen=True)
class Hooks:
    """How long work reports progress: `steps(total, label)` for training, `track` for probing."""

    steps: Steps | None = None
    track: Track | None = None


@dataclass(frozen=True)
class Plan:
    capabilities: tuple[str, ...]
    recovery: dict[str, list[Pair]]  # suite name → pairs from its recovery split
    replay: list[Pair]

    def examples(self) -> list[Pair]:
        return [p for pairs in self.recovery.values() for p in pairs] + self.replay

    def describe(self) -> str:
        parts = ", ".join(f"{suite} {len(pairs)}" for suite, pairs in self.recovery.items())
        total = sum(len(p) for p in self.recovery.values())
        return f"{total} recovery examples ({parts}) + {len(self.replay)} replay examples"


@dataclass(frozen=True)
class Figure:
    """One kind of one suite: baseline, the version retrained from, and the retrained candidate."""

    suite: str
    kind: str
    baseline: float | None
    before: float | None
    after: float | None

    def recovered(self) -> float | None:
        """Share of the lost score brought back (None when nothing was lost)."""
        if None in (self.baseline, self.before, self.after):
            return None
        lost = self.baseline - self.before  # type: ignore[operator]
        return (self.after - self.before) / lost if lost > 0.005 else None  # type: ignore[operator]


@dataclass(frozen=True)
class Outcome:
    version: str
    summary: str
    problems: list[str]
    figures: list[Figure] = field(default_factory=list)
    target: list[Figure] = field(default_factory=list)


# -- what to train on -------------------------------------------------------------------------


def plan(config: Config, suites: Sequence[Suite], model: str, capabilities: Sequence[str]) -> Plan:
    """Recovery examples spread evenly over the failing capabilities' suites, up to max_examples."""
    spec = config.models[model].retrain
    pools = {s.name: recovery_pairs(s, spec.seed) for s in suites if s.capability in capabilities}
    chosen: dict[str, list[Pair]] = {name: [] for name, pool in pools.items() if pool}
    while sum(map(len, chosen.values())) < spec.max_examples and any(
            len(chosen[n]) < len(pools[n]) for n in chosen):
        for name in chosen:
            if len(chosen[name]) < len(pools[name]) and sum(map(len, chosen.values())) < spec.max_examples:
                chosen[name].append(pools[name][len(chosen[name])])
    if not chosen:
        raise RetrainRefused(f"no recovery items to train on for {', '.join(capabilities)}: their suites' "
                             "recovery splits are empty or have no answers (split.recovery_fraction)")
    replay = replay_pairs(config.resolve(spec.replay), spec.replay_examples, spec.seed) if spec.replay else []
    return Plan(tuple(capabilities), chosen, replay)


def recovery_pairs(suite: Suite, seed: int) -> list[Pair]:
    """(prompt, answer) from the recovery split, asked the way the suite's generation asks it."""
    kinds = suite.spec.kinds
    pairs = []
    for item in suite.select("recovery"):
        targets = item.targets()
        if kinds.generate_until and targets:
            pairs.append((render(kinds.generate_until.doc_to_text, item), targets[0]))
        elif kinds.multiple_choice and item.choices and item.gold is not None:
            pairs.append((render(kinds.multiple_choice.doc_to_text, item), item.choices[item.gold]))
    random.Random(seed).shuffle(pairs)
    return pairs


def replay_pairs(path: Path, count: int, seed: int) -> list[Pair]:
    """A seeded sample of the fine-tune's data: JSONL lines of {"prompt": ..., "answer": ...}."""
    pairs = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
            pairs.append((str(row["prompt"]), str(row["answer"])))
        except (json.JSONDecodeError, KeyError, TypeError) as exc:
            raise RetrainRefused(f"{path}:{number}: a replay line must be a JSON object with prompt and "
                                 f"answer ({exc.__class__.__name__}: {exc})") from exc
    random.Random(seed).shuffle(pairs)
    return pairs[:count]


def write_replay(pairs: Sequence[Pair], path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    lines = (json.dumps({"prompt": p, "answer": a}) + "\n" for p, a in pairs)
    path.write_text("".join(lines), encoding="utf-8")
    return path


# -- training ---------------------------------------------------------------------------------


def device_for(requested: str) -> str:
    import torch

    if requested != "auto":
        return requested
    return "cuda" if torch.cuda.is_available() else "cpu"


def train(weights: Path, pairs: Sequence[Pair], spec: RetrainSpec, out: Path, device: str,
          steps: Steps | None = None) -> str:
    """LoRA on `weights`; writes merged weights to `out` (and the adapter to `out/adapter`)."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    began = time.monotonic()
    dtype = torch.bfloat16 if device.startswith("cuda") and torch.cuda.is_bf16_supported() else torch.float32
    tokenizer = AutoTokenizer.from_pretrained(weights)
    base: Any = AutoModelForCausalLM.from_pretrained(weights, dtype=dtype)
    base = base.to(device)
    lora = LoraConfig(r=spec.rank, lora_alpha=spec.alpha, target_modules="all-linear", lora_dropout=0.0,
                      task_type="CAUSAL_LM")
    model = get_peft_model(base, lora)
    settings = finetune.TrainSettings(epochs=spec.epochs, batch_size=spec.batch_size,
                                      learning_rate=spec.learning_rate, seed=spec.seed)
    advance = steps(finetune.steps_for(pairs, settings), "recovery LoRA") if steps else None
    loss = finetune.fine_tune(model, tokenizer, pairs, settings, advance)
    partial = out.with_name(out.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    model.save_pretrained(str(partial / "adapter"))
    finetune.save(model.merge_and_unload(), tokenizer, partial)
    partial.rename(out)  # config.json present under `out` only once everything is written
    return (f"LoRA r{spec.rank} on {len(pairs)} examples, {spec.epochs} epochs on {device}, "
            f"{time.monotonic() - began:.0f} s, last loss {loss:.3f}")


# -- the whole step ---------------------------------------------------------------------------


def capabilities_for(store: Store, config: Config, action: Action) -> list[str]:
    """The action's capability and every other one now failing on the live version whose ladder
    retrains: one LoRA for all of them, since a candidate fixing one would fail the gate on the rest."""
    from monitor.actions import triggers

    found = [action.capability] if action.capability else []
    for trigger in triggers(store, config, action.model):
        if "retrain" in trigger.steps and trigger.verdict.capability not in found:
            found.append(trigger.verdict.capability)
    return found


def check(config: Config, model: str) -> None:
    spec = config.models[model]
    if spec.backend.kind != "transformers":
        raise RetrainRefused(f"{model} is measured through a server (backend {spec.backend.kind}); "
                             "retraining needs the weights in process to train and to judge the result alike")
    if spec.deployer.kind == "vllm-lora":
        raise RetrainRefused(f"{model} is deployed as vLLM adapters; retraining makes merged weights, "
                             "which that deployer cannot serve")


def recover(store: Store, config: Config, action: Action,
            hooks: Hooks | None = None) -> tuple[Config, Outcome]:
    """Train, register, probe and judge a recovered version of `action.from_version`."""
    hooks = hooks or Hooks()
    model, source = action.model, action.from_version or config.models[action.model].live
    check(config, model)
    suites = load_suites(config)
    the_plan = plan(config, suites, model, capabilities_for(store, config, action))
    spec = config.models[model].retrain
    name = f"{source}-r{action.id}"
    out = (config.resolve(spec.output) if spec.output else models.home() / "candidates" / model) / name
    if out.exists():
        raise RetrainRefused(f"{out} already exists; remove it or choose another retrain.output")
    weights = models.weights_dir(config, model, source)
    try:
        device = device_for(config.models[model].backend.device)
        trained = train(weights, the_plan.examples(), spec, out, device, hooks.steps)
    except (RuntimeError, ValueError, OSError) as exc:
        raise RetrainFailed(f"training {model}/{source} failed: {exc.__class__.__name__}: {exc}") from exc
    store.add_made_version(ModelVersion(model=model, version=name, source="retrain", path=str(out),
                                        parent=source, action_id=action.id))
    merged = with_made(config, store)
    outcome = _gate(store, merged, suites, model, name, source, the_plan, hooks)
    summary = f"{the_plan.describe()}; {trained} → {name}; {outcome.summary}"
    return merged, Outcome(name, summary, outcome.problems, outcome.figures, outcome.target)


def _gate(store: Store, config: Config, suites: Sequence[Suite], model: str, name: str, source: str,
          the_plan: Plan, hooks: Hooks) -> Outcome:
    baseline = config.models[model].baseline
    _measured(store, config, model, baseline, suites, hooks)
    probe_version(store, VersionRef(model, name), suites, lambda: models.backend_for(config, model, name),
                  track=hooks.track)
    problems = []
    for suite in suites:
        rules = config.policy.rules_for(suite.capability)
        try:
            judgement, _ = judge_suite(store, suite, rules, model, name, baseline)
        except JudgeError as exc:
            problems.append(f"{suite.capability}: not judged ({exc})")
            continue
        if not rules.muted and judgement.phase != "PASS":
            problems.append(f"{suite.capability} {judgement.phase} against {baseline}: {judgement.reason}")
    restored = [f for s in suites if s.capability in the_plan.capabilities
                for f in figures(store, s, model, baseline, source, name)]
    target = _target(store, config, suites, model, source, name, hooks)
    limit = config.models[model].retrain.target_max_drop
    for fig in target:
        if fig.before is not None and fig.after is not None and fig.before - fig.after > limit:
            problems.append(f"target {fig.suite} {fig.kind} fell {fig.before:.1%} → {fig.after:.1%}, "
                            f"more than {limit:.0%}")
    words = [_words(f) for f in restored] + [f"target {_words(f)}" for f in target]
    return Outcome(name, "; ".join(words), problems, restored, target)


def _target(store: Store, config: Config, suites: Sequence[Suite], model: str, source: str, name: str,
            hooks: Hooks) -> list[Figure]:
    wanted = config.models[model].retrain.target_suite
    suite = next((s for s in suites if s.name == wanted), None)
    if suite is None:
        return []
    _measured(store, config, model, source, [suite], hooks)
    return [Figure(f.suite, f.kind, None, f.before, f.after)
            for f in figures(store, suite, model, None, source, name)]


def _measured(store: Store, config: Config, model: str, version: str, suites: Sequence[Suite],
              hooks: Hooks) -> None:
    """Make sure `version` has a run of each suite to compare with, measuring only what is missing."""
    backend = config.models[model].backend
    probe_version(store, VersionRef(model, version), suites,
                  lambda: models.backend_for(config, model, version),
                  reuse_on=(backend.kind, backend.dtype), track=hooks.track)


def figures(store: Store, suite: Suite, model: str, baseline: str | None, source: str,
             name: str) -> list[Figure]:
    def scores(version: str | None) -> dict[str, float | None]:
        runs = [r for r in store.finished_runs(model, version, suite.content_hash)
                if r.status == "complete"] if version else []
        if not runs or runs[-1].id is None:
            return {}
        return {s.kind: s.mean_score for s in store.summaries([runs[-1].id])[runs[-1].id]}

    base, before, after = scores(baseline), scores(source), scores(name)
    return [Figure(suite.name, kind, base.get(kind), before.get(kind), after.get(kind))
            for kind in suite.kinds if kind in after]


def _words(fig: Figure) -> str:
    def pct(value: float | None) -> str:
        return "?" if value is None else f"{value:.1%}"

    values = ([fig.baseline] if fig.baseline is not None else []) + [fig.before, fig.after]
    chain = " → ".join(pct(v) for v in values)
    recovered = fig.recovered()
    return f"{fig.suite} {fig.kind} {chain}" + (f" ({recovered:.0%} of the loss recovered)"
                                               if recovered is not None else "")
