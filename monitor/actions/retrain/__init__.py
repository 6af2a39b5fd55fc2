"""Recovery retraining, the `retrain` step of the ladder: what to train on (`plan`), training the
LoRA (`training`, `sft`), the gate the result must pass (`gate`), and the step as a whole
(`recover`)."""

from monitor.actions.retrain.gate import Figure, Outcome, figures, gate
from monitor.actions.retrain.plan import (
    Example,
    Plan,
    allocate,
    capabilities_for,
    extend,
    plan,
    replay_pairs,
    teach,
    write_replay,
)
from monitor.actions.retrain.record import read_record
from monitor.actions.retrain.recover import Hooks, Recovery, check
from monitor.actions.retrain.training import device_for, train
from monitor.errors import RetrainFailed, RetrainRefused

__all__ = [
    "Example", "Figure", "Hooks", "Outcome", "Plan", "Recovery", "RetrainFailed", "RetrainRefused",
    "allocate", "capabilities_for", "check", "device_for", "extend", "figures", "gate", "plan", "read_record",
    "replay_pairs", "teach", "train", "write_replay",
]
