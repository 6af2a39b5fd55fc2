"""The API's OpenAPI 3.1 description (docs/openapi.json) held to the real server: every route in
it answers with bodies its schemas accept, in every status it documents that a request here can
reach, and every route the server answers is in it."""

from __future__ import annotations

import http.client
import json
import re
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlsplit

from jsonschema import Draft202012Validator

from monitor.service.http import QUERY_KEYS
from tests.conftest import REPO
from tests.test_gate import TOKEN
from tests.test_output_json import Served, served

__all__ = ["served"]
SPEC = json.loads((REPO / "docs" / "openapi.json").read_text())
METHODS = ("get", "post", "delete")
UNKNOWN = 2147483647  # an id no row has


def test_the_description_is_openapi_3_1_and_its_schemas_are_json_schema() -> None:
    assert SPEC["openapi"].startswith("3.1.")
    assert SPEC["jsonSchemaDialect"] == "https://json-schema.org/draft/2020-12/schema"
    for schema in SPEC["components"]["schemas"].values():
        Draft202012Validator.check_schema(schema)
    for path, item in SPEC["paths"].items():
        for method in set(item) & set(METHODS):
            assert item[method]["responses"], f"{method} {path} documents no response"


def _validator(schema: dict[str, Any]) -> Draft202012Validator:
    """`schema` with the description's components beside it, where its `$ref`s point."""
    return Draft202012Validator({**schema, "components": SPEC["components"]})


def call(port: int, method: str, target: str, body: Any = None,
         token: str | None = TOKEN) -> tuple[int, dict[str, str], bytes]:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    data = None
    if body is not None:
        data = json.dumps(body).encode()
        headers["Content-Type"] = "application/json"
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        conn.request(method.upper(), target, body=data, headers=headers)
        reply = conn.getresponse()
        return reply.status, dict(reply.headers), reply.read()
    finally:
        conn.close()


def cases(served: Served) -> Iterator[tuple[str, str, str, Any, str | None]]:
    """(template, method, request target, body, token) for each status a request here reaches."""
    store = served.monitor.store
    verdict = store.verdicts(model="bot", phase="FAIL")[-1].id
    run = store.runs()[-1].id
    yield from ((t, "get", t, None, TOKEN) for t in ("/healthz", "/readyz", "/metrics", "/api/v1/models"))
    yield "/api/v1/verdicts", "get", "/api/v1/verdicts?model=bot&limit=5", None, TOKEN
    yield "/api/v1/verdicts", "get", "/api/v1/verdicts?limit=0", None, TOKEN
    yield "/api/v1/verdicts", "get", "/api/v1/verdicts", None, None
    for template, real in (("/api/v1/verdicts/{id}", verdict), ("/api/v1/runs/{id}", run),
                           ("/verdicts/{id}", verdict), ("/verdicts/{id}/report", UNKNOWN)):
        yield template, "get", template.replace("{id}", str(real)), None, TOKEN
        yield template, "get", template.replace("{id}", str(UNKNOWN)), None, TOKEN
    yield "/api/v1/runs/{id}", "get", "/api/v1/runs/99999999999", None, TOKEN
    yield "/api/v1/actions", "get", "/api/v1/actions?model=bot", None, TOKEN
    yield from _gate_cases()
    yield from _candidate_cases(json.loads(store.candidates("bot")[0].spec or "{}")["path"])
    yield from _page_cases()


def _gate_cases() -> Iterator[tuple[str, str, str, Any, str | None]]:
    gate = "/api/v1/gate"
    for query in ("model=bot&version=cand", "model=bot&version=bad", "model=bot&version=bad&mode=metric",
                  "model=bot&version=nope", "model=bot"):
        yield gate, "get", f"{gate}?{query}", None, TOKEN


def _candidate_cases(weights: str) -> Iterator[tuple[str, str, str, Any, str | None]]:
    listed, one = "/api/v1/models/{model}/candidates", "/api/v1/models/{model}/candidates/{version}"
    yield listed, "get", "/api/v1/models/bot/candidates", None, TOKEN
    yield listed, "get", "/api/v1/models/nobody/candidates", None, TOKEN
    yield listed, "post", "/api/v1/models/bot/candidates", {"version": "next", "path": weights}, TOKEN
    yield listed, "post", "/api/v1/models/bot/candidates", {"version": "next", "path": weights}, TOKEN
    yield listed, "post", "/api/v1/models/bot/candidates", {"version": "x", "colour": "red"}, TOKEN
    yield one, "delete", "/api/v1/models/bot/candidates/next", None, TOKEN
    yield one, "delete", "/api/v1/models/bot/candidates/next", None, TOKEN


def _page_cases() -> Iterator[tuple[str, str, str, Any, str | None]]:
    yield "/", "get", "/", None, TOKEN
    yield "/models/{model}", "get", "/models/bot", None, TOKEN
    yield "/models/{model}", "get", "/models/nobody", None, TOKEN
    latest = "/verdicts/latest"
    yield latest, "get", f"{latest}?model=bot&version=bad&capability=arithmetic", None, TOKEN
    yield latest, "get", f"{latest}?model=bot&version=v1&capability=arithmetic", None, TOKEN
    yield latest, "get", f"{latest}?model=bot", None, TOKEN


def test_every_route_answers_as_described(served: Served) -> None:
    reached: dict[str, set[str]] = {}
    for template, method, target, body, token in cases(served):
        status, headers, raw = call(served.server.port, method, target, body, token)
        described = SPEC["paths"][template][method]["responses"]
        assert str(status) in described, f"{method} {target} answered {status}, undocumented: {raw[:300]!r}"
        _check_body(_resolved(described[str(status)]), headers, raw, f"{method} {target} ({status})")
        reached.setdefault(f"{method} {template}", set()).add(str(status))
    routes = {f"{m} {path}" for path, item in SPEC["paths"].items() for m in set(item) & set(METHODS)}
    assert set(reached) == routes, "every described route is asked here"


def _resolved(response: dict[str, Any]) -> dict[str, Any]:
    """A response, or the shared one its `$ref` names."""
    name = response.get("$ref", "").rpartition("/")[2]
    if not name:
        return response
    shared: dict[str, Any] = SPEC["components"]["responses"][name]
    return shared


def _check_body(response: dict[str, Any], headers: dict[str, str], raw: bytes, what: str) -> None:
    content = response.get("content", {})
    media = headers.get("content-type", "").split(";")[0]
    assert content or not raw, f"{what}: a body where none is described"
    if not content:
        return
    assert media in content, f"{what}: {media} is not described ({', '.join(content)})"
    schema = content[media].get("schema")
    if media == "application/json" and schema is not None:
        errors = [e.message for e in _validator(schema).iter_errors(json.loads(raw))]
        assert not errors, f"{what}: {errors[:5]}"


def _templates() -> list[tuple[re.Pattern[str], str]]:
    """Each described path as a pattern, literal paths first (`/verdicts/latest` before `{id}`)."""
    ordered = sorted(SPEC["paths"], key=lambda path: "{" in path)
    return [(re.compile("^" + re.sub(r"\{[^}]+\}", "[^/]+", path) + "$"), path) for path in ordered]


def described(path: str) -> str | None:
    return next((template for pattern, template in _templates() if pattern.match(path)), None)


def _links(headers: dict[str, str], raw: bytes) -> set[str]:
    """The server's own paths a reply points to: page links, JSON links, a Location."""
    text = raw.decode("utf-8", "replace")
    found = set(re.findall(r'href="(/[^"#]*)"', text))
    found |= set(re.findall(r'"(/(?:api/v1|verdicts|models)/[^"\s]*)"', text))
    if "location" in {k.lower() for k in headers}:
        found.add(next(v for k, v in headers.items() if k.lower() == "location"))
    return {urlsplit(link).path for link in found}


def test_every_route_the_server_answers_is_described(served: Served) -> None:
    """Crawled from the board and the API's lists: each path that answers other than 404 is in
    the description, and the query parameters each path takes are the described ones."""
    starts = ["/", "/api/v1/models", "/api/v1/verdicts", "/api/v1/actions", "/api/v1/models/bot/candidates"]
    wrong = ["/api/v1/nothing", "/api/v2/models", "/models"]
    queue = [*starts, "/api/v1/gate?model=bot&version=bad", *QUERY_KEYS, *wrong]
    seen: set[str] = set()
    while queue:
        target = queue.pop()
        path = urlsplit(target).path
        if path in seen:
            continue
        seen.add(path)
        status, headers, raw = call(served.server.port, "get", target)
        if status == 404 and described(path) is None:
            continue
        assert described(path) is not None, f"{path} answers {status} but is not described"
        queue.extend(_links(headers, raw) - seen)
    assert len(seen) > 20, seen
    for path, keys in QUERY_KEYS.items():
        parameters = SPEC["paths"][path]["get"].get("parameters", [])
        assert {p["name"] for p in parameters if p["in"] == "query"} == set(keys), path
