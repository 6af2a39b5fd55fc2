"""The monitor's HTTP face: /metrics, /healthz, /readyz, a small JSON API, the monitor's own pages
(`monitor.service.pages`) and what rollouts ask: candidates and the retention gate
(`monitor.service.rollouts`).

An ASGI app (Starlette's request and response types) served by uvicorn (`monitor.service.server`),
so a slow client costs a coroutine and never a thread. It is bounded like any server that faces a
network: credentials checked first (`monitor.service.access`: TLS, mTLS, basic auth, bearer
tokens; 401 otherwise), GET and HEAD only, POST only to register a candidate and DELETE only to
retire one (405 otherwise), query parameters checked (400 with the reason), a body read within
its deadline (408), limits applied in SQL, no traceback ever sent. `/healthz` is answered on the
event loop itself; everything that asks the database runs on at most `workers` threads, so no
number of slow queries keeps a liveness probe waiting. Pages get the same credential check and
the same bounds; their errors are HTML, the API's JSON.
"""

from __future__ import annotations

import functools
import gzip
import logging
import ssl
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

import anyio
from prometheus_client import CollectorRegistry, Counter
from sqlalchemy import text
from starlette.requests import ClientDisconnect, Request
from starlette.types import Receive, Scope, Send

from monitor.metrics import names as metrics
from monitor.metrics.exporter import CachedExposition
from monitor.metrics.process import register_process_metrics
from monitor.metrics.rules import RUNBOOK_BASE
from monitor.policy.schema import Config
from monitor.policy.suites import Suite
from monitor.present.facts import Summaries
from monitor.present.shapes import action_json, model_json, run_json, verdict_json, verdicts_json
from monitor.probing.weights import home
from monitor.service.access import Access
from monitor.service.pages import Pages
from monitor.service.replies import MAX_ID, BadRequest, Reply, json_reply, parse_id
from monitor.service.rollouts import GATE, MAX_BODY, Rollouts
from monitor.service.scrape import encoder, joined, wants_openmetrics
from monitor.service.server import HttpServer, ServerLimits
from monitor.store import Store, Verdict
from monitor.store.versions import with_made

__all__ = ["Api", "HttpServer", "ServerLimits"]
log = logging.getLogger(__name__)

METHODS = ("GET", "HEAD")
MAX_LIMIT = 1000
READY_S = 5.0  # the longest /readyz waits for the database before it says so
QUERY_KEYS = {"/api/v1/verdicts": ("model", "version", "capability", "limit"),
              "/verdicts/latest": ("model", "version", "capability"),
              "/api/v1/actions": ("model", "limit"),
              GATE: ("model", "version", "wait", "mode")}


class TooSlow(BadRequest):
    """The client did not send its body within the deadline (408)."""


class Api:
    """The ASGI app. Its blocking work (the store, the pages, bcrypt) runs on `workers` threads."""

    def __init__(self, config: Config, store: Store, registry: CollectorRegistry | None = None,
                 ready: Callable[[], str | None] = lambda: None, access: Access | None = None,
                 reports: Path | None = None, on_candidate: Callable[[], object] = lambda: None,
                 suites: Sequence[Suite] | None = None, degraded: Callable[[], list[str]] = list,
                 limits: ServerLimits | None = None, runbook_base: str = RUNBOOK_BASE) -> None:
        """`reports` is where evidence reports are cached (default `<FORGETMENOT_HOME>/reports`);
        `on_candidate` schedules a candidate registered over the API; `suites` are the
        monitor's (default: loaded from the policy on first use); `degraded` says what /readyz
        reports without failing (a quarantined spool file); `runbook_base` is where the
        verdicts' summaries link the runbooks."""
        self.config = config
        self.store = store
        self.access = access or Access()
        self.limits = limits or ServerLimits()
        self.rollouts = Rollouts(config, store, on_candidate, writes_allowed=self.access.required,
                                 suites=suites)
        self.runbook_base = runbook_base
        self.pages = Pages(config, store, reports or home() / "reports", suites=self.rollouts.suites,
                           runbook_base=runbook_base)
        self.registry = registry or CollectorRegistry()
        self._exposition = CachedExposition(store)
        # the server's own instruments: one set per Api, whoever else shares `registry`
        self._own = CollectorRegistry()
        self._stale_scrapes = Counter(metrics.EXPOSITION_ERRORS.full_name, metrics.EXPOSITION_ERRORS.help,
                                      registry=self._own)
        register_process_metrics(self._own)
        self._not_ready = ready
        self._degraded = degraded
        self._threads = anyio.CapacityLimiter(self.limits.workers)

    def warm(self) -> None:
        """Render the store's exposition once before serving, so no scrape waits for the first."""
        self._exposition.render()

    @property
    def tls(self) -> ssl.SSLContext | None:
        """Every connection is TLS where the web config gives a certificate."""
        return self.access.tls

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        request = Request(scope, receive)
        reply = await self._reply(request, scope["method"], scope["path"])
        await reply.response()(scope, receive, send)

    async def _reply(self, request: Request, method: str, path: str) -> Reply:
        writing = self.rollouts.accepts(path, method)
        if method not in METHODS and not writing:
            return self._not_allowed(path, method)
        authorization = request.headers.get("authorization", "")
        if not await self._allowed(path, authorization):
            return json_reply(401, {"error": "credentials required"},
                              [("WWW-Authenticate", self.access.challenge())])
        try:
            if writing:
                return await self._write(request, path, method)
            query = _query(path, request.scope["query_string"].decode("latin-1"))
            return await self._route(path, query, request)
        except TooSlow as exc:  # the rest of the body may still come: the connection cannot be reused
            return json_reply(408, {"error": str(exc)}, [("Connection", "close")])
        except BadRequest as exc:
            return self._error(path, 400, str(exc))
        except Exception:
            log.exception("HTTP %s %s failed", method, path[:200])
            return self._error(path, 500, "internal error; the monitor's log has the details")

    def _not_allowed(self, path: str, method: str) -> Reply:
        refused = {"error": f"{method[:16]} is not allowed here: only candidates are written"}
        allow = "GET, HEAD"
        if self.rollouts.accepts(path, "POST"):
            allow = "GET, HEAD, POST"
        elif self.rollouts.accepts(path, "DELETE"):
            allow = "DELETE"
        return json_reply(405, refused, [("Allow", allow)])

    async def _allowed(self, path: str, authorization: str) -> bool:
        """Checked on a worker thread where a credential may cost a bcrypt check (~50 ms)."""
        if self.access.open_to_all(path):
            return True
        return bool(await self._offload(self.access.allows, path, authorization))

    async def _offload(self, call: Callable[..., Any], *args: Any) -> Any:
        return await anyio.to_thread.run_sync(functools.partial(call, *args), limiter=self._threads)

    def _error(self, path: str, status: int, message: str) -> Reply:
        """An HTML page for a page's path, JSON for the API's."""
        if self.pages.handles(path):
            return self.pages.error(status, message)
        return json_reply(status, {"error": message})

    async def _write(self, request: Request, path: str, method: str) -> Reply:
        refused = self.rollouts.refusal()
        if refused is not None:
            return refused
        body = b""
        if method == "POST":
            self.rollouts.expect_json(request.headers.get("content-type", ""))
            body = await self._body(request)
        return await self._offload(self.rollouts.write, path, method, body)

    async def _body(self, request: Request) -> bytes:
        """The whole body, as long as Content-Length says and within the body deadline."""
        raw_length = request.headers.get("content-length", "")
        if not (raw_length.isascii() and raw_length.isdigit()) or int(raw_length) > MAX_BODY:
            raise BadRequest(f"Content-Length is required, at most {MAX_BODY} bytes")
        received = bytearray()
        with anyio.move_on_after(self.limits.body_timeout_s) as deadline:
            try:
                async for chunk in request.stream():
                    received += chunk
            except ClientDisconnect:
                raise BadRequest("the body ended before its Content-Length") from None
        if deadline.cancelled_caught:
            raise TooSlow(f"the body did not arrive within {self.limits.body_timeout_s:g} s")
        return bytes(received)

    async def _route(self, path: str, query: dict[str, str], request: Request) -> Reply:
        """The answers that must never wait for a worker, or that wait themselves, first."""
        if path == "/healthz":
            return json_reply(200, {"status": "ok"})
        if path == "/readyz":
            return await self._readyz()
        if path == GATE:
            return await self.rollouts.gate(query, self._offload)
        if path == "/metrics":
            gzipped = _accepts_gzip(request.headers.get("accept-encoding", ""))
            openmetrics = wants_openmetrics(request.headers.get("accept", ""))
            return await self._offload(self._metrics, gzipped, openmetrics)
        return await self._offload(self._read, path, query)

    def _read(self, path: str, query: dict[str, str]) -> Reply:
        if self.pages.handles(path):
            return self.pages.get(path, query)
        if path == "/api/v1/models":
            return json_reply(200, self._models())
        if path == "/api/v1/verdicts":
            return json_reply(200, self._verdicts(query))
        if path.startswith("/api/v1/verdicts/"):
            return self._verdict(path.removeprefix("/api/v1/verdicts/"))
        if path.startswith("/api/v1/runs/"):
            return self._run(path.rsplit("/", 1)[1])
        if path == "/api/v1/actions":
            return json_reply(200, self._actions(query))
        if self.rollouts.handles(path):
            return self.rollouts.listed(path)
        return json_reply(404, {"error": f"no such endpoint: {path[:200]}"})

    def _metrics(self, gzipped: bool, openmetrics: bool) -> Reply:
        """The store's state (cached until it changes), then the process's and the server's own
        instruments, as OpenMetrics when asked; gzipped when asked, as Prometheus asks: 5.5 MB at
        50,000 series is 160 KB so."""
        encode, content_type = encoder(openmetrics)
        parts = [self._store_exposition(openmetrics), encode(self.registry), encode(self._own)]
        body = joined(parts, openmetrics)
        headers = [("Vary", "Accept, Accept-Encoding")]
        if gzipped:
            body = gzip.compress(body, compresslevel=1)
            headers.append(("Content-Encoding", "gzip"))
        return Reply(200, body, content_type, headers)

    def _store_exposition(self, openmetrics: bool) -> bytes:
        """While the database cannot be read, the last good text, counted, so a dashboard goes on
        showing the last known state and an alert on the counter says it is stale."""
        try:
            return self._exposition.render(openmetrics=openmetrics)
        except Exception as exc:
            last = self._exposition.last(openmetrics)
            if last is None:
                raise
            self._stale_scrapes.inc()
            log.warning("scrape served the last good exposition: the store cannot be read (%s)",
                        type(exc).__name__)
            return last

    async def _readyz(self) -> Reply:
        problem = self._not_ready()
        if problem is None:
            problem = await self._database_problem()
        if problem:
            return json_reply(503, {"status": "not ready", "reason": problem})
        degraded = await self._offload(self._degraded)
        if degraded:
            return json_reply(200, {"status": "ready", "degraded": degraded})
        return json_reply(200, {"status": "ready"})

    async def _database_problem(self) -> str | None:
        """A database that does not answer within READY_S is as unready as one that refuses."""
        with anyio.move_on_after(READY_S):
            try:
                await anyio.to_thread.run_sync(self._ping, abandon_on_cancel=True)
            except Exception as exc:
                return f"database unreachable: {type(exc).__name__}"
            return None
        return f"database unreachable: no answer within {READY_S:g} s"

    def _ping(self) -> None:
        with self.store.engine.connect() as conn:
            conn.execute(text("SELECT 1"))

    def _models(self) -> list[dict[str, Any]]:
        """Each model's live version and its newest verdict per capability against the baseline
        (a candidate's verdicts are the gate's, not the model's)."""
        listed = []
        for name, spec in with_made(self.config, self.store).models.items():
            live = self.store.live_version(self.config, name)
            listed.append(model_json(name, spec, live, self._newest(name, live, spec.baseline)))
        return listed

    def _newest(self, model: str, candidate: str, baseline: str) -> list[Verdict]:
        """The newest verdict per capability of `candidate` against `baseline`."""
        latest: dict[str, Verdict] = {}
        for verdict in self.store.verdicts(model=model, candidate=candidate, baseline=baseline):
            latest[verdict.capability] = verdict
        return list(latest.values())

    def _verdicts(self, query: dict[str, str]) -> list[dict[str, Any]]:
        found = self.store.verdicts(model=query.get("model"), candidate=query.get("version"),
                                    capability=query.get("capability"), newest=_limit(query))
        kinds = self.store.verdict_kinds([v.id for v in found if v.id is not None])
        newest_first = found[::-1]
        return verdicts_json(newest_first, kinds, self._summaries())

    def _verdict(self, raw: str) -> Reply:
        """One verdict with its kinds, as the list gives each; what direct alert pushes linked to."""
        verdict_id = parse_id(raw, "verdict")
        found = self.store.get_verdict(verdict_id)
        if found is None:
            return json_reply(404, {"error": f"verdict {verdict_id} does not exist"})
        verdict, kinds = found
        return json_reply(200, verdict_json(verdict, kinds, self._summaries().of(verdict, kinds)))

    def _summaries(self) -> Summaries:
        """One per request: what it reads of the store is read once."""
        return Summaries(self.store, self.config, self.rollouts.suites, self.runbook_base)

    def _actions(self, query: dict[str, str]) -> list[dict[str, Any]]:
        """The audit trail, newest first."""
        found = self.store.actions(query.get("model"), newest=_limit(query))
        return [action_json(action) for action in reversed(found)]

    def _run(self, raw: str) -> Reply:
        number = raw.isascii() and raw.isdigit()
        if number and (len(raw) > 10 or int(raw) > MAX_ID):
            raise BadRequest(f"run id {raw[:24]}… is out of range")
        run = self.store.get_run(int(raw)) if number else None
        if run is None:
            return json_reply(404, {"error": f"run {raw[:64]} does not exist"})
        run_id = run.id or 0
        kinds = self.store.summaries([run_id]).get(run_id, [])
        failed = self.store.run_errors([run_id]).get(run_id)
        return json_reply(200, run_json(run, kinds, failed))


def _query(path: str, raw: str) -> dict[str, str]:
    """The query parameters `path` takes, each at most once and at most 200 characters."""
    try:
        parsed = parse_qs(raw, keep_blank_values=True, max_num_fields=10)
    except ValueError as exc:
        raise BadRequest("too many query parameters") from exc
    known = QUERY_KEYS.get(path, ())
    for key, values in parsed.items():
        if key not in known:
            raise BadRequest(_unknown_parameter(key, known))
        if len(values) > 1 or len(values[0]) > 200:
            raise BadRequest(f"query parameter '{key}' must be given once, at most 200 characters")
        if not values[0].isprintable():
            raise BadRequest(f"query parameter '{key}' holds a control character")
    return {key: values[0] for key, values in parsed.items()}


def _unknown_parameter(key: str, known: Sequence[str]) -> str:
    message = f"unknown query parameter '{key[:40]}'"
    if known:
        message += f"; known: {', '.join(known)}"
    return message


def _limit(query: dict[str, str]) -> int:
    raw = query.get("limit", "100")
    if not (raw.isascii() and raw.isdigit()) or not 1 <= int(raw) <= MAX_LIMIT:
        raise BadRequest(f"limit must be a whole number from 1 to {MAX_LIMIT}")
    return int(raw)


def _accepts_gzip(header: str) -> bool:
    """`gzip` in Accept-Encoding, unless refused with `q=0`."""
    for part in header.split(","):
        coding, _, params = part.strip().partition(";")
        if coding.strip().lower() == "gzip":
            return params.replace(" ", "").lower() not in ("q=0", "q=0.0", "q=0.00", "q=0.000")
    return False
