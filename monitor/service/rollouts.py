"""What rollouts and pipelines ask the monitor over HTTP: register a candidate, then ask the gate.

    POST   /api/v1/models/{model}/candidates   {"version": ..., "path" (+ "gguf_file") |
                                               "served_name" | "adapter", "description": ...} -> 201
    GET    /api/v1/models/{model}/candidates   the candidates registered for a model
    DELETE /api/v1/models/{model}/candidates/{version}   retire one: no longer probed
    GET    /api/v1/gate?model=&version=&wait=&mode=

The gate answers two kinds of client. Flagger's webhooks and most CI steps read the status code
(`mode=flagger`, the default): 200 to go on, 412 on FAIL or INCONCLUSIVE, 503 with Retry-After
while the measurement is broken or not judged yet. Argo Rollouts' web metric marks any non-2xx as
an error and tests the JSON instead (`mode=metric`): 200 with the body for any decision, 503 only
while pending. The body is the same for both (`monitor.judge.gate.Gate.to_json`).

Registering and retiring are writes: refused (403) unless the server requires credentials; a body
is bounded and checked field by field (`monitor.store.candidates`). A request that waits is a
coroutine asking the database once a second, never a worker held: at most `MAX_WAITING` wait at
once, and the rest are answered at once with the answer as it stands.
"""

from __future__ import annotations

import json
import logging
import re
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import replace
from typing import Any

import anyio

from monitor.errors import CandidateError, StoreError
from monitor.judge.gate import MAX_WAIT_S, Gate, UnknownVersion, decide, settled
from monitor.policy.loading import load_suites
from monitor.policy.schema import Config
from monitor.policy.suites import Suite
from monitor.present.shapes import candidate_json
from monitor.service.replies import BadRequest, Reply, json_reply
from monitor.store import Store
from monitor.store.candidates import register, retire
from monitor.vocabulary import Decision

log = logging.getLogger(__name__)
GATE = "/api/v1/gate"
CANDIDATES = re.compile(r"^/api/v1/models/([^/]{1,128})/candidates$")
CANDIDATE = re.compile(r"^/api/v1/models/([^/]{1,128})/candidates/([^/]{1,128})$")
MAX_BODY = 16 * 1024
MAX_SERVER_WAIT_S = 300.0  # the longest `wait` a request may ask for
MAX_WAITING = 64  # requests waiting at once; each asks the database once every POLL_S
POLL_S = 1.0
# Runs a blocking call (the store's queries) off the event loop and awaits its result.
Offload = Callable[..., Awaitable[Any]]
GATE_STATUS = {"flagger": {Decision.PASS: 200, Decision.FAIL: 412, Decision.INCONCLUSIVE: 412,
                           Decision.ERROR: 503, Decision.PENDING: 503},
               "metric": {Decision.PENDING: 503}}


class Rollouts:
    def __init__(self, config: Config, store: Store, on_candidate: Callable[[], object] = lambda: None,
                 writes_allowed: bool = False, suites: Sequence[Suite] | None = None) -> None:
        """`on_candidate` schedules a new candidate at once (the monitor's `sync_candidates`);
        `suites` are the monitor's own, so the gate asks for the content the scheduler probes."""
        self.config = config
        self.store = store
        self.on_candidate = on_candidate
        self.writes_allowed = writes_allowed
        self._suites = list(suites) if suites is not None else None
        self.max_waiting = MAX_WAITING
        self._waiting = 0  # touched only on the event loop, so no lock

    @staticmethod
    def handles(path: str) -> bool:
        return path == GATE or CANDIDATES.match(path) is not None

    @staticmethod
    def accepts(path: str, method: str) -> bool:
        return ((method == "POST" and CANDIDATES.match(path) is not None)
                or (method == "DELETE" and CANDIDATE.match(path) is not None))

    def listed(self, path: str) -> Reply:
        """The candidates registered for the path's model."""
        model = self._model(path)
        return json_reply(200, [candidate_json(row) for row in self.store.candidates(model)])

    @staticmethod
    def expect_json(content_type: str) -> None:
        """Checked before a body is read: a body of another type is refused unread."""
        kind = content_type.split(";")[0].strip().lower()
        if kind != "application/json":
            raise BadRequest("the body must be JSON (Content-Type: application/json)")

    def refusal(self) -> Reply | None:
        """The answer to any write while the server asks no credentials, given before a body is read."""
        if self.writes_allowed:
            return None
        return json_reply(403, {"error": "changing candidates needs credentials: start serve with "
                                         "--token-file, --token-env or --web-config"})

    def write(self, path: str, method: str, body: bytes) -> Reply:
        """Register (POST, with the body as read) or retire (DELETE) a candidate; `refusal` first."""
        try:
            if method == "DELETE":
                return self._retire(path)
            return self._register(path, _parsed(body))
        except CandidateError as exc:
            return json_reply(exc.status, {"error": str(exc)})
        except StoreError as exc:
            log.error("candidate %s: %s", method, exc)
            return json_reply(503, {"error": "the database is unavailable; try again"},
                              [("Retry-After", "10")])

    def _register(self, path: str, body: Any) -> Reply:
        row = register(self.store, self.config, self._model(path), body, actor="api")
        try:
            self.on_candidate()
        except Exception:  # kept already: the next heartbeat schedules it
            log.exception("scheduling candidate %s/%s failed; the heartbeat will", row.model, row.version)
        gate = f"{GATE}?model={row.model}&version={row.version}"
        return json_reply(201, {**candidate_json(row), "gate": gate}, [("Location", gate)])

    def _retire(self, path: str) -> Reply:
        found = CANDIDATE.match(path)
        assert found is not None
        model, version = found.groups()
        if model not in self.config.models:
            raise BadRequest(f"no model '{model[:64]}' (models: {', '.join(self.config.models)})")
        return json_reply(200, candidate_json(retire(self.store, self.config, model, version, actor="api")))

    async def gate(self, query: dict[str, str], offload: Offload) -> Reply:
        """The gate's answer; `offload` runs each database query off the event loop."""
        model, version = query.get("model"), query.get("version")
        if not model or not version:
            raise BadRequest("the gate needs model and version: /api/v1/gate?model=M&version=V")
        mode = query.get("mode", "flagger")
        if mode not in GATE_STATUS:
            raise BadRequest(f"mode must be one of {', '.join(GATE_STATUS)}")
        wait_s = _wait(query)
        try:
            answer = await self._answer(model, version, wait_s, offload)
        except UnknownVersion as exc:
            return json_reply(404, {"error": str(exc)})
        status = GATE_STATUS[mode].get(answer.decision, 200)
        headers = [("Retry-After", "10")] if status == 503 else []
        return json_reply(status, answer.to_json(), headers)

    async def _answer(self, model: str, version: str, wait_s: float, offload: Offload) -> Gate:
        """Waiting only while fewer than `max_waiting` wait; otherwise the answer as it stands."""
        if wait_s <= 0 or self._waiting >= self.max_waiting:
            return await self._decide(model, version, offload)
        self._waiting += 1
        try:
            return await self._waited(model, version, wait_s, offload)
        finally:
            self._waiting -= 1

    async def _waited(self, model: str, version: str, wait_s: float, offload: Offload) -> Gate:
        """Asked again every POLL_S while pending, up to `wait_s`: the sleep is an await."""
        began = time.monotonic()
        while True:
            gate = await self._decide(model, version, offload)
            waited = time.monotonic() - began
            if settled(gate, waited, POLL_S, wait_s):
                return replace(gate, waited_s=waited)
            await anyio.sleep(POLL_S)

    async def _decide(self, model: str, version: str, offload: Offload) -> Gate:
        return await offload(self._decide_now, model, version)

    def _decide_now(self, model: str, version: str) -> Gate:
        return decide(self.store, self.config, self.suites(), model, version)

    def suites(self) -> list[Suite]:
        if self._suites is None:
            self._suites = load_suites(self.config)
        return self._suites

    def _model(self, path: str) -> str:
        found = CANDIDATES.match(path)
        assert found is not None
        model = found.group(1)
        if model not in self.config.models:
            raise BadRequest(f"no model '{model[:64]}' (models: {', '.join(self.config.models)})")
        return model


def _wait(query: dict[str, str]) -> float:
    raw = query.get("wait", "0")
    if not raw.isascii() or not raw.isdigit() or int(raw) > MAX_SERVER_WAIT_S:
        raise BadRequest(f"wait must be whole seconds from 0 to {int(MAX_SERVER_WAIT_S)}")
    return min(float(raw), MAX_WAIT_S)


def _parsed(raw: bytes) -> Any:
    try:
        return json.loads(raw)
    except (ValueError, UnicodeDecodeError, RecursionError) as exc:
        raise BadRequest(f"the body is not valid JSON: {str(exc)[:120]}") from None

