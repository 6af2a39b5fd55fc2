"""`dashboards write` and `dashboards push`: the Grafana dashboards, as files or into a Grafana."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

import typer

from monitor.cli.context import CHART_FILES, console, err, reported

DASHBOARDS = Path("dashboards")


def write(
    out: Annotated[Path, typer.Option(help="Folder to write the dashboards' JSON into.")] = DASHBOARDS,
    chart: Annotated[Path, typer.Option(help="The Helm chart's files folder: the ConfigMaps' copies are "
                                             "written there too, where it exists.")] = CHART_FILES,
) -> None:
    """Write the Grafana dashboards generated from the metric names (fleet overview, model drill-down)."""
    from monitor.metrics.dashboards import write as write_all

    with reported():
        written = write_all(out)
        if chart.is_dir():  # Helm reads no file outside its chart: the chart carries a copy
            written += write_all(chart / "dashboards")
    console.print("wrote " + ", ".join(str(path) for path in written))


def push(
    url: Annotated[str, typer.Option(help="Grafana's address, e.g. https://grafana.example.com.")],
    folder_uid: Annotated[str | None, typer.Option(help="Uid of the Grafana folder to put them in "
                                                        "(default: General).")] = None,
    token_env: Annotated[str, typer.Option(help="Name of the environment variable holding a Grafana "
                                                "service-account token.")] = "GRAFANA_TOKEN",
    message: Annotated[str, typer.Option(help="Note kept in Grafana's version history.")] = (
        "forgetmenot dashboards push"),
) -> None:
    """Create or replace the dashboards in a running Grafana (POST /api/dashboards/db)."""
    from monitor.metrics.dashboards import build_all
    from monitor.metrics.publish import push as push_all

    token = os.environ.get(token_env, "")
    if not token:
        err.print(f"[red]error[/red] set {token_env} to a Grafana service-account token "
                  "(the token is never taken on the command line)", highlight=False)
        raise typer.Exit(2)
    with reported():
        pushed = push_all(url, token, build_all(), folder_uid=folder_uid, message=message)
    for one in pushed:
        console.print(f"pushed {one.name}: uid {one.uid}, version {one.version}, {one.url}",
                      highlight=False, soft_wrap=True)


COMMANDS: dict[str, Callable[..., Any]] = {"write": write, "push": push}
