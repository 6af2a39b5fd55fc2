"""The demo: watch a real fine-tune make a real model forget.

v1 is SmolLM2-135M-Instruct as shipped. v2 is v1 fully fine-tuned on one narrow task, the
scenario's (`scenarios.py`; by default, answer every message with a JSON sentiment verdict).
Both are probed on every shipped suite and the
scores are compared per capability. Everything built is kept under the demo folder, so a second
run reuses the models and the stored runs and finishes in seconds.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from monitor.actions import retrain
from monitor.actions.retrain import sft as finetune
from monitor.demo.scenarios import scenario_for
from monitor.judge import judge_pair
from monitor.policy.loading import load_config, load_suites
from monitor.policy.schema import Config
from monitor.policy.suites import Suite
from monitor.present.tables import Conclusion, Row
from monitor.probing import weights
from monitor.probing.factory import backend_for
from monitor.probing.reelicit import Known, Reelicitor
from monitor.probing.run import VersionRef
from monitor.probing.version import Measured, Track, probe_version
from monitor.store import Store

Steps = Callable[[int], Callable[[int, float], None]]
HOLDER = "forgetmenot-demo"


@dataclass(frozen=True)
class DemoResult:
    config: Config
    rows: list[Row]
    measured: dict[str, list[Measured]]
    conclusions: list[Conclusion]


def build_v1(config: Config, steps: Steps | None = None) -> Path:
    """v1: SmolLM2 as shipped, or what the scenario makes of it (the safety scenario trains it to
    refuse first, since SmolLM2 refuses nothing)."""
    make = scenario_for(config).make_v1
    out = _version_dir(config, "v1")
    if make is None:
        return weights.prepare_smollm2(out)
    return make(out, steps)


def build_v2(config: Config, steps: Steps | None = None) -> Path:
    """Fine-tune v1 into v2 unless v2 is already there (its config.json marks it complete)."""
    out = _version_dir(config, "v2")
    if (out / "config.json").is_file():
        return out
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    scenario = scenario_for(config)
    source = build_v1(config)
    tokenizer = AutoTokenizer.from_pretrained(source)
    model = AutoModelForCausalLM.from_pretrained(source, dtype=torch.float32)
    pairs = scenario.training_pairs()
    advance = steps(finetune.steps_for(pairs, scenario.train)) if steps else None
    finetune.fine_tune(model, tokenizer, pairs, scenario.train, advance)
    finetune.save(model, tokenizer, out)
    return out


def write_replay(config: Config) -> None:
    """The fine-tune's own data, where the policy's retrain.replay expects it (cheap: it is
    generated, so it is written on every run)."""
    scenario = scenario_for(config)
    replay = config.models[scenario.model].retrain.replay
    if replay:
        retrain.write_replay(scenario.training_pairs(), config.resolve(replay))


def _version_dir(config: Config, version: str) -> Path:
    path = config.models[scenario_for(config).model].versions[version].path
    assert path is not None, f"the demo policy must give {version} a path"
    return config.resolve(path)


def run_demo(config_file: Path, *, fresh: bool = False, steps: Steps | None = None,
             track: Track | None = None, known: Known | None = None) -> DemoResult:
    """v1 and v2 built (or reused), probed on every suite and judged. `known` keeps the examples
    re-elicitation asked v1 for, so the full loop that follows asks once, not twice."""
    config = load_config(config_file, check_paths=False)
    build_v1(config, steps)
    build_v2(config, steps)
    write_replay(config)
    config = load_config(config_file)  # now every path must exist
    suites = load_suites(config)
    store = Store(config.database_url())
    try:
        measured = {v: _probe(config, store, v, suites, fresh, track) for v in ("v1", "v2")}
        conclusions = _conclude(config, store, suites, measured, known if known is not None else {})
    finally:
        store.close()
    return DemoResult(config, _rows(store, suites, measured), measured, conclusions)


def _conclude(config: Config, store: Store, suites: list[Suite], measured: dict[str, list[Measured]],
              known: Known) -> list[Conclusion]:
    """v2 judged against v1 on the runs just measured, as the monitor would judge it, failing
    generation re-elicited on v2 (the second witness), without storing a verdict: the full-loop
    demo starts from this database and judges for itself, reusing the re-elicited run."""
    model = scenario_for(config).model
    reelicit = Reelicitor(lambda: backend_for(config, model, "v2"), lambda: backend_for(config, model, "v1"),
                          holder=HOLDER, known=known)
    runs = {v: {m.suite.name: m.run for m in ms} for v, ms in measured.items()}
    out = []
    for suite in suites:
        pair = (runs["v1"][suite.name], runs["v2"][suite.name])
        judgement = judge_pair(store, suite, config.policy.rules_for(suite.capability), model, pair, reelicit)
        out.append(Conclusion.of(judgement))
    return out


def _probe(config: Config, store: Store, version: str, suites: list[Suite], fresh: bool,
           track: Track | None) -> list[Measured]:
    model = scenario_for(config).model
    backend = config.models[model].backend
    return probe_version(
        store, VersionRef(model, version, config.models[model].baseline), suites,
        lambda: backend_for(config, model, version),
        reuse_on=None if fresh else (backend.kind, backend.dtype), track=track,
    )


def _rows(store: Store, suites: list[Suite], measured: dict[str, list[Measured]]) -> list[Row]:
    runs = {v: {m.suite.name: m.run for m in ms} for v, ms in measured.items()}
    ids = [r.id for by_suite in runs.values() for r in by_suite.values() if r.id is not None]
    summaries = store.summaries(ids)
    rows = []
    for suite in suites:
        before = {s.kind: s for s in summaries[runs["v1"][suite.name].id or 0]}
        after = {s.kind: s for s in summaries[runs["v2"][suite.name].id or 0]}
        for kind in suite.kinds:
            b, a = before.get(kind), after.get(kind)
            rows.append(Row(suite.capability, kind, b.mean_score if b else None,
                            a.mean_score if a else None, b.scored if b else 0))
    return rows
