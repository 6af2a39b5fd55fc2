"""`demo` and `demo-loop`: a real fine-tune making a real model forget, and the monitor acting on it."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

import typer

from monitor.cli.context import DEFAULT_CONFIG, ConfigOpt, console, hooks, progress_bars, reported, tracker
from monitor.present import tables


def demo(
    config: ConfigOpt = DEFAULT_CONFIG,
    fresh: Annotated[bool, typer.Option(help="Probe again even if runs are stored.")] = False,
    plot: Annotated[Path | None, typer.Option(help="Before/after chart (PNG).")] = None,
) -> None:
    """Build v1 (SmolLM2) and a fine-tuned v2, probe both, show what v2 forgot and what the
    monitor concludes."""
    from monitor.demo.run import run_demo

    with reported(), progress_bars() as progress:
        def steps(total: int) -> Callable[[int, float], None]:
            task = progress.add_task("fine-tuning", total=total)
            return lambda n, loss: progress.update(task, advance=n, description=f"fine-tune loss {loss:.3f}")

        result = run_demo(config, fresh=fresh, steps=steps, track=tracker(progress, "probe "))
    console.print(tables.comparison_table(result.rows, "v1", "v2", "what the fine-tune did (probe split)",
                                          console.width))
    console.print(tables.conclusions_table(result.conclusions, "what the monitor concludes about v2"))
    if plot:
        from monitor.present.plots import before_after_plot

        before_after_plot(result.rows, plot)
        console.print(f"chart written to {plot}")


def demo_loop(
    config: ConfigOpt = DEFAULT_CONFIG,
    plot: Annotated[Path | None, typer.Option(help="Baseline / forgetful / recovered chart (PNG).")] = None,
) -> None:
    """The full loop on the demo: v2 goes live, is judged and diagnosed, and the policy acts on it."""
    from monitor.demo.loop import run_loop

    with reported(), progress_bars() as progress:
        result = run_loop(config, hooks(progress))
    title = "the monitor's verdicts on v2 (vs v1)"
    console.print(tables.verdicts_table(result.verdicts, title, console.width))
    if result.candidate:
        console.print(tables.recovery_table(result.figures, "v1", "v2", result.candidate, console.width))
    console.print(tables.actions_table(result.actions, "audit trail", console.width))
    kept = (f"; {result.candidate} was kept for inspection, not promoted"
            if result.candidate and result.candidate != result.live else "")
    console.print(f"live now: [bold]{result.live}[/bold]{kept}")
    if plot and result.candidate:
        from monitor.present.plots import recovery_plot

        names = ("v1 (baseline)", "v2 (fine-tuned)", f"{result.candidate} (recovered)")
        recovery_plot(result.figures, plot, names)
        console.print(f"chart written to {plot}")


COMMANDS: dict[str, Callable[..., Any]] = {"demo": demo, "demo-loop": demo_loop}
