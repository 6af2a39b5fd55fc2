"""The full-loop demo: v2 goes live, the monitor judges it, diagnoses it and acts as the policy says.

It starts from what `forgetmenot demo` measured (v1 and v2 probed on every suite) and works on a
throwaway copy of that database in a `loop/` folder beside it, so it can be run again and again
from the same start without the demo's own audit trail filling up or the cooldown refusing the
second run. The steps are the monitor's own: `judge_suite` on every suite, then `actions.act`,
exactly what one `forgetmenot serve` cycle does after probing.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path

from monitor.actions.deployers import deployer_for
from monitor.actions.ladder import act
from monitor.actions.retrain import Figure, Hooks, figures
from monitor.demo.run import run_demo
from monitor.demo.scenarios import scenario_for
from monitor.errors import ForgetmenotError
from monitor.judge import JudgeError, judge_suite
from monitor.policy.loading import load_config, load_suites
from monitor.policy.schema import Config
from monitor.probing.factory import backend_for
from monitor.probing.reelicit import Known, Reelicitor
from monitor.store import Action, Store, Verdict, VerdictKind
from monitor.vocabulary import ActionKind, ActionStatus, TriggeredBy

HOLDER = "forgetmenot-demo-loop"


@dataclass(frozen=True)
class LoopResult:
    config: Config
    verdicts: list[tuple[Verdict, list[VerdictKind]]]
    actions: list[Action]
    live: str
    candidate: str | None  # the version recovery retraining built, promoted or not
    figures: list[Figure]


def run_loop(config_file: Path, hooks: Hooks | None = None) -> LoopResult:
    hooks = hooks or Hooks()
    known: Known = {}  # v1's examples for re-elicitation, asked once for the demo and the loop
    run_demo(config_file, track=hooks.track, known=known)  # v1 and v2 built, measured and judged
    config = _loop_config(load_config(config_file))
    model = scenario_for(config).model
    store = Store(config.database_url())
    try:
        _go_live(store, config, model, "v2")
        verdicts = _judge(store, config, model, known)
        act(store, config, model, HOLDER, hooks)
        live = store.live_version(config, model)
        made = store.made_versions(model)  # oldest first
        candidate = _best(store, model, [m.version for m in made], live)
        shown = _figures(store, config, model, candidate or live)
        kinds = store.verdict_kinds([v.id for v in verdicts if v.id is not None])
        trail = store.actions(model)  # the whole trail, the release included
    finally:
        store.close()
    rows = [(v, kinds.get(v.id or 0, [])) for v in verdicts]
    return LoopResult(config, rows, trail, live, candidate, shown)


def _loop_config(config: Config) -> Config:
    """The demo policy pointed at a fresh copy of the demo database and its own folders."""
    source = config.database_url()
    if not source.startswith("sqlite:///") or source.endswith(":memory:"):
        raise ForgetmenotError(f"the full-loop demo copies the embedded SQLite database; "
                               f"{config.database} is not one")
    name = scenario_for(config).model
    folder = Path(source.removeprefix("sqlite:///")).parent / "loop"
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    shutil.copyfile(source.removeprefix("sqlite:///"), folder / "forgetmenot.db")
    copy = Store(f"sqlite:///{folder / 'forgetmenot.db'}")
    try:
        copy.reset_actions()  # whatever was done to the demo database before, start from v2's release
    finally:
        copy.close()
    spec = config.models[name]
    model = spec.model_copy(update={
        "deployer": spec.deployer.model_copy(update={"path": str(folder / "live")}),
        "retrain": spec.retrain.model_copy(update={"output": str(folder / "models")})})
    return config.model_copy(update={"database": f"sqlite:///{folder / 'forgetmenot.db'}",
                                     "models": {**config.models, name: model}})


def _go_live(store: Store, config: Config, model: str, version: str) -> None:
    """The release that starts the story, recorded like any other move."""
    action = store.add_action(Action(model=model, kind=ActionKind.DEPLOY, trigger=TriggeredBy.MANUAL,
                                     actor=HOLDER,
                                     from_version=config.models[model].baseline, to_version=version,
                                     reason="the fine-tuned v2 is released"))
    detail = deployer_for(config, model).promote(model, version, action.id)
    store.set_live(model, version, action.id)
    store.finish_action(action.id or 0, ActionStatus.DONE, detail=detail)


def _judge(store: Store, config: Config, model: str, known: Known) -> list[Verdict]:
    """Every suite judged as a serve cycle judges it: failing generation re-elicited on live first."""
    spec = config.models[model]
    live = store.live_version(config, model)
    reelicit = Reelicitor(lambda: backend_for(config, model, live),
                          lambda: backend_for(config, model, spec.baseline), holder=HOLDER, known=known)
    out = []
    for suite in load_suites(config):
        try:
            _, verdict = judge_suite(store, suite, config.policy.rules_for(suite.capability), model,
                                     live, spec.baseline, reelicit)
        except JudgeError:
            continue  # the demo measured every suite; a suite added since has no run yet
        out.append(verdict)
    return out


def _best(store: Store, model: str, made: list[str], live: str) -> str | None:
    """The version recovery ended with: live where a round was promoted, else the newest round
    (the alert names the best; the demo shows the last one tried)."""
    if live in made:
        return live
    return made[-1] if made else None


def _figures(store: Store, config: Config, model: str, candidate: str) -> list[Figure]:
    spec = config.models[model]
    return [f for suite in load_suites(config)
            for f in figures(store, suite, model, spec.baseline, "v2", candidate)]
