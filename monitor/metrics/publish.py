"""Dashboards pushed to a running Grafana through its HTTP API (`POST /api/dashboards/db`), with
grafana-client: the alternative to file provisioning for a Grafana the monitor's owner can reach.

Each dashboard is sent whole with `overwrite: true`, so pushing again replaces the previous
version by uid, and Grafana's version history keeps the message. The token comes from the caller
(the CLI reads an environment variable), is masked in every error, and no error names more of
Grafana than its address without credentials.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from monitor.errors import MissingExtra, PublishError
from monitor.redaction import remember

MESSAGE = "forgetmenot dashboards push"
TIMEOUT_S = 10.0
DETAIL_CHARS = 300


@dataclass(frozen=True)
class Pushed:
    """What Grafana answered for one dashboard."""

    name: str
    uid: str
    url: str
    version: int


def shown(url: str) -> str:
    """Grafana's address for messages: scheme, host, port and path, without user, password or query."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    host = f"[{host}]" if ":" in host else host
    port = f":{parts.port}" if parts.port else ""
    return urlunsplit((parts.scheme, host + port, parts.path.rstrip("/"), "", ""))


def push(url: str, token: str, dashboards: Mapping[str, dict[str, Any]], *, folder_uid: str | None = None,
         message: str = MESSAGE, timeout: float = TIMEOUT_S) -> list[Pushed]:
    """Create or replace every dashboard in Grafana at `url`; stops at the first refusal."""
    if urlsplit(url).scheme not in ("http", "https"):
        raise PublishError(f"Grafana's URL must start with http:// or https://, not {shown(url)!r}")
    remember(token)
    api = _client(url, token, timeout)
    try:
        return [_push_one(api, url, name, dashboard, folder_uid, message)
                for name, dashboard in dashboards.items()]
    finally:
        api.client.s.close()


def _client(url: str, token: str, timeout: float) -> Any:
    try:
        from grafana_client import GrafanaApi
    except ImportError as exc:
        raise MissingExtra("grafana-client", "dashboards") from exc
    # grafana-client joins a sub-path and "api" without a slash: keep one at the end.
    return GrafanaApi.from_url(url if url.endswith("/") else url + "/", credential=token, timeout=timeout)


def payload(dashboard: dict[str, Any], folder_uid: str | None, message: str) -> dict[str, Any]:
    """The body of `POST /api/dashboards/db`: no folder uid puts it in Grafana's General folder."""
    body: dict[str, Any] = {"dashboard": dashboard, "overwrite": True, "message": message}
    if folder_uid:
        body["folderUid"] = folder_uid
    return body


def _push_one(api: Any, url: str, name: str, dashboard: dict[str, Any], folder_uid: str | None,
              message: str) -> Pushed:
    from grafana_client.client import GrafanaException

    uid = str(dashboard.get("uid", name))
    try:
        answer = api.dashboard.update_dashboard(payload(dashboard, folder_uid, message))
    except GrafanaException as exc:
        status = f"{exc.status_code} " if exc.status_code else ""
        raise PublishError(f"Grafana at {shown(url)} refused dashboard {uid!r}: {status}{exc.message}"
                           f"{_hint(exc.status_code)}") from None
    except OSError as exc:  # the transport's errors (connection refused, DNS, TLS) are OSErrors
        detail = str(exc)[:DETAIL_CHARS]
        raise PublishError(f"Grafana at {shown(url)} could not be reached: {exc.__class__.__name__}: "
                           f"{detail}") from None
    if not isinstance(answer, dict):
        raise PublishError(f"Grafana at {shown(url)} answered dashboard {uid!r} with {str(answer)[:80]!r}")
    version = answer.get("version", 0)
    return Pushed(name, str(answer.get("uid", uid))[:200], str(answer.get("url", ""))[:500],
                  version if isinstance(version, int) else 0)


def _hint(status: int) -> str:
    if status in (401, 403):
        return " (the token was not accepted, or may not write dashboards in that folder)"
    if status == 412:
        return " (a dashboard with that name or uid exists elsewhere)"
    return ""
