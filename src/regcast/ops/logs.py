"""The one logging set-up: human text (the default) or one JSON object per line (``REGCAST_LOG_FORMAT=json``).

Structured fields come from ``extra={...}`` on a log call (``target``, ``registry``, ``bytes``,
``error``) and the job id from a context variable that the worker sets for each job's task, so
every line a job's copy writes carries its id without threading it through every call. Every
message goes through ``redact_text`` in both formats: an Authorization value or bearer token that
slipped into a message never reaches the output.
"""

from __future__ import annotations

import contextvars
import datetime as dt
import json
import logging
import sys
from typing import Any

from regcast.registry.redact import EscapeControls, redact_text

FIELDS = ("job_id", "target", "registry", "bytes", "error")
TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"

current_job: contextvars.ContextVar[str | None] = contextvars.ContextVar("regcast_job_id", default=None)


class _JobContext(logging.Filter):
    """Adds ``job_id`` from the running task's context (unless the call gave one)."""

    def filter(self, record: logging.LogRecord) -> bool:
        if getattr(record, "job_id", None) is None:
            record.job_id = current_job.get()
        return True


class TextFormatter(logging.Formatter):
    def __init__(self) -> None:
        super().__init__(TEXT_FORMAT)

    def format(self, record: logging.LogRecord) -> str:
        return redact_text(super().format(record))


class JsonFormatter(logging.Formatter):
    """``{"time", "level", "logger", "event", "job_id", "target", "registry", "bytes", "error"}`` per line."""

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "time": dt.datetime.fromtimestamp(record.created, dt.UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "event": redact_text(record.getMessage()),
        }
        for name in FIELDS:
            value = getattr(record, name, None)
            line[name] = redact_text(value) if isinstance(value, str) else value
        if record.exc_info:
            line["exception"] = redact_text(self.formatException(record.exc_info))
        return json.dumps(line, default=str)


def setup_logging(fmt: str = "text", level: int = logging.WARNING) -> None:
    """Configure the root logger once: one stderr handler in the chosen format (replaces earlier ones)."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    handler.addFilter(_JobContext())
    if fmt != "json":  # JSON escapes by itself; text lines must not be forged by remote text
        handler.addFilter(EscapeControls())
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level)
    if fmt == "json":  # uvicorn's own loggers carry their handlers: route them through ours
        for name in ("uvicorn", "uvicorn.error", "uvicorn.access"):
            lg = logging.getLogger(name)
            lg.handlers.clear()
            lg.propagate = True
