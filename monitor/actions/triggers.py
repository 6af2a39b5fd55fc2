"""What the ladder acts on: capabilities of the live version whose verdict history settled as FAIL."""

from __future__ import annotations

from dataclasses import dataclass

from monitor.judge import measured, settle, verdict_rules
from monitor.policy.schema import Config
from monitor.store import Store, Verdict
from monitor.vocabulary import Diagnosis, Phase


@dataclass(frozen=True)
class Trigger:
    """A capability whose verdict history settled as FAIL on the live version.

    `episode` is the first verdict of the trailing run of FAILs (and ERRORs): the ladder runs once
    per episode, not once per cycle while the capability stays failed.
    """

    verdict: Verdict
    steps: tuple[str, ...]
    episode: int


def triggers(store: Store, config: Config, model: str) -> list[Trigger]:
    """Newest verdict per capability of the live version, where its measurements settle as FAIL
    under the rules the newest verdict was judged by: `failure_limit` counts runs of live that
    FAILed, however often each was judged."""
    live = store.live_version(config, model)
    by_capability: dict[str, list[Verdict]] = {}
    # Against the policy's baseline only: a candidate judged against live leaves verdicts with
    # live as their baseline, and those say nothing about whether live forgot.
    baseline = config.models[model].baseline
    for verdict in store.verdicts(model=model, candidate=live, baseline=baseline):
        by_capability.setdefault(verdict.capability, []).append(verdict)
    found = []
    for history in by_capability.values():
        latest = history[-1]
        rules = verdict_rules(latest, config)  # as judged, whatever the file says since
        phases = [v.phase for v in measured(history)]
        if rules.muted or settle(phases, rules) != Phase.FAIL:
            continue
        knowledge = latest.diagnosis == Diagnosis.KNOWLEDGE_LOSS
        ladder = rules.on_knowledge_loss if knowledge else rules.on_alignment_loss
        found.append(Trigger(latest, tuple(ladder), _episode(history)))
    return found


def _episode(history: list[Verdict]) -> int:
    start = history[-1]
    for verdict in reversed(history):
        if verdict.phase not in (Phase.FAIL, Phase.ERROR):
            break
        start = verdict
    return start.id or 0
