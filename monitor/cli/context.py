"""What every command shares: the consoles, error reporting, progress bars, and one opened
policy (its suites loaded once, its store opened once and closed at the end).

Every command that can fail on input prints the problems (file:line: key: message, or what was
refused and why) and exits 2: a file, a name that does not exist, an option, a port in use.
A run whose measurement broke exits 3, so scripts can tell "your file is wrong" from "the model
endpoint is down". A FAIL exits 1. Every command's --help ends with `EXIT_CODES_HELP`.
"""

from __future__ import annotations

import getpass
import json
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from enum import StrEnum
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    ProgressBar,
    Task,
    TextColumn,
    TimeElapsedColumn,
)

from monitor import __version__
from monitor.cli.names import one_of
from monitor.errors import ConfigError, ForgetmenotError, Refused, SuiteError
from monitor.policy.loading import load_policy
from monitor.policy.schema import Config
from monitor.policy.suites import Suite

if TYPE_CHECKING:
    from monitor.actions.retrain import Hooks
    from monitor.probing.run import Advance
    from monitor.store import Store

console = Console()
err = Console(stderr=True)

ConfigOpt = Annotated[Path, typer.Option("--config", "-c", help="Policy file.")]
ModelOpt = Annotated[str | None, typer.Option(help="Model name (default: the only one).")]
SuitesOpt = Annotated[list[str] | None, typer.Option(help="Only these suites (repeatable).")]


class Output(StrEnum):
    TEXT = "text"
    JSON = "json"


OutputOpt = Annotated[Output, typer.Option(
    case_sensitive=False, help="text (tables for a person) or json (for scripts: the HTTP API's shapes).")]
DEFAULT_CONFIG = Path("forgetmenot.yaml")
# Helm reads no file outside its chart: `alerts` and `dashboards write` also write the chart's copies.
CHART_FILES = Path("helm/forgetmenot/files")
EXIT_CODES_HELP = (
    "Exit codes: 0 done (PASS) · 1 FAIL (a verdict failed; an action or a replay did not succeed) · "
    "2 your input is wrong (a file, a name, an option, a port in use) · 3 the measurement broke "
    "(endpoint down, weights that will not load, database away) · 4 MARGINAL or INCONCLUSIVE "
    "(judge, gate) · 5 still pending (gate).")


def show_version(asked: bool) -> None:
    if asked:
        console.print(f"forgetmenot {__version__}")
        raise typer.Exit()


def main_options(
    version: Annotated[bool, typer.Option("--version", callback=show_version, is_eager=True,
                                          help="Print the version and exit.")] = False,
) -> None:
    """Watch deployed fine-tuned models for forgetting."""


def _said_on_stderr(problem: str) -> None:
    err.print(f"[red]error[/red] {problem}", highlight=False, soft_wrap=True)


@contextmanager
def reported(said: Callable[[str], object] = _said_on_stderr) -> Iterator[None]:
    """Errors on input exit 2, a broken measurement 3, each problem one line through `said`
    (`serve` gives its log, so a log pipeline reads its errors too)."""
    try:
        yield
    except (ConfigError, SuiteError) as exc:
        for problem in exc.problems:
            said(str(problem))
        raise typer.Exit(2) from exc
    except Refused as exc:
        said(str(exc))
        raise typer.Exit(2) from exc
    except ForgetmenotError as exc:
        said(str(exc))
        raise typer.Exit(3) from exc


class Opened:
    """A policy file as one command uses it; nothing is read twice."""

    def __init__(self, path: Path, check_paths: bool) -> None:
        self.config: Config
        self.all_suites: list[Suite]
        self.config, self.all_suites = load_policy(path, check_paths=check_paths)

    @cached_property
    def store(self) -> Store:
        from monitor.store import Store

        return Store(self.config.database_url())

    def suites(self, only: Sequence[str] | None = None) -> list[Suite]:
        """The policy's suites, or those named in `only` (the --suite option); each must exist."""
        names = [s.name for s in self.all_suites]
        for name in only or []:
            one_of(name, names, "suites", "--suite")
        return [s for s in self.all_suites if not only or s.name in only]

    def model(self, wanted: str | None, option: str = "--model") -> str:
        """The --model option, or the policy's only model."""
        models = list(self.config.models)
        if wanted is None and len(models) == 1:
            return models[0]
        if wanted is None:
            raise Refused(f"{option}: choose one of the models ({', '.join(models)})")
        return one_of(wanted, models, "models", option)

    def version(self, model: str, wanted: str | None, option: str = "--version") -> str | None:
        """`wanted`, if it is one of `model`'s versions: the policy's, those the monitor built and
        the candidates registered. None stays None (the command's default)."""
        from monitor.store.versions import with_made

        if wanted is None:
            return None
        versions = with_made(self.config, self.store).models[model].versions
        return one_of(wanted, versions, "versions", option)

    def close(self) -> None:
        if "store" in self.__dict__:
            self.store.close()


@contextmanager
def opened(path: Path, check_paths: bool = True) -> Iterator[Opened]:
    """The policy at `path`, with errors reported as every command reports them."""
    with reported():
        policy = Opened(path, check_paths)
        try:
            yield policy
        finally:
            policy.close()


class RunBar(BarColumn):
    """A bar that turns red for a run that broke (its task's `broken` field): a full bar alone
    would read as a measurement done."""

    def render(self, task: Task) -> ProgressBar:
        bar = super().render(task)
        if task.fields.get("broken"):
            bar.complete_style = bar.finished_style = "red"
        return bar


def progress_bars() -> Progress:
    return Progress(TextColumn("{task.description:<28}"), RunBar(), MofNCompleteColumn(),
                    TimeElapsedColumn(), console=console, transient=False)


def mark_broken(progress: Progress, suites: Sequence[str]) -> None:
    """Colour the bars of these suites' runs red (`tracker` names each bar after its suite)."""
    for task in progress.tasks:
        if task.description in suites:
            progress.update(task.id, broken=True)


def tracker(progress: Progress, prefix: str = "") -> Callable[[str, int], Advance]:
    def track(name: str, total: int) -> Advance:
        task = progress.add_task(f"{prefix}{name}", total=total)
        return lambda n: progress.advance(task, n)

    return track


def hooks(progress: Progress) -> Hooks:
    """Progress bars for a retraining: its training steps and the probes of what it made."""
    from monitor.actions.retrain import Hooks

    def steps(total: int, label: str) -> Callable[[int, float], None]:
        task = progress.add_task(label, total=total)
        return lambda n, loss: progress.update(task, advance=n, description=f"{label} loss {loss:.3f}")

    return Hooks(steps=steps, track=tracker(progress, "probe "))


def print_json(body: Any) -> None:
    """`body` as JSON on stdout, whole: no console width, no markup, nothing else on the line."""
    typer.echo(json.dumps(body, indent=2))


def whoami() -> str:
    try:
        return getpass.getuser()
    except (OSError, KeyError):
        return "unknown user"
