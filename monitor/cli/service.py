"""`serve`, `alerts` and `db upgrade`: running the monitor and what deploying it needs."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

import typer

from monitor.cli.alerts import alerts
from monitor.cli.context import DEFAULT_CONFIG, ConfigOpt, console, opened, reported
from monitor.metrics.rules import RUNBOOK_BASE
from monitor.service.logs import LogFormat, LogLevel


def serve(
    config: ConfigOpt = DEFAULT_CONFIG,
    host: Annotated[str, typer.Option(help="Address for /metrics and the API.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port for /metrics and the API.")] = 9464,
    run_now: Annotated[bool, typer.Option(help="Probe once at start, then on schedule.")] = False,
    stale_after: Annotated[float, typer.Option(help="Seconds of silence before another monitor's "
                                                    "running runs are marked interrupted.")] = 60.0,
    web_config: Annotated[Path | None, typer.Option(
        envvar="FORGETMENOT_WEB_CONFIG",
        help="Prometheus exporter-toolkit web config: TLS, client CA, bcrypt basic-auth users.")] = None,
    token_file: Annotated[Path | None, typer.Option(
        envvar="FORGETMENOT_TOKEN_FILE", help="Bearer tokens the API accepts, one per line.")] = None,
    token_env: Annotated[str | None, typer.Option(
        help="Name of an environment variable holding a bearer token the API accepts.")] = None,
    open_metrics: Annotated[bool, typer.Option(
        help="Serve /metrics without credentials (the API still needs them).")] = False,
    runbook_base: Annotated[str, typer.Option(
        envvar="FORGETMENOT_RUNBOOK_BASE",
        help="Where on-call reads the runbooks (a URL, as `alerts --runbook-base`): the verdict pages, "
             "the API and the alerts link each verdict's runbook there.")] = RUNBOOK_BASE,
    log_level: Annotated[LogLevel, typer.Option(
        envvar="FORGETMENOT_LOG_LEVEL", case_sensitive=False,
        help="The least a line must matter to be written; debug also lets the libraries (the "
             "scheduler, uvicorn, httpx, transformers) say more than their warnings.")] = LogLevel.INFO,
    log_format: Annotated[LogFormat, typer.Option(
        envvar="FORGETMENOT_LOG_FORMAT", case_sensitive=False,
        help="text (a line per record, for a person) or json (one JSON object per line, for a log "
             "pipeline); a run, a verdict and an action each carry their facts as fields.")] = LogFormat.TEXT,
) -> None:
    """Run the monitor: scheduled probes, verdicts, /metrics, /healthz, /readyz and /api/v1."""
    from monitor.service.access import load_access

    _log_redacted(log_level, log_format)
    with reported(said=_log_error):
        access = load_access(web_config, token_file, token_env, open_metrics)
    _serve(config, host, port, access, run_now=run_now, stale_after=stale_after, runbook_base=runbook_base)


def _log_redacted(level: LogLevel, form: LogFormat) -> None:
    """Every line of the process through one redacting handler, one line per record on stderr."""
    from monitor.service.logs import configure, without_progress_bars

    without_progress_bars()
    configure(level, form)


def _log_error(problem: str) -> None:
    import logging

    logging.getLogger("forgetmenot.serve").error("%s", problem)


def _serve(config: Path, host: str, port: int, access: Any, *, run_now: bool, stale_after: float,
           runbook_base: str) -> None:
    import logging
    import signal
    import threading

    from monitor.service.http import Api, HttpServer
    from monitor.service.scheduler import open_monitor
    from monitor.service.server import bind

    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    with reported(said=_log_error):
        listening = bind(host, port)  # first: a port in use is one line, before the database is touched
        monitor = open_monitor(config)
        monitor.stale_after, monitor.beat_every = stale_after, min(10.0, stale_after / 3)
        api = Api(monitor.config, monitor.store, monitor.registry, monitor.not_ready, access,
                  on_candidate=monitor.sync_candidates, suites=monitor.suites, degraded=monitor.degraded,
                  runbook_base=runbook_base)
        api.warm()
        http = HttpServer(api, host, port, listening).start()
        monitor.start(run_now=run_now)
    said = logging.getLogger("forgetmenot.serve")
    if not access.required and host not in ("127.0.0.1", "::1", "localhost"):
        said.warning("serving on %s with no credentials: anyone who can reach it reads the API (verdicts, "
                     "actions, deploy details); see docs/security.md", host)
    serving = f"serving on {http.scheme}://{host}:{http.port} (metrics, healthz, readyz, api/v1)"
    if not access.required:
        serving += ", no credentials required"
    said.info(serving)
    stop.wait()
    said.info("stopping: the run in progress is marked interrupted")
    monitor.stop(wait=True)
    http.stop()


def db_upgrade(config: ConfigOpt = DEFAULT_CONFIG,
               revision: Annotated[str, typer.Argument(help="Target revision.")] = "head") -> None:
    """Apply schema migrations (Alembic) to the policy's database."""
    from alembic.util.exc import CommandError

    from monitor.errors import Refused
    from monitor.store import make_engine
    from monitor.store.migrate import current, upgrade

    with opened(config, check_paths=False) as policy:
        engine = make_engine(policy.config.database_url())
        try:
            upgrade(engine, revision)
            console.print(f"database at revision {current(engine)}")
        except CommandError as exc:  # a revision that does not exist is the asker's input
            raise Refused(f"REVISION: {exc}") from None
        finally:
            engine.dispose()


def spool_replay(config: ConfigOpt = DEFAULT_CONFIG) -> None:
    """Put measurements kept while the database was away back into it (serve does this itself).
    Exits 1 if any was left for later or quarantined (the database refuses it: see its reason)."""
    from rich.markup import escape

    from monitor.probing.spool import spool_for

    with opened(config) as policy:
        spool = spool_for(policy.config)
        done = spool.replay(policy.store)
    console.print(f"replayed {done.runs} run(s), {done.results} result(s) from {spool.folder}")
    if done.busy:
        console.print(f"{done.busy} file(s) left to a replay running at the same time")
    for failure in done.failed:  # escaped: a reason may hold brackets rich would take as markup
        console.print(f"[red]not replayed[/red], left for the next replay: {escape(failure)}")
    for quarantined in done.quarantined:
        console.print(f"[red]quarantined[/red], never to be replayed: {escape(quarantined)}")
    if done.failed or done.quarantined:
        raise typer.Exit(1)


COMMANDS: dict[str, Callable[..., Any]] = {"serve": serve, "alerts": alerts}
DB_COMMANDS: dict[str, Callable[..., Any]] = {"upgrade": db_upgrade}
SPOOL_COMMANDS: dict[str, Callable[..., Any]] = {"replay": spool_replay}
