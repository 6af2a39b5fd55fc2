"""`candidate add|list` and `gate`: what a rollout or a CI pipeline asks before a version takes
traffic. `gate` asks a running monitor over HTTP (`--url`) or reads the policy's database."""

from __future__ import annotations

import json
import os
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

import typer

from monitor.cli.context import (
    DEFAULT_CONFIG,
    ConfigOpt,
    Output,
    OutputOpt,
    console,
    opened,
    print_json,
    reported,
    whoami,
)
from monitor.errors import ForgetmenotError
from monitor.judge.gate import MAX_WAIT_S, Gate, UnknownVersion, wait
from monitor.vocabulary import Decision

# As `judge` exits, plus 5: still pending when the wait ran out.
EXIT_CODES = {Decision.PASS: 0, Decision.FAIL: 1, Decision.ERROR: 3, Decision.INCONCLUSIVE: 4,
              Decision.PENDING: 5}
MAX_REPLY_BYTES = 4 * 2**20
POLL_S = 60  # longest single request to a remote gate; the client asks again until its wait ends


def candidate_add(
    model: Annotated[str, typer.Argument(help="The policy's model.")],
    version: Annotated[str, typer.Argument(help="The candidate's new version name.")],
    path: Annotated[str | None, typer.Option(help="A transformers folder (in-process models).")] = None,
    gguf_file: Annotated[str | None, typer.Option(help="A GGUF file (in-process models).")] = None,
    served_name: Annotated[str | None, typer.Option(help="The name a server knows it by.")] = None,
    adapter: Annotated[str | None, typer.Option(help="A vLLM LoRA adapter's name.")] = None,
    description: Annotated[str, typer.Option(help="What it is.")] = "",
    config: ConfigOpt = DEFAULT_CONFIG,
) -> None:
    """Register a candidate version: every running monitor probes it within one heartbeat, judges
    it against the baseline and live, and watches it from then on. Ask `forgetmenot gate`."""
    from monitor.store.candidates import register

    given = {"version": version, "path": path, "gguf_file": gguf_file, "served_name": served_name,
             "adapter": adapter, "description": description}
    with opened(config) as policy:  # a refusal exits 2 with its reason
        row = register(policy.store, policy.config, model, {k: v for k, v in given.items() if v},
                       actor=whoami())
    console.print(f"registered {row.model} {row.version}; ask: forgetmenot gate {row.model} {row.version}",
                  highlight=False)


def candidate_list(config: ConfigOpt = DEFAULT_CONFIG,
                   model: Annotated[str | None, typer.Option(help="Only this model.")] = None,
                   output: OutputOpt = Output.TEXT) -> None:
    """The candidates registered, oldest first; with --output json as GET
    /api/v1/models/{model}/candidates gives them."""
    from monitor.present.shapes import candidate_json

    with opened(config) as policy:
        named = None if model is None else policy.model(model)
        rows = policy.store.candidates(named)
    if output == Output.JSON:
        listed = [candidate_json(row) for row in rows]
        print_json(listed)
        return
    for row in rows:
        console.print(f"{row.model} {row.version}  {row.created_at:%Y-%m-%d %H:%M}  "
                      f"{row.source.partition(':')[2]}  {row.spec}", highlight=False, soft_wrap=True)


def candidate_retire(
    model: Annotated[str, typer.Argument(help="The policy's model.")],
    version: Annotated[str, typer.Argument(help="The candidate to stop watching.")],
    config: ConfigOpt = DEFAULT_CONFIG,
) -> None:
    """Stop probing a candidate (shipped, or abandoned); its name stays taken and its scores stay."""
    from monitor.store.candidates import retire

    with opened(config) as policy:
        retire(policy.store, policy.config, model, version, actor=whoami())
    console.print(f"retired {model} {version}: every running monitor stops probing it within one heartbeat",
                  highlight=False)


def gate(
    model: Annotated[str, typer.Argument(help="The policy's model.")],
    version: Annotated[str, typer.Argument(help="The version about to take traffic.")],
    config: ConfigOpt = DEFAULT_CONFIG,
    url: Annotated[str | None, typer.Option(help="A running monitor (http[s]://host:9464); "
                                                 "without it, the policy's database is read.")] = None,
    token_env: Annotated[str, typer.Option(help="Environment variable with the monitor's bearer "
                                                "token (with --url).")] = "FORGETMENOT_TOKEN",
    wait_s: Annotated[float, typer.Option("--wait", help="Seconds to wait for pending verdicts.")] = 600.0,
    junit: Annotated[Path | None, typer.Option(help="Also write the answer as JUnit XML here.")] = None,
    output: OutputOpt = Output.TEXT,
) -> None:
    """May VERSION take traffic? Waits for its verdicts, prints them, exits with the answer:
    0 pass, 1 fail, 3 error (the measurement broke), 4 inconclusive, 5 still pending."""
    from monitor.present.gate import gate_table, write_junit

    wait_s = min(max(wait_s, 0.0), MAX_WAIT_S)
    with reported():  # an unknown version exits 2, an unreachable monitor 3
        answer = (_remote(url, model, version, os.environ.get(token_env, ""), wait_s) if url
                  else _local(config, model, version, wait_s))
    if output == Output.JSON:
        print_json(answer.to_json())
    else:
        console.print(gate_table(answer))
        console.print(f"{answer.decision.value}: {answer.reason}", highlight=False, soft_wrap=True)
    if junit is not None:
        write_junit(answer, junit)
    raise typer.Exit(EXIT_CODES[answer.decision])


def _local(config: Path, model: str, version: str, wait_s: float) -> Gate:
    with opened(config) as policy:
        return wait(policy.store, policy.config, policy.suites(), model, version, wait_s)


def _remote(url: str, model: str, version: str, token: str, wait_s: float) -> Gate:
    """Ask again while pending, each request at most `POLL_S`, until `wait_s` has passed."""
    began = time.monotonic()
    while True:
        left = max(wait_s - (time.monotonic() - began), 0.0)
        answer = _ask(url, model, version, token, int(min(left, POLL_S)))
        if answer.decision != Decision.PENDING or time.monotonic() - began + 1 >= wait_s:
            return Gate(answer.model, answer.version, answer.decision, answer.reason, answer.checks,
                        time.monotonic() - began)
        time.sleep(1.0)


def _ask(url: str, model: str, version: str, token: str, wait_s: int) -> Gate:
    if not url.startswith(("http://", "https://")):
        raise ForgetmenotError(f"--url must start with http:// or https://, not {url[:40]}")
    query = urllib.parse.urlencode({"model": model, "version": version, "wait": wait_s, "mode": "metric"})
    request = urllib.request.Request(f"{url.rstrip('/')}/api/v1/gate?{query}",
                                     headers={"Authorization": f"Bearer {token}"} if token else {})
    try:
        with urllib.request.urlopen(request, timeout=wait_s + 30) as reply:
            body = reply.read(MAX_REPLY_BYTES + 1)
    except urllib.error.HTTPError as exc:
        if exc.code == 404:
            raise UnknownVersion(exc.read(2000).decode("utf-8", "replace")[:300]) from None
        if exc.code != 503:
            detail = exc.read(2000).decode("utf-8", "replace")
            raise ForgetmenotError(f"the monitor answered {exc.code}: {detail[:300]}") from None
        body = exc.read(MAX_REPLY_BYTES + 1)
    except (OSError, urllib.error.URLError) as exc:
        raise ForgetmenotError(f"cannot reach the monitor at {url[:200]}: {exc}") from None
    if len(body) > MAX_REPLY_BYTES:
        raise ForgetmenotError(f"the monitor's answer is over {MAX_REPLY_BYTES} bytes")
    try:
        return Gate.from_json(json.loads(body))
    except (ValueError, KeyError, TypeError) as exc:
        raise ForgetmenotError(f"the monitor's answer is not a gate answer: {str(exc)[:200]}") from None


COMMANDS: dict[str, Callable[..., Any]] = {"gate": gate}
CANDIDATE_COMMANDS: dict[str, Callable[..., Any]] = {"add": candidate_add, "list": candidate_list,
                                                   "retire": candidate_retire}
