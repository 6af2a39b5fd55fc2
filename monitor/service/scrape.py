"""What a scrape of /metrics is answered in: OpenMetrics text when the scraper asks for it (as
Prometheus does by default), else Prometheus' text format. The answer is written in parts (the
store's cached state, the loop's instruments, the server's own); OpenMetrics allows one `# EOF`,
at the very end."""

from __future__ import annotations

from collections.abc import Callable, Sequence

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.openmetrics.exposition import CONTENT_TYPE_LATEST as OPENMETRICS_TYPE
from prometheus_client.openmetrics.exposition import generate_latest as openmetrics_text

EOF = b"# EOF\n"
OPENMETRICS = "application/openmetrics-text"


def wants_openmetrics(accept: str) -> bool:
    """OpenMetrics among the Accept header's media types, unless refused with `q=0`."""
    for part in accept.split(","):
        media, _, params = part.strip().partition(";")
        refused = "q=0" in params.replace(" ", "").lower().split(";")
        if media.strip().lower() == OPENMETRICS and not refused:
            return True
    return False


def encoder(openmetrics: bool) -> tuple[Callable[[CollectorRegistry], bytes], str]:
    """How a registry is written in the asked format, and that format's Content-Type."""
    if openmetrics:
        return openmetrics_text, OPENMETRICS_TYPE
    return generate_latest, CONTENT_TYPE_LATEST


def joined(parts: Sequence[bytes], openmetrics: bool) -> bytes:
    """The parts as one exposition: each part's own `# EOF` dropped, one put at the end."""
    body = b"".join(part.removesuffix(EOF) for part in parts)
    return body + EOF if openmetrics else body
