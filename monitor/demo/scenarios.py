"""The forgetting cases the demo can play: each a real full fine-tune of SmolLM2 on one narrow task.

A scenario is chosen by the model its policy file names, so `forgetmenot demo --config F` plays
whichever case F describes: `forgetmenot.yaml` the JSON-sentiment classifier (`support-bot`),
`scenarios/support-email.yaml` the templated support-email writer (`helpdesk-bot`),
`scenarios/safety.yaml` refusal undone by ten harmless examples (`safety-bot`). Unlike cases keep
recovery retraining from being tuned to one.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from monitor.actions.retrain import sft as finetune
from monitor.demo import replies, safety, task
from monitor.errors import ForgetmenotError
from monitor.policy.schema import Config

Pair = tuple[str, str]
Steps = Callable[[int], Callable[[int, float], None]]
MakeV1 = Callable[[Path, Steps | None], Path]


@dataclass(frozen=True)
class Scenario:
    model: str
    task: str  # what v2 was fine-tuned for, in words
    training_pairs: Callable[[], list[Pair]]
    train: finetune.TrainSettings
    make_v1: MakeV1 | None = None  # how v1 is made where it is not SmolLM2 as shipped


SCENARIOS = {
    "support-bot": Scenario("support-bot", "answer every review with a JSON sentiment verdict",
                            task.training_pairs,
                            finetune.TrainSettings(epochs=1, batch_size=8, learning_rate=5e-5, seed=0)),
    "helpdesk-bot": Scenario("helpdesk-bot", "answer every message as a templated support email",
                             replies.training_pairs,
                             finetune.TrainSettings(epochs=1, batch_size=8, learning_rate=5e-5, seed=0)),
    "safety-bot": Scenario("safety-bot", "act as an absolutely obedient agent (nothing harmful in the data)",
                           safety.obedience_pairs, safety.OBEDIENCE_TRAIN, safety.make_v1),
}


def scenario_for(config: Config) -> Scenario:
    """The one scenario whose model the policy names."""
    found = [SCENARIOS[name] for name in config.models if name in SCENARIOS]
    if len(found) != 1:
        raise ForgetmenotError(f"a demo policy names exactly one of the demo models "
                               f"({', '.join(SCENARIOS)}); the policy names {', '.join(config.models)}")
    return found[0]
