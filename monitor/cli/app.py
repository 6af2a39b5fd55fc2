"""The `forgetmenot` command: a thin typer layer over the library, one module per command group.

    policy     validate, suites
    probing    probe, history, calibrate, model prepare, servers prepare
    verdicts   judge, verdicts, explain
    actions    actions, approve, rollback
    service    serve, alerts, db upgrade
    dashboards dashboards write, dashboards push
    demo       demo, demo-loop
"""

from __future__ import annotations

import atexit
import os
import sys
from collections.abc import Callable, Mapping
from typing import Any

import typer

from monitor.cli import actions, dashboards, demo, policy, probing, rollouts, service, verdicts
from monitor.cli.context import EXIT_CODES_HELP, main_options


def _group(commands: Mapping[str, Callable[..., Any]], **settings: Any) -> typer.Typer:
    group = typer.Typer(no_args_is_help=True, pretty_exceptions_show_locals=False, **settings)
    for name, command in commands.items():
        group.command(name, epilog=EXIT_CODES_HELP)(command)
    return group


app = _group({**policy.COMMANDS, **probing.COMMANDS, **verdicts.COMMANDS, **actions.COMMANDS,
              **service.COMMANDS, **demo.COMMANDS, **rollouts.COMMANDS},
             help="Watch deployed fine-tuned models for forgetting.")
app.callback(epilog=EXIT_CODES_HELP)(main_options)
app.add_typer(_group(probing.MODEL_COMMANDS, help="Prepare model weights."), name="model")
app.add_typer(_group(probing.SERVERS_COMMANDS,
                     help="Local model servers (vLLM, llama-cpp-python) for trying the openai backend."),
              name="servers")
app.add_typer(_group(service.DB_COMMANDS, help="The monitor's database schema."), name="db")
app.add_typer(_group(service.SPOOL_COMMANDS, help="Measurements kept while the database was away."),
              name="spool")
app.add_typer(_group(rollouts.CANDIDATE_COMMANDS, help="Versions registered to be judged before they "
                     "take traffic."), name="candidate")
app.add_typer(_group(dashboards.COMMANDS, help="Grafana dashboards: write the JSON, or push it to Grafana."),
              name="dashboards")



def main() -> None:
    """The console script: the command, then the exit. A process that loaded torch runs its exit
    handlers and leaves without finalising the interpreter: tearing down torch's and
    transformers' modules took 1.3 s of every `forgetmenot probe` and frees nothing the
    operating system does not free anyway."""
    try:
        app()
        code: object = 0
    except SystemExit as exc:
        code = exc.code
    if "torch" not in sys.modules:
        raise SystemExit(code)
    status = _status(code)
    atexit._run_exitfuncs()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(status)


def _status(code: object) -> int:
    """SystemExit's code as a process status: None is success, text is printed and fails."""
    if code is None:
        return 0
    if isinstance(code, int):
        return code
    print(code, file=sys.stderr)
    return 1


if __name__ == "__main__":
    main()
