"""The monitor's HTTP face: /metrics, /healthz, /readyz, a small JSON API, the monitor's own pages
(`monitor.service.pages`) and what rollouts ask: candidates and the retention gate
(`monitor.service.rollouts`).

A plain WSGI app on prometheus_client's threading WSGI server: the endpoints are few and all but
one read-only, so a web framework would add a dependency and nothing else. It is bounded like any
server that faces a network: credentials checked first (`monitor.service.access`: TLS, mTLS,
basic auth, bearer tokens; 401 otherwise), GET and HEAD only, POST only to register a candidate
(405 otherwise), query parameters
checked (400 with the reason), limits applied in SQL, no traceback ever sent, a socket timeout,
and at most `workers` requests served at once. Pages get the same credential check and the same
bounds; their errors are HTML, the API's JSON.
"""

from __future__ import annotations

import gzip
import logging
import ssl
import threading
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs
from wsgiref.simple_server import WSGIRequestHandler, make_server

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.exposition import ThreadingWSGIServer
from sqlalchemy import text

from monitor.metrics.exporter import CachedExposition
from monitor.policy.schema import Config
from monitor.policy.suites import Suite
from monitor.probing.weights import home
from monitor.service.access import Access
from monitor.service.pages import Pages
from monitor.service.replies import MAX_ID, BadRequest, json_reply, parse_id
from monitor.service.rollouts import Rollouts
from monitor.store import Store, Verdict, VerdictKind
from monitor.store.versions import with_made

StartResponse = Callable[..., Any]
Environ = dict[str, Any]
log = logging.getLogger(__name__)

METHODS = ("GET", "HEAD")
MAX_LIMIT = 1000
QUERY_KEYS = {"/api/v1/verdicts": ("model", "version", "capability", "limit"),
              "/verdicts/latest": ("model", "version", "capability"),
              "/api/v1/actions": ("model", "limit"),
              "/api/v1/gate": ("model", "version", "wait", "mode")}


class _Quiet(WSGIRequestHandler):
    timeout = 10.0  # seconds a client may take to send its request: half-open sockets are dropped

    def setup(self) -> None:
        """The TLS handshake happens here, in the request's own thread and under its timeout, so
        a client that never finishes it holds one worker for 10 s and never the accept loop."""
        self.request.settimeout(self.timeout)
        if isinstance(self.request, ssl.SSLSocket):
            self.request.do_handshake()
        super().setup()

    def log_message(self, format: str, *args: Any) -> None:
        """Scrapes every few seconds would drown the log."""


class _BoundedServer(ThreadingWSGIServer):
    """A thread per request, but at most `workers` at once: the rest wait in the listen backlog,
    so 300 half-open requests no longer pin 300 threads."""

    workers = 16

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._slots = threading.BoundedSemaphore(self.workers)

    def process_request(self, request: Any, client_address: Any) -> None:
        self._slots.acquire()
        try:
            super().process_request(request, client_address)
        except BaseException:
            self._slots.release()
            raise

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        try:
            super().process_request_thread(request, client_address)
        finally:
            self._slots.release()

    def handle_error(self, request: Any, client_address: Any) -> None:
        """A client that fails the handshake or hangs up is the client's problem: one line, no
        traceback on stderr."""
        log.debug("connection from %s dropped", client_address[0] if client_address else "?",
                  exc_info=True)


class Api:
    def __init__(self, config: Config, store: Store, registry: CollectorRegistry | None = None,
                 ready: Callable[[], str | None] = lambda: None, access: Access | None = None,
                 reports: Path | None = None, on_candidate: Callable[[], object] = lambda: None,
                 suites: Sequence[Suite] | None = None) -> None:
        """`reports` is where evidence reports are cached (default `<FORGETMENOT_HOME>/reports`);
        `on_candidate` schedules a candidate registered over the API; `suites` are the
        monitor's (default: loaded from the policy on first use)."""
        self.config = config
        self.store = store
        self.access = access or Access()
        self.pages = Pages(config, store, reports or home() / "reports")
        self.rollouts = Rollouts(config, store, on_candidate, writes_allowed=self.access.required,
                                 suites=suites)
        self.registry = registry or CollectorRegistry()
        self._exposition = CachedExposition(store)
        self._not_ready = ready

    def warm(self) -> None:
        """Render the store's exposition once before serving, so no scrape waits for the first."""
        self._exposition.render()

    def __call__(self, environ: Environ, start_response: StartResponse) -> Iterable[bytes]:
        method = environ.get("REQUEST_METHOD", "GET")
        path = environ.get("PATH_INFO", "/")
        writing = self.rollouts.accepts(path, method)
        if method not in METHODS and not writing:
            refused = {"error": f"{method[:16]} is not allowed here: only candidates are written"}
            allow = ("GET, HEAD, POST" if self.rollouts.accepts(path, "POST")
                     else "DELETE" if self.rollouts.accepts(path, "DELETE") else "GET, HEAD")
            return _json(start_response, 405, refused, [("Allow", allow)])
        if not self.access.allows(path, environ):
            denied = _json(start_response, 401, {"error": "credentials required"},
                           [("WWW-Authenticate", self.access.challenge())])
            return [] if method == "HEAD" else denied
        try:
            if writing:
                return self.rollouts.write(path, method, environ).send(start_response)
            body = self._route(path, _query(path, environ.get("QUERY_STRING", "")), start_response, environ)
        except BadRequest as exc:
            body = self._error(start_response, path, 400, str(exc))
        except Exception:
            log.exception("HTTP %s %s failed", method, path[:200])
            body = self._error(start_response, path, 500, "internal error; the monitor's log has the details")
        return [] if method == "HEAD" else body

    def _error(self, start_response: StartResponse, path: str, status: int, message: str) -> list[bytes]:
        """An HTML page for a page's path, JSON for the API's."""
        if self.pages.handles(path):
            return self.pages.error(status, message).send(start_response)
        return _json(start_response, status, {"error": message})

    def _route(self, path: str, query: dict[str, str], start_response: StartResponse,
               environ: Environ) -> Iterable[bytes]:
        if self.pages.handles(path):
            return self.pages.get(path, query).send(start_response)
        if path == "/metrics":
            return self._metrics(start_response, _accepts_gzip(environ.get("HTTP_ACCEPT_ENCODING", "")))
        if path == "/healthz":
            return _json(start_response, 200, {"status": "ok"})
        if path == "/readyz":
            return self._readyz(start_response)
        if path == "/api/v1/models":
            return _json(start_response, 200, self._models())
        if path == "/api/v1/verdicts":
            return _json(start_response, 200, self._verdicts(query))
        if path.startswith("/api/v1/verdicts/"):
            return self._verdict(start_response, path.removeprefix("/api/v1/verdicts/"))
        if path.startswith("/api/v1/runs/"):
            return self._run(start_response, path.rsplit("/", 1)[1])
        if path == "/api/v1/actions":
            return _json(start_response, 200, self._actions(query))
        if self.rollouts.handles(path):
            return self.rollouts.get(path, query).send(start_response)
        return _json(start_response, 404, {"error": f"no such endpoint: {path[:200]}"})

    def _metrics(self, start_response: StartResponse, gzipped: bool) -> Iterable[bytes]:
        """The store's state (cached until it changes) followed by this process's own instruments;
        gzipped when asked, as Prometheus asks: 5.5 MB at 50,000 series is 160 KB so."""
        body = self._exposition.render() + generate_latest(self.registry)
        headers = [("Content-Type", CONTENT_TYPE_LATEST)]
        if gzipped:
            body = gzip.compress(body, compresslevel=1)
            headers.append(("Content-Encoding", "gzip"))
        start_response("200 OK", [*headers, ("Content-Length", str(len(body))), ("Vary", "Accept-Encoding")])
        return [body]

    def _readyz(self, start_response: StartResponse) -> Iterable[bytes]:
        problem = self._not_ready()
        if problem is None:
            try:
                with self.store.engine.connect() as conn:
                    conn.execute(text("SELECT 1"))
            except Exception as exc:
                problem = f"database unreachable: {type(exc).__name__}"
        if problem:
            return _json(start_response, 503, {"status": "not ready", "reason": problem})
        return _json(start_response, 200, {"status": "ready"})

    def _models(self) -> list[dict[str, Any]]:
        """Each model's live version and its newest verdict per capability against the baseline
        (a candidate's verdicts are the gate's, not the model's)."""
        latest: dict[tuple[str, str], Any] = {}
        lives = {name: self.store.live_version(self.config, name) for name in self.config.models}
        for name, spec in self.config.models.items():
            for verdict in self.store.verdicts(model=name, candidate=lives[name], baseline=spec.baseline):
                latest[(verdict.model, verdict.capability)] = verdict
        return [{
            "model": name, "live": lives[name], "baseline": spec.baseline,
            "versions": list(spec.versions),
            "backend": spec.backend.kind,
            "capabilities": {cap: {"phase": v.phase, "diagnosis": v.diagnosis, "verdict": v.id,
                                   "candidate": v.candidate}
                             for (model, cap), v in latest.items() if model == name},
        } for name, spec in with_made(self.config, self.store).models.items()]

    def _verdicts(self, query: dict[str, str]) -> list[dict[str, Any]]:
        found = self.store.verdicts(model=query.get("model"), candidate=query.get("version"),
                                    capability=query.get("capability"), newest=_limit(query))
        kinds = self.store.verdict_kinds([v.id for v in found if v.id is not None])
        return [_verdict_json(v, kinds.get(v.id or 0, [])) for v in reversed(found)]

    def _verdict(self, start_response: StartResponse, raw: str) -> Iterable[bytes]:
        """One verdict with its kinds, as the list gives each; what direct alert pushes linked to."""
        verdict_id = parse_id(raw, "verdict")
        found = self.store.get_verdict(verdict_id)
        if found is None:
            return _json(start_response, 404, {"error": f"verdict {verdict_id} does not exist"})
        return _json(start_response, 200, _verdict_json(*found))

    def _actions(self, query: dict[str, str]) -> list[dict[str, Any]]:
        """The audit trail, newest first."""
        found = self.store.actions(query.get("model"), newest=_limit(query))
        return [a.model_dump(mode="json") for a in reversed(found)]

    def _run(self, start_response: StartResponse, raw: str) -> Iterable[bytes]:
        if raw.isdigit() and (len(raw) > 10 or int(raw) > MAX_ID):
            raise BadRequest(f"run id {raw[:24]}… is out of range")
        run = self.store.get_run(int(raw)) if raw.isdigit() else None
        if run is None:
            return _json(start_response, 404, {"error": f"run {raw} does not exist"})
        summaries = self.store.summaries([run.id or 0]).get(run.id or 0, [])
        body = {**run.model_dump(mode="json"),
                "kinds": [{"kind": s.kind, "mean_score": s.mean_score, "scored": s.scored,
                           "errors": s.errors} for s in summaries]}
        return _json(start_response, 200, body)


def _verdict_json(verdict: Verdict, kinds: Sequence[VerdictKind]) -> dict[str, Any]:
    return {**verdict.model_dump(mode="json"),
            "kinds": [k.model_dump(mode="json", exclude={"verdict_id"}) for k in kinds]}


def _query(path: str, raw: str) -> dict[str, str]:
    """The query parameters `path` takes, each at most once and at most 200 characters."""
    try:
        parsed = parse_qs(raw, keep_blank_values=True, max_num_fields=10)
    except ValueError as exc:
        raise BadRequest("too many query parameters") from exc
    known = QUERY_KEYS.get(path, ())
    for key, values in parsed.items():
        if key not in known:
            raise BadRequest(f"unknown query parameter '{key[:40]}'" + (f"; known: {', '.join(known)}"
                                                                        if known else ""))
        if len(values) > 1 or len(values[0]) > 200:
            raise BadRequest(f"query parameter '{key}' must be given once, at most 200 characters")
    return {key: values[0] for key, values in parsed.items()}


def _limit(query: dict[str, str]) -> int:
    raw = query.get("limit", "100")
    if not raw.isdigit() or not 1 <= int(raw) <= MAX_LIMIT:
        raise BadRequest(f"limit must be a whole number from 1 to {MAX_LIMIT}")
    return int(raw)


def _json(start_response: StartResponse, status: int, body: Any,
          headers: Sequence[tuple[str, str]] = ()) -> list[bytes]:
    return json_reply(status, body, headers).send(start_response)


class HttpServer:
    """The API served from a daemon thread; `port=0` picks a free port (see `.port`). With the
    app's TLS context, every connection is TLS (the handshake done in the request's thread)."""

    def __init__(self, app: Api, host: str = "127.0.0.1", port: int = 9464) -> None:
        self._server = make_server(host, port, app, _BoundedServer, handler_class=_Quiet)
        if app.access.tls is not None:
            self._server.socket = app.access.tls.wrap_socket(self._server.socket, server_side=True,
                                                             do_handshake_on_connect=False)
        self.scheme = "https" if app.access.tls is not None else "http"
        self.port = self._server.server_port
        self._thread = threading.Thread(target=self._server.serve_forever, name="forgetmenot-http",
                                        daemon=True)

    def start(self) -> HttpServer:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()


def _accepts_gzip(header: str) -> bool:
    """`gzip` in Accept-Encoding, unless refused with `q=0`."""
    for part in header.split(","):
        coding, _, params = part.strip().partition(";")
        if coding.strip().lower() == "gzip":
            return params.replace(" ", "").lower() not in ("q=0", "q=0.0", "q=0.00", "q=0.000")
    return False
