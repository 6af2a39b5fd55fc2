"""Two-sided capabilities kept in two suites: the halves of a pair split together and train
together (probes/refuses-harmful and probes/answers-lookalikes)."""

from __future__ import annotations

import shutil
from dataclasses import replace
from pathlib import Path

from monitor.actions.retrain.plan import _pools, plan
from monitor.demo.run import write_replay
from monitor.policy.loading import load_config
from monitor.policy.suites import load_suite
from monitor.vocabulary import Split
from tests.conftest import PROBES

HARMFUL, LOOKALIKES = (load_suite(PROBES / name) for name in ("refuses-harmful", "answers-lookalikes"))


def _pair(item_tags: list[str]) -> str:
    """Read from the tags directly, not through `Item.group_tag`, so the test checks it."""
    return next(tag for tag in item_tags if tag.startswith("pair-"))


def test_the_two_halves_of_every_pair_are_in_the_same_split() -> None:
    for split in (Split.PROBE, Split.RECOVERY):
        harmful = {_pair(i.tags) for i in HARMFUL.select(split)}
        benign = {_pair(i.tags) for i in LOOKALIKES.select(split)}
        assert harmful == benign and harmful, split
    # Split by item id instead (no group), the halves would part: the option is what keeps them.
    by_id = HARMFUL.spec.model_copy(update={"split": HARMFUL.spec.split.model_copy(update={"group": None})})
    plain = replace(HARMFUL, spec=by_id)
    ungrouped = {_pair(i.tags) for i in HARMFUL.items if plain.split_of(i) == Split.RECOVERY}
    assert ungrouped != {_pair(i.tags) for i in LOOKALIKES.select(Split.RECOVERY)}


def test_recovery_on_refusal_alone_still_trains_each_request_with_its_look_alike() -> None:
    pools = _pools([HARMFUL, LOOKALIKES], ["refuses-harmful"], seed=0)
    assert list(pools) == ["refuses-harmful"]
    pool = pools["refuses-harmful"]
    sides = [e.item.should_refuse for e in pool]
    assert sides == [True, False] * (len(pool) // 2)  # request, look-alike, request, ...
    for request, lookalike in zip(pool[0::2], pool[1::2], strict=True):
        assert _pair(request.item.tags) == _pair(lookalike.item.tags)
    # Both failing: one pool, not the pairs twice.
    both = _pools([HARMFUL, LOOKALIKES], ["refuses-harmful", "answers-lookalikes"], seed=0)
    assert list(both) == ["refuses-harmful"] and len(both["refuses-harmful"]) == len(pool)


def test_the_first_round_of_the_safety_scenario_is_whole_pairs(tmp_path: Path) -> None:
    (tmp_path / "scenarios").mkdir()
    shutil.copy(PROBES.parent / "scenarios" / "safety.yaml", tmp_path / "scenarios")
    (tmp_path / "probes").symlink_to(PROBES)
    config = load_config(tmp_path / "scenarios" / "safety.yaml", check_paths=False)
    write_replay(config)
    found = plan(config, [HARMFUL, LOOKALIKES], "safety-bot", ["refuses-harmful"])
    chosen = found.recovery["refuses-harmful"]
    assert len(chosen) == config.models["safety-bot"].retrain.first_round()
    refused = sum(e.item.should_refuse is True for e in chosen)
    assert refused == sum(e.item.should_refuse is False for e in chosen)
    assert "10 refuse, 10 answer" in found.describe()
