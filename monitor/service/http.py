"""The monitor's HTTP face: /metrics, /healthz, /readyz and a small read-only JSON API.

A plain WSGI app on prometheus_client's threading WSGI server: the endpoints are few and
read-only, so a web framework would add a dependency and nothing else.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterable
from typing import Any
from urllib.parse import parse_qs
from wsgiref.simple_server import WSGIRequestHandler, make_server

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.exposition import ThreadingWSGIServer
from sqlalchemy import text

from monitor.metrics.exporter import CachedExposition
from monitor.policy.schema import Config
from monitor.store import Store
from monitor.store.versions import with_made

StartResponse = Callable[..., Any]
Environ = dict[str, Any]


class _Quiet(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        """Scrapes every few seconds would drown the log."""


class Api:
    def __init__(self, config: Config, store: Store, registry: CollectorRegistry | None = None,
                 ready: Callable[[], str | None] = lambda: None) -> None:
        self.config = config
        self.store = store
        self.registry = registry or CollectorRegistry()
        self._exposition = CachedExposition(store)
        self._not_ready = ready

    def warm(self) -> None:
        """Render the store's exposition once before serving, so no scrape waits for the first."""
        self._exposition.render()

    def __call__(self, environ: Environ, start_response: StartResponse) -> Iterable[bytes]:
        path = environ.get("PATH_INFO", "/")
        query = {k: v[0] for k, v in parse_qs(environ.get("QUERY_STRING", "")).items()}
        if path == "/metrics":
            return self._metrics(start_response)
        if path == "/healthz":
            return _json(start_response, 200, {"status": "ok"})
        if path == "/readyz":
            return self._readyz(start_response)
        if path == "/api/v1/models":
            return _json(start_response, 200, self._models())
        if path == "/api/v1/verdicts":
            return _json(start_response, 200, self._verdicts(query))
        if path.startswith("/api/v1/runs/"):
            return self._run(start_response, path.rsplit("/", 1)[1])
        if path == "/api/v1/actions":
            return _json(start_response, 200, self._actions(query))
        return _json(start_response, 404, {"error": f"no such endpoint: {path}"})

    def _metrics(self, start_response: StartResponse) -> Iterable[bytes]:
        """The store's state (cached until it changes) followed by this process's own instruments."""
        body = self._exposition.render() + generate_latest(self.registry)
        start_response("200 OK", [("Content-Type", CONTENT_TYPE_LATEST), ("Content-Length", str(len(body)))])
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
        latest: dict[tuple[str, str], Any] = {}
        for verdict in self.store.verdicts():
            latest[(verdict.model, verdict.capability)] = verdict
        return [{
            "model": name, "live": self.store.live_version(self.config, name), "baseline": spec.baseline,
            "versions": list(spec.versions),
            "backend": spec.backend.kind,
            "capabilities": {cap: {"phase": v.phase, "diagnosis": v.diagnosis, "verdict": v.id,
                                   "candidate": v.candidate}
                             for (model, cap), v in latest.items() if model == name},
        } for name, spec in with_made(self.config, self.store).models.items()]

    def _verdicts(self, query: dict[str, str]) -> list[dict[str, Any]]:
        limit = int(query.get("limit", "100")) if query.get("limit", "100").isdigit() else 100
        found = self.store.verdicts(model=query.get("model"), candidate=query.get("version"),
                                    capability=query.get("capability"))[-limit:]
        kinds = self.store.verdict_kinds([v.id for v in found if v.id is not None])
        return [{**v.model_dump(mode="json"), "kinds": [k.model_dump(mode="json", exclude={"verdict_id"})
                                                         for k in kinds.get(v.id or 0, [])]}
                for v in reversed(found)]

    def _actions(self, query: dict[str, str]) -> list[dict[str, Any]]:
        """The audit trail, newest first; the rejected-retraining alert links here."""
        limit = int(query.get("limit", "100")) if query.get("limit", "100").isdigit() else 100
        found = self.store.actions(query.get("model"))[-limit:] if limit else []
        return [a.model_dump(mode="json") for a in reversed(found)]

    def _run(self, start_response: StartResponse, raw: str) -> Iterable[bytes]:
        run = self.store.get_run(int(raw)) if raw.isdigit() else None
        if run is None:
            return _json(start_response, 404, {"error": f"run {raw} does not exist"})
        summaries = self.store.summaries([run.id or 0]).get(run.id or 0, [])
        body = {**run.model_dump(mode="json"),
                "kinds": [{"kind": s.kind, "mean_score": s.mean_score, "scored": s.scored,
                           "errors": s.errors} for s in summaries]}
        return _json(start_response, 200, body)


def _json(start_response: StartResponse, status: int, body: Any) -> list[bytes]:
    reason = {200: "OK", 404: "Not Found", 503: "Service Unavailable"}[status]
    payload = json.dumps(body, default=str).encode()
    start_response(f"{status} {reason}", [("Content-Type", "application/json"),
                                          ("Content-Length", str(len(payload)))])
    return [payload]


class HttpServer:
    """The API served from a daemon thread; `port=0` picks a free port (see `.port`)."""

    def __init__(self, app: Api, host: str = "127.0.0.1", port: int = 9464) -> None:
        self._server = make_server(host, port, app, ThreadingWSGIServer, handler_class=_Quiet)
        self.port = self._server.server_port
        self._thread = threading.Thread(target=self._server.serve_forever, name="forgetmenot-http",
                                        daemon=True)

    def start(self) -> HttpServer:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
