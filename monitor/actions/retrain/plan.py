"""What a recovery retraining trains on: the failing capabilities' recovery splits (never the probe
split, which would make the gate meaningless), in the baseline's own words where it had them
right, plus replay of the fine-tune's own data so the skill it was made for stays."""

from __future__ import annotations

import json
import random
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path

from monitor.actions.triggers import triggers
from monitor.errors import RetrainRefused
from monitor.policy.schema import Config
from monitor.policy.suites import Item, Suite, generation_correct, render
from monitor.probing.backends.base import Backend, GenerationRequest
from monitor.store import Action, Store
from monitor.vocabulary import ActionKind, Split

Pair = tuple[str, str]


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


def capabilities_for(store: Store, config: Config, action: Action) -> list[str]:
    """The action's capability and every other one now failing on the live version whose ladder
    retrains: one LoRA for all of them, since a candidate fixing one would fail the gate on the rest."""
    found = [action.capability] if action.capability else []
    for trigger in triggers(store, config, action.model):
        if ActionKind.RETRAIN in trigger.steps and trigger.verdict.capability not in found:
            found.append(trigger.verdict.capability)
    return found
