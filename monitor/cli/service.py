"""`serve`, `alerts` and `db upgrade`: running the monitor and what deploying it needs."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

import typer

from monitor.cli.context import DEFAULT_CONFIG, ConfigOpt, console, opened, reported


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

    from monitor.redaction import RedactingFilter
    from monitor.service.http import Api, HttpServer
    from monitor.service.scheduler import open_monitor

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    for handler in logging.getLogger().handlers:
        handler.addFilter(RedactingFilter())
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    with reported():
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


def db_upgrade(config: ConfigOpt = DEFAULT_CONFIG,
               revision: Annotated[str, typer.Argument(help="Target revision.")] = "head") -> None:
    """Apply schema migrations (Alembic) to the policy's database."""
    from monitor.store import make_engine
    from monitor.store.migrate import current, upgrade

    with opened(config, check_paths=False) as policy:
        engine = make_engine(policy.config.database_url())
        try:
            upgrade(engine, revision)
            console.print(f"database at revision {current(engine)}")
        finally:
            engine.dispose()


COMMANDS: dict[str, Callable[..., Any]] = {"serve": serve, "alerts": alerts}
DB_COMMANDS: dict[str, Callable[..., Any]] = {"upgrade": db_upgrade}
