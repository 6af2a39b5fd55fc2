"""What every command shares: the consoles, error reporting, progress bars, and one opened
policy (its suites loaded once, its store opened once and closed at the end).

Every command that can fail on input prints the problems (file:line: key: message, or what was
refused and why) and exits 2;
a run whose measurement broke exits 3, so scripts can tell "your file is wrong" from "the model
endpoint is down".
"""

from __future__ import annotations

import getpass
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

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
DEFAULT_CONFIG = Path("forgetmenot.yaml")
# Helm reads no file outside its chart: `alerts` and `dashboards write` also write the chart's copies.
CHART_FILES = Path("helm/forgetmenot/files")


@contextmanager
def reported() -> Iterator[None]:
    try:
        yield
    except (ConfigError, SuiteError) as exc:
        for problem in exc.problems:
            err.print(f"[red]error[/red] {problem}", highlight=False, soft_wrap=True)
        raise typer.Exit(2) from exc
    except Refused as exc:
        err.print(f"[red]error[/red] {exc}", highlight=False, soft_wrap=True)
        raise typer.Exit(2) from exc
    except ForgetmenotError as exc:
        err.print(f"[red]error[/red] {exc}", highlight=False, soft_wrap=True)
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
        """The policy's suites, or those named in `only` (the --suite option)."""
        return [s for s in self.all_suites if not only or s.name in only]

    def model(self, wanted: str | None) -> str:
        """The --model option, or the policy's only model."""
        models = self.config.models
        if wanted is None and len(models) == 1:
            return next(iter(models))
        if wanted is not None and wanted in models:
            return wanted
        raise typer.BadParameter(f"choose --model from: {', '.join(models)}")

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


def progress_bars() -> Progress:
    return Progress(TextColumn("{task.description:<28}"), BarColumn(), MofNCompleteColumn(),
                    TimeElapsedColumn(), console=console, transient=False)


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


def whoami() -> str:
    try:
        return getpass.getuser()
    except (OSError, KeyError):
        return "unknown user"
