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
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from monitor.actions.retrain import sft as finetune
from monitor.errors import BackendError, RetrainFailed, RetrainRefused
from monitor.judge import JudgeError, judge_runs, judge_suite
from monitor.policy.loading import load_suites
from monitor.policy.schema import Config, RetrainSpec, Rules
from monitor.policy.suites import Item, Suite, generation_correct, render
from monitor.probing import weights as models
from monitor.probing.backends.base import Backend, GenerationRequest
from monitor.probing.run import VersionRef
from monitor.probing.version import Track, probe_version
from monitor.store import Action, ModelVersion, Run, Store
from monitor.store.versions import with_made
from monitor.vocabulary import Kind, Phase, RunStatus, Split

Pair = tuple[str, str]
Steps = Callable[[int, str], Callable[[int, float], None]]


@dataclass(frozen=True)
class Hooks:
    """How long work reports progress: `steps(total, label)` for training, `track` for probing."""

    steps: Steps | None = None
    track: Track | None = None


@dataclass(frozen=True)
class Example:
    """One recovery item as a chat exchange; `taught` when the answer is the baseline's own words."""

    item: Item
    prompt: str
    answer: str
    taught: bool = False


@dataclass(frozen=True)
class Plan:
    capabilities: tuple[str, ...]
    recovery: dict[str, list[Example]]  # suite name → examples from its recovery split
    replay: list[Pair]

    def examples(self) -> list[Pair]:
        return [(e.prompt, e.answer) for found in self.recovery.values() for e in found] + self.replay

    def describe(self) -> str:
        parts = ", ".join(f"{suite} {len(found)}" for suite, found in self.recovery.items())
        total = sum(len(found) for found in self.recovery.values())
        taught = sum(e.taught for found in self.recovery.values() for e in found)
        words = f"; {taught} in the baseline's own words" if taught else ""
        return f"{total} recovery examples ({parts}{words}) + {len(self.replay)} replay examples"


@dataclass(frozen=True)
class Figure:
    """One kind of one suite: baseline, the version retrained from, and the retrained candidate."""

    suite: str
    kind: str
    baseline: float | None
    before: float | None
    after: float | None

    def recovered(self) -> float | None:
        """Share of the lost accuracy brought back; None where under 5 points were lost (a share of
        noise means nothing) and for fluency, which is not an accuracy."""
        if None in (self.baseline, self.before, self.after) or self.kind == Kind.LOGLIKELIHOOD_ROLLING:
            return None
        lost = self.baseline - self.before  # type: ignore[operator]
        return (self.after - self.before) / lost if lost >= 0.05 else None  # type: ignore[operator]


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
    pools = {s.name: recovery_examples(s, spec.seed) for s in suites if s.capability in capabilities}
    chosen: dict[str, list[Example]] = {name: [] for name, pool in pools.items() if pool}
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


def recovery_examples(suite: Suite, seed: int) -> list[Example]:
    """The recovery split, asked the way the suite's generation asks it, answered with the gold
    target (until `teach` puts the baseline's own answer in its place)."""
    kinds = suite.spec.kinds
    found = []
    for item in suite.select(Split.RECOVERY):
        targets = item.targets()
        if kinds.generate_until and targets:
            found.append(Example(item, render(kinds.generate_until.doc_to_text, item), targets[0]))
        elif kinds.multiple_choice and item.choices and item.gold is not None:
            prompt = render(kinds.multiple_choice.doc_to_text, item)
            found.append(Example(item, prompt, item.choices[item.gold]))
    random.Random(seed).shuffle(found)
    return found


def teach(the_plan: Plan, suites: Sequence[Suite], teacher: Backend) -> Plan:
    """Put the baseline's own answer in place of the gold target wherever the baseline got the item
    right. Recovery should bring back the old behaviour, not teach a new one: trained on bare
    targets ("Paris"), the demo model learnt to answer in one word and got fewer answers right."""
    by_name = {s.name: s for s in suites}
    taught: dict[str, list[Example]] = {}
    for name, examples in the_plan.recovery.items():
        spec = by_name[name].spec.kinds.generate_until
        if spec is None:
            taught[name] = examples
            continue
        asked = [GenerationRequest(e.prompt, spec.max_new_tokens * 2, spec.until, spec.system_prompt)
                 for e in examples]
        answers = teacher.generate(asked)
        taught[name] = [replace(e, answer=a.strip(), taught=True)
                        if a.strip() and generation_correct(e.item, spec, a) else e
                        for e, a in zip(examples, answers, strict=True)]
    return replace(the_plan, recovery=taught)


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
          steps: Steps | None = None, dtype_name: str = "auto") -> str:
    """LoRA on `weights`; writes merged weights to `out` (and the adapter to `out/adapter`).
    Nothing is left behind if it breaks part way, and GPU memory is handed back either way."""
    import torch

    partial = out.with_name(out.name + ".partial")
    try:
        return _train(weights, pairs, spec, out, partial, device, steps, _dtype(device, dtype_name))
    except BaseException:
        shutil.rmtree(partial, ignore_errors=True)
        raise
    finally:
        if device.startswith("cuda"):
            torch.cuda.empty_cache()


def _dtype(device: str, name: str) -> Any:
    """The policy's dtype, else bf16 on a GPU that has it and float32 elsewhere."""
    import torch

    if name != "auto":
        return getattr(torch, name)
    return torch.bfloat16 if device.startswith("cuda") and torch.cuda.is_bf16_supported() else torch.float32


def _train(weights: Path, pairs: Sequence[Pair], spec: RetrainSpec, out: Path, partial: Path, device: str,
           steps: Steps | None, dtype: Any) -> str:
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    began = time.monotonic()
    tokenizer = AutoTokenizer.from_pretrained(weights)
    base: Any = AutoModelForCausalLM.from_pretrained(weights, dtype=dtype)
    base = base.to(device)
    lora = LoraConfig(r=spec.rank, lora_alpha=spec.alpha, target_modules="all-linear", lora_dropout=0.0,
                      task_type="CAUSAL_LM")
    torch.manual_seed(spec.seed)  # the LoRA's initial weights: the same inputs give the same version
    model = get_peft_model(base, lora)
    settings = finetune.TrainSettings(epochs=spec.epochs, batch_size=spec.batch_size,
                                      learning_rate=spec.learning_rate, seed=spec.seed)
    advance = steps(finetune.steps_for(pairs, settings), "recovery LoRA") if steps else None
    loss = finetune.fine_tune(model, tokenizer, pairs, settings, advance)
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
    from monitor.actions.triggers import triggers

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
    if spec.deployer.kind == "kubernetes":
        raise RetrainRefused(f"{model} is deployed on Kubernetes by image; retraining makes weights on the "
                             "monitor's disk, and building an image from them is not forgetmenot's job")


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
    out = (config.resolve(spec.output) if spec.output else models.home() / "candidates" / model) / name
    if out.exists():
        raise RetrainRefused(f"{out} already exists; remove it or choose another retrain.output")
    weights = models.weights_dir(config, model, source)
    try:
        backend = config.models[model].backend
        trained = train(weights, the_plan.examples(), spec, out, device_for(backend.device), hooks.steps,
                        backend.dtype)
    except (RuntimeError, ValueError, OSError) as exc:
        raise RetrainFailed(f"training {model}/{source} failed: {exc.__class__.__name__}: {exc}") from exc
    store.add_made_version(ModelVersion(model=model, version=name, source="retrain", path=str(out),
                                        parent=source, action_id=action.id))
    merged = with_made(config, store)
    outcome = _gate(store, merged, suites, model, name, source, the_plan, hooks)
    summary = f"{the_plan.describe()}; {trained} → {name}; {outcome.summary}"
    return merged, Outcome(name, summary, outcome.problems, outcome.figures, outcome.target)


def _taught(config: Config, model: str, suites: Sequence[Suite], the_plan: Plan) -> Plan:
    baseline = config.models[model].baseline
    try:
        teacher = models.backend_for(config, model, baseline)
        try:
            return teach(the_plan, suites, teacher)
        finally:
            close = getattr(teacher, "close", None)
            if close is not None:
                close()
    except BackendError as exc:
        raise RetrainFailed(f"the baseline {baseline} could not answer the recovery items: {exc}") from exc


def _gate(store: Store, config: Config, suites: Sequence[Suite], model: str, name: str, source: str,
          the_plan: Plan, hooks: Hooks) -> Outcome:
    baseline = config.models[model].baseline
    _measured(store, config, model, baseline, suites, hooks)
    probe_version(store, VersionRef(model, name), suites, lambda: models.backend_for(config, model, name),
                  track=hooks.track)
    accepted = (Phase.PASS,) if config.models[model].retrain.promote_when == "pass" else (Phase.PASS, Phase.INCONCLUSIVE)
    problems = []
    for suite in suites:
        rules = config.policy.rules_for(suite.capability)
        try:
            judgement, _ = judge_suite(store, suite, rules, model, name, baseline)
        except JudgeError as exc:
            problems.append(f"{suite.capability}: not judged ({exc})")
            continue
        if not rules.muted and judgement.phase not in accepted:
            problems.append(f"{suite.capability} {judgement.phase} against {baseline}: {judgement.reason}")
        if "INCONCLUSIVE" in accepted and suite.capability in the_plan.capabilities:
            problems += _not_better(store, suite, rules, model, source, name)
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


def _not_better(store: Store, suite: Suite, rules: Rules, model: str, source: str, name: str) -> list[str]:
    """Under `promote_when: no_worse`, a capability the retraining was for must be confidently
    better than the failing version it would replace on the kinds it lost (upper bound of the
    drop below zero), so an unproven candidate never displaces live on a guess."""
    runs = []
    for version in (source, name):
        run = _latest(store, model, version, suite)
        if run is None:
            return [f"{suite.capability}: {version} has no complete run to compare"]
        runs.append([(run, store.results(run.id or 0))])
    judgement = judge_runs(suite, rules, runs[0], runs[1])
    lost = _lost_kinds(store, model, source, suite.capability)
    worse = [k for k in judgement.kinds if (not lost or k.kind in lost)
             and (k.result is None or k.result.high >= 0)]
    return [f"{suite.capability} {k.kind} is not confidently better than {source}"
            + (f" (drop bounds {k.result.low:+.1%} to {k.result.high:+.1%})" if k.result else "")
            for k in worse]


def _lost_kinds(store: Store, model: str, version: str, capability: str) -> set[str]:
    """The kinds that FAILed or were MARGINAL on `version`'s latest verdict for `capability`."""
    history = store.verdicts(model=model, candidate=version, capability=capability)
    if not history or history[-1].id is None:
        return set()
    kinds = store.verdict_kinds([history[-1].id]).get(history[-1].id, [])
    return {k.kind for k in kinds if k.phase in (Phase.FAIL, Phase.MARGINAL)}


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
        run = _latest(store, model, version, suite) if version else None
        if run is None or run.id is None:
            return {}
        return {s.kind: s.mean_score for s in store.summaries([run.id])[run.id]}

    base, before, after = scores(baseline), scores(source), scores(name)
    return [Figure(suite.name, kind, base.get(kind), before.get(kind), after.get(kind))
            for kind in suite.kinds if kind in after]


def _latest(store: Store, model: str, version: str, suite: Suite) -> Run | None:
    complete = [r for r in store.finished_runs(model, version, suite.content_hash) if r.status == RunStatus.COMPLETE]
    return complete[-1] if complete else None


def _words(fig: Figure) -> str:
    def pct(value: float | None) -> str:
        return "?" if value is None else f"{value:.1%}"

    values = ([fig.baseline] if fig.baseline is not None else []) + [fig.before, fig.after]
    chain = " → ".join(pct(v) for v in values)
    recovered = fig.recovered()
    return f"{fig.suite} {fig.kind} {chain}" + (f" ({recovered:.0%} of the loss recovered)"
                                               if recovered is not None else "")
