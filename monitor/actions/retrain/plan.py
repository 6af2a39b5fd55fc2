"""What a recovery retraining trains on: the failing capabilities' recovery splits (never the probe
split, which would make the gate meaningless), in the baseline's own words where it had them
right, plus replay of the fine-tune's own data so the skill it was made for stays."""

from __future__ import annotations

import json
import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

from monitor.actions.triggers import triggers
from monitor.errors import RetrainRefused
from monitor.policy.schema import Config
from monitor.policy.suites import GenerateSpec, Item, Suite, generation_correct, render
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
    asked: bool = False  # the baseline was asked already (taught says whether it got it right)


@dataclass(frozen=True)
class Plan:
    capabilities: tuple[str, ...]
    recovery: dict[str, list[Example]]  # suite name → examples from its recovery split
    replay: list[Pair]
    losses: dict[str, float] = field(default_factory=dict)  # suite name → points lost when planned
    round: int = 1

    def examples(self) -> list[Pair]:
        """What is trained on: every example with an answer, and of a two-sided suite as many
        to refuse as to answer (a look-alike nobody could answer takes its partner out with it)."""
        chosen = [e for found in self.recovery.values() for e in _balanced(found)]
        return [(e.prompt, e.answer) for e in chosen] + self.replay

    def total(self) -> int:
        return sum(len(found) for found in self.recovery.values())

    def describe(self) -> str:
        parts = ", ".join(f"{suite} {_count(found)}" + (f" for {self.losses[suite]:.0%} lost"
                                                         if suite in self.losses else "")
                          for suite, found in self.recovery.items())
        taught = sum(e.taught for found in self.recovery.values() for e in found)
        words = f"; {taught} in the baseline's own words" if taught else ""
        left_out = self.total() - sum(len(_balanced(found)) for found in self.recovery.values())
        words += f"; {left_out} without an answer or a partner, left out" if left_out else ""
        return f"{self.total()} recovery examples ({parts}{words}) + {len(self.replay)} replay examples"


def _balanced(found: Sequence[Example]) -> list[Example]:
    answered = [e for e in found if e.answer]
    if len({e.item.should_refuse for e in found} - {None}) < 2:
        return answered  # not a suite scored on both sides of a line
    refuse = [e for e in answered if e.item.should_refuse is True]
    answer = [e for e in answered if e.item.should_refuse is False]
    pairs = min(len(refuse), len(answer))
    keep = {id(e) for e in refuse[:pairs] + answer[:pairs]}
    return [e for e in answered if e.item.should_refuse is None or id(e) in keep]


def _count(found: Sequence[Example]) -> str:
    """How many, and for a two-sided suite how many on each side of the line."""
    refuse = sum(e.item.should_refuse is True for e in found)
    answer = sum(e.item.should_refuse is False for e in found)
    return f"{len(found)} ({refuse} refuse, {answer} answer)" if refuse and answer else str(len(found))


def plan(config: Config, suites: Sequence[Suite], model: str, capabilities: Sequence[str],
         losses: Mapping[str, float] | None = None) -> Plan:
    """Round one: the first round's examples allocated over the failing capabilities' suites by
    how much each lost (`losses`, suite name → points; evenly where unknown)."""
    spec = config.models[model].retrain
    pools = _pools(suites, capabilities, spec.seed)
    if not pools:
        raise RetrainRefused(f"no recovery items to train on for {', '.join(capabilities)}: their suites' "
                             "recovery splits are empty or have no answers (split.recovery_fraction)")
    known = [v for name, v in (losses or {}).items() if name in pools]
    unknown = sum(known) / len(known) if known else 1.0  # a suite without figures: as the others lost
    weights = {name: (losses or {}).get(name, unknown) for name in pools}
    counts = allocate(spec.first_round(), weights, {n: len(p) for n, p in pools.items()}, _units(pools))
    chosen = {name: pools[name][:count] for name, count in counts.items() if count}
    if not chosen:
        raise RetrainRefused(f"round_examples ({spec.first_round()}) is too few to give "
                             f"{', '.join(pools)} a single example (refusal suites take them in pairs)")
    replay = replay_pairs(config.resolve(spec.replay), spec.replay_examples, spec.seed) if spec.replay else []
    shown = {name: weights[name] for name in chosen if losses and name in losses}
    return Plan(tuple(capabilities), chosen, replay, shown)


def extend(config: Config, suites: Sequence[Suite], model: str, previous: Plan,
           losses: Mapping[str, float]) -> Plan | None:
    """The next round: every example so far, plus up to `round_examples` more (within
    `max_examples` in all) for exactly the suites in `losses` (those still failing by alignment,
    with the points each still lacks), allocated by that remaining loss. None where the budget
    or the suites' recovery splits have nothing left to add."""
    spec = config.models[model].retrain
    capabilities = tuple(dict.fromkeys([*previous.capabilities,
                                        *(s.capability for s in suites if s.name in losses)]))
    pools = {name: pool for name, pool in _pools(suites, capabilities, spec.seed).items() if name in losses}
    have = {name: len(previous.recovery.get(name, [])) for name in pools}
    budget = min(spec.round_examples, spec.max_examples - previous.total())
    room = {name: len(pools[name]) - have[name] for name in pools}
    added = allocate(budget, {n: losses[n] for n in pools}, room, _units(pools)) if budget > 0 else {}
    if not any(added.values()):
        return None
    recovery = {name: list(found) for name, found in previous.recovery.items()}
    for name, count in added.items():
        recovery.setdefault(name, []).extend(pools[name][have[name]: have[name] + count])
    return Plan(capabilities, recovery, previous.replay, dict(losses), previous.round + 1)


def _pools(suites: Sequence[Suite], capabilities: Sequence[str], seed: int) -> dict[str, list[Example]]:
    """Each failing suite's recovery examples, a suite with a `partner` taking the partner's
    with it (one pool, under the first of the two to fail), so both sides are trained together."""
    by_name = {s.name: s for s in suites}
    found: dict[str, list[Example]] = {}
    taken: set[str] = set()
    for suite in suites:
        if suite.capability not in capabilities or suite.name in taken:
            continue
        examples = recovery_examples(suite, seed)
        partner = by_name.get(suite.spec.partner or "")
        if partner is not None:
            examples = _with_partner(examples, recovery_examples(partner, seed), suite.spec.split.group)
            taken.add(partner.name)
        found[suite.name] = examples
    return {name: pool for name, pool in found.items() if pool}


def _with_partner(own: list[Example], theirs: list[Example], group: str | None) -> list[Example]:
    """Each example followed by its partner's example of the same group (`pair-07` with
    `pair-07`), so any prefix of the pool holds whole pairs; the unmatched follow in their order."""
    partners = {e.item.group_tag(group): e for e in theirs if e.item.group_tag(group) is not None}
    paired: list[Example] = []
    for example in own:
        paired.append(example)
        tag = example.item.group_tag(group)
        match = partners.pop(tag, None) if tag is not None else None
        if match is not None:
            paired.append(match)
    left = [e for e in theirs if e.item.group_tag(group) is None or e.item.group_tag(group) in partners]
    return paired + left


def _units(pools: Mapping[str, Sequence[Example]]) -> dict[str, int]:
    """Examples are handed out in pairs where a suite is scored on both sides of a line (refuse
    the harmful request, answer its benign look-alike): ten refusals alone taught SmolLM2 to refuse
    nearly everything, five refusals with their five look-alikes did not."""
    return {name: 2 if len({e.item.should_refuse for e in pool} - {None}) == 2 else 1
            for name, pool in pools.items()}


REFUSE = "I'm sorry, but I can't help with that."
FLOOR = 0.02  # a failing suite whose measured loss is tiny still counts for this much


def allocate(budget: int, weights: Mapping[str, float], room: Mapping[str, int],
             units: Mapping[str, int]) -> dict[str, int]:
    """`budget` examples over suites in proportion to `weights` (points lost), in whole `units`,
    none beyond a suite's `room` (what a full suite cannot take goes to the others), at least one
    unit each so no failing suite goes untrained, and what rounding leaves by largest remainder."""
    weight = {n: max(weights[n], FLOOR) for n in weights}
    most = {n: room[n] // units[n] * units[n] for n in weights}
    full: set[str] = set()
    while True:  # fill the suites whose share is more than they hold, then share out the rest
        rest = [n for n in weights if n not in full]
        left = budget - sum(most[n] for n in full)
        total = sum(weight[n] for n in rest) or 1.0
        over = [n for n in rest if left * weight[n] / total >= most[n]]
        if not over:
            break
        full.update(over)
    exact = {n: left * weight[n] / total for n in rest}
    counts = {n: most[n] if n in full else int(exact[n] / units[n]) * units[n] for n in weights}
    for name in sorted(rest, key=lambda n: -weight[n]):
        if counts[name] == 0 and units[name] <= most[name]:
            counts[name] = units[name]
    while sum(counts.values()) > budget:  # the minimum units overdrew: from the largest, else the least lost
        larger = [n for n in counts if counts[n] > units[n]]
        name = (max(larger, key=lambda n: counts[n]) if larger
                else min((n for n in counts if counts[n]), key=lambda n: weight[n]))
        counts[name] -= units[name]
    left = budget - sum(counts.values())
    while left > 0:
        open_ = [n for n in rest if counts[n] + units[n] <= most[n] and units[n] <= left]
        if not open_:
            break
        name = max(open_, key=lambda n: exact[n] - counts[n])
        counts[name] += units[name]
        left -= units[name]
    return counts


def recovery_examples(suite: Suite, seed: int) -> list[Example]:
    """The recovery split, asked the way the suite's generation asks it, answered with the gold
    target (until `teach` puts the baseline's own answer in its place). A refusal item has no
    target: a harmful request is answered with a plain refusal, and a benign look-alike only with
    the baseline's own answer (left empty, and not trained on, until `teach` finds one)."""
    kinds = suite.spec.kinds
    found = []
    for item in suite.select(Split.RECOVERY):
        targets = item.targets() or ([REFUSE] if item.should_refuse else [""] if item.should_refuse is False
                                     else [])
        if kinds.generate_until and targets:
            found.append(Example(item, render(kinds.generate_until.doc_to_text, item), targets[0]))
        elif kinds.multiple_choice and item.choices and item.gold is not None:
            prompt = render(kinds.multiple_choice.doc_to_text, item)
            found.append(Example(item, prompt, item.choices[item.gold]))
    random.Random(seed).shuffle(found)
    return _interleaved(found)


def _interleaved(found: list[Example]) -> list[Example]:
    """Items to be refused and items to be answered in turn, so any prefix keeps the balance;
    suites without that line keep their (seeded) order."""
    refuse = [e for e in found if e.item.should_refuse is True]
    answer = [e for e in found if e.item.should_refuse is False]
    if not refuse or not answer:
        return found
    rest = [e for e in found if e.item.should_refuse is None]
    paired = [e for two in zip(refuse, answer, strict=False) for e in two]
    longer = refuse if len(refuse) > len(answer) else answer
    return paired + longer[min(len(refuse), len(answer)):] + rest


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
        fresh = [e for e in examples if not e.asked]  # a later round asks only its new items
        asked = [GenerationRequest(e.prompt, spec.max_new_tokens * 2, spec.until, spec.system_prompt)
                 for e in fresh]
        answers = dict(zip((e.item.id for e in fresh), teacher.generate(asked) if asked else [], strict=True))
        taught[name] = [e if e.asked else _answered(e, spec, answers[e.item.id]) for e in examples]
    return replace(the_plan, recovery=taught)


def _answered(example: Example, spec: GenerateSpec, answer: str) -> Example:
    if answer.strip() and generation_correct(example.item, spec, answer):
        return replace(example, answer=answer.strip(), taught=True, asked=True)
    return replace(example, asked=True)


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
