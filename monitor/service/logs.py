"""How `serve` writes its log: one line per record, text for a person or JSON for a log pipeline
(`--log-format`), every line redacted, other libraries' chatter held back, no progress bars.

A record that states a fact (a run finished, a verdict judged, an action taken) carries it as
fields (`fact`), so a pipeline reads them without parsing the sentence:

    >>> log.info("run complete", extra=fact("run", {"model": "bot", "run": 12}))   # doctest: +SKIP
    {"time": "2026-12-07T14:57:23.667+00:00", "level": "info", "logger": "forgetmenot.service",
     "message": "run complete", "event": "run", "model": "bot", "run": 12}

Lines go to a stream, never through a console, so no width ever breaks one.
"""

from __future__ import annotations

import importlib.util
import json
import logging
import os
import sys
import threading
from collections.abc import Mapping
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any, TextIO

from monitor.redaction import RedactingFilter


class LogFormat(StrEnum):
    TEXT = "text"
    JSON = "json"


class LogLevel(StrEnum):
    DEBUG = "debug"
    INFO = "info"
    WARNING = "warning"
    ERROR = "error"


# Libraries that log every scheduled job, request or download at INFO: held to warnings unless
# the level asked is debug.
QUIET = ("apscheduler", "httpx", "httpcore", "uvicorn", "urllib3", "transformers", "huggingface_hub",
         "filelock", "alembic")


def fact(event: str, fields: Mapping[str, Any]) -> dict[str, Any]:
    """The `extra` of a record stating a fact: its name and its fields."""
    return {"event": event, "fields": dict(fields)}


def configure(level: str = LogLevel.INFO, form: str = LogFormat.TEXT,
              stream: TextIO | None = None) -> logging.Handler:
    """Every record of the process to one handler on `stream` (stderr), one line each, redacted.
    Replaces what was there: a library's own handler would write lines in its own format."""
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(JsonLines() if form == LogFormat.JSON else TextLines())
    handler.addFilter(RedactingFilter())
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level.upper())
    _quiet_libraries(level)
    logging.captureWarnings(True)
    threading.excepthook = _crashed
    return handler


def _quiet_libraries(level: str) -> None:
    """At least warnings from QUIET, through the root's handler (their own handlers go)."""
    asked = logging.getLevelName(level.upper())
    held = logging.NOTSET if asked <= logging.DEBUG else max(asked, logging.WARNING)
    for name in QUIET:
        library = logging.getLogger(name)
        for own in list(library.handlers):
            library.removeHandler(own)
        library.propagate = True
        library.setLevel(held)


def _crashed(crash: threading.ExceptHookArgs) -> None:
    """A thread that died of an exception says so in one record, not a bare traceback."""
    name = crash.thread.name if crash.thread else "a thread"
    logging.getLogger("forgetmenot").critical("%s stopped on an exception", name, exc_info=crash.exc_value)


def without_progress_bars() -> None:
    """No tqdm bar from transformers or huggingface_hub: a bar is a line a pipeline cannot read.
    Their flags are read when they are imported, and transformers installs a handler of its own
    on import, so it is imported here (when installed) before `configure` takes its logger over."""
    os.environ["HF_HUB_DISABLE_PROGRESS_BARS"] = "1"
    os.environ["TQDM_DISABLE"] = "1"
    if importlib.util.find_spec("transformers") is None:
        return
    from transformers.utils import logging as transformers_logging

    transformers_logging.disable_progress_bar()
    transformers_logging.disable_default_handler()


def fields_of(record: logging.LogRecord) -> dict[str, Any]:
    """A record's fact: its event and fields, nothing when it states none."""
    found = getattr(record, "fields", None) or {}
    event = getattr(record, "event", None)
    if event is None:
        return dict(found)
    return {"event": event, **found}


def _timestamp(record: logging.LogRecord) -> str:
    return datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds")


class JsonLines(logging.Formatter):
    """One JSON object per record: time, level, logger, message, the fact's fields, and a
    traceback as one string."""

    def format(self, record: logging.LogRecord) -> str:
        line = {"time": _timestamp(record), "level": record.levelname.lower(), "logger": record.name,
                "message": record.getMessage()}
        line.update(fields_of(record))
        traceback = self._traceback(record)
        if traceback:
            line["exception"] = traceback
        return json.dumps(line, default=str, ensure_ascii=False)

    def _traceback(self, record: logging.LogRecord) -> str | None:
        if record.exc_info:
            return self.formatException(record.exc_info)
        return record.exc_text


class TextLines(logging.Formatter):
    """`time LEVEL logger: message key=value ...`: the fact's fields after the sentence, a value
    with a space in it quoted as JSON quotes it."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s: %(message)s")

    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:
        return _timestamp(record)

    def formatMessage(self, record: logging.LogRecord) -> str:
        said = super().formatMessage(record)
        pairs = [f"{key}={_text(value)}" for key, value in fields_of(record).items()]
        return " ".join([said, *pairs])


def _text(value: Any) -> str:
    if isinstance(value, str) and value and " " not in value and "=" not in value:
        return value
    return json.dumps(value, default=str, ensure_ascii=False, separators=(",", ":"))
