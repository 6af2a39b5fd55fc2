"""One redaction for every text that leaves the process: exception messages, audit rows, item
errors, log lines. Credentials written into URLs (`https://user:pass@host`), bearer tokens and
secret-named query parameters are masked; everything else is kept, so the text still says
which host failed and how.

It sits under every layer (like `vocabulary` and `errors`) and imports nothing of forgetmenot's.
"""

from __future__ import annotations

import logging
import re
import threading

MASK = "***"
_URL_PASSWORD = re.compile(r"(?P<head>\b[a-zA-Z][a-zA-Z0-9+.-]*://[^:/?#@\s]*):(?P<secret>[^@/\s]+)@")
# The schemes as HTTP writes them, not any-case: "the token variable" is prose, not a credential.
_BEARER = re.compile(r"(?P<head>\b(?:[Bb]earer|BEARER|Basic|BASIC|Token)\s+)"
                     r"(?P<secret>[A-Za-z0-9._~+/=-]{4,})")
_PARAMETER = re.compile(
    r"(?P<head>[?&;\s\"'](?:api[_-]?key|access[_-]?token|token|password|passwd|secret|signature|sig)"
    r"[\"']?\s*[=:]\s*[\"']?)(?P<secret>[^&\s\"',;]+)", re.IGNORECASE)


_KNOWN: set[str] = set()
_KNOWN_LOCK = threading.Lock()
MIN_REMEMBERED = 6  # shorter values would mask ordinary words


def remember(secret: str) -> str:
    """Mask `secret` wherever it appears from now on, whatever the text around it; returns it.
    Every credential read from the environment or a file goes through here."""
    if len(secret) >= MIN_REMEMBERED:
        with _KNOWN_LOCK:
            _KNOWN.add(secret)
    return secret


def redact(text: str) -> str:
    """`text` with every credential it carries replaced by ***."""
    for secret in tuple(_KNOWN):
        if secret in text:
            text = text.replace(secret, MASK)
    text = _URL_PASSWORD.sub(rf"\g<head>:{MASK}@", text)
    text = _BEARER.sub(rf"\g<head>{MASK}", text)
    return _PARAMETER.sub(rf"\g<head>{MASK}", text)


class RedactingFilter(logging.Filter):
    """A logging filter that redacts each record's message, its traceback text, and the fields of
    the fact it states (a run's error, an action's reason: `record.fields`)."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.msg = redact(record.getMessage())
        record.args = None
        fields = getattr(record, "fields", None)
        if isinstance(fields, dict):
            record.fields = _redacted(fields)
        if record.exc_info:
            record.exc_text = redact(logging.Formatter().formatException(record.exc_info))
            record.exc_info = None
        return True


def _redacted(value: object) -> object:
    """`value` with every string in it redacted, however deep in lists and mappings."""
    if isinstance(value, str):
        return redact(value)
    if isinstance(value, dict):
        return {key: _redacted(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_redacted(item) for item in value]
    return value
