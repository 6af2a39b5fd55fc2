"""What the HTTP face answers with: a `Reply` (status, body, headers), JSON or HTML, and the
checks every handler shares (ids in a path, bad requests as 400 with the reason).

HTML replies carry headers that keep a page a page: a Content-Security-Policy that allows no
script, no frame and no form, `nosniff`, no referrer and no caching.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from starlette.responses import Response

MAX_ID = 2**31 - 1  # the id columns are 32-bit integers on PostgreSQL
PAGE_HEADERS = (
    ("Content-Security-Policy", "default-src 'none'; style-src 'unsafe-inline'; img-src 'self' data:; "
                                "base-uri 'none'; form-action 'none'; frame-ancestors 'none'"),
    ("X-Content-Type-Options", "nosniff"),
    ("Referrer-Policy", "no-referrer"),
    ("Cache-Control", "no-store"),
)


class BadRequest(ValueError):
    """A request this API cannot answer as asked; the message says why (400)."""


@dataclass(frozen=True)
class Reply:
    status: int
    body: bytes
    content_type: str
    headers: Sequence[tuple[str, str]] = ()

    def response(self) -> Response:
        """As the server sends it; Content-Length is set from the body, also for HEAD."""
        headers = dict(self.headers)
        return Response(self.body, self.status, headers, media_type=self.content_type)


def json_reply(status: int, body: Any, headers: Sequence[tuple[str, str]] = ()) -> Reply:
    return Reply(status, json.dumps(body, default=str).encode(), "application/json", headers)


def html_reply(status: int, document: str, headers: Sequence[tuple[str, str]] = PAGE_HEADERS) -> Reply:
    return Reply(status, document.encode(), "text/html; charset=utf-8", headers)


def parse_id(raw: str, what: str) -> int:
    """An id from a path: a whole number the database's id column can hold, else a BadRequest."""
    if not raw.isascii() or not raw.isdigit():
        raise BadRequest(f"{what} id must be a whole number, not '{raw[:24]}'")
    if len(raw) > 10 or int(raw) > MAX_ID:
        raise BadRequest(f"{what} id {raw[:24]} is out of range")
    return int(raw)
