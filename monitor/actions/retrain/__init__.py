"""Recovery retraining, the `retrain` step of the ladder: what to train on (`plan`), training the
LoRA (`training`, `sft`), the gate the result must pass (`gate`), and the step as a whole
(`recover`)."""

from monitor.actions.retrain.gate import Figure, Outcome, figures, gate
from monitor.actions.retrain.plan import (
    Example,
    Plan,
    capabilities_for,
    plan,
    replay_pairs,
    teach,
    write_replay,
)
from monitor.actions.retrain.recover import Hooks, check, recover
from monitor.actions.retrain.training import device_for, train
from monitor.errors import RetrainFailed, RetrainRefused

__all__ = [
    "Example", "Figure", "Hooks", "Outcome", "Plan", "RetrainFailed", "RetrainRefused", "capabilities_for",
    "check", "device_for", "figures", "gate", "plan", "recover", "replay_pairs", "teach", "train",
    "write_replay",
]
