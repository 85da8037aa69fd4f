"""Structured logs: one JSON object per line, with the call id of the current task.

The call id lives in a context variable, so every log line written while handling a
call (including in tasks it spawns and in deployments that bind it) carries it.
"""

from __future__ import annotations

import contextlib
import contextvars
import json
import logging
import os
import sys
import time
from collections.abc import Iterator

call_id_var: contextvars.ContextVar[str | None] = contextvars.ContextVar("voxray_call_id", default=None)

_RESERVED = set(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {"message", "asctime", "taskName"}


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        out = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        call_id = getattr(record, "call_id", None) or call_id_var.get()
        if call_id:
            out["call_id"] = call_id
        for key, value in record.__dict__.items():
            if key not in _RESERVED and key not in out:
                out[key] = value
        if record.exc_info:
            out["exc"] = self.formatException(record.exc_info)
        return json.dumps(out, default=str)


class _CallIdFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        if not hasattr(record, "call_id"):
            record.call_id = call_id_var.get()
        return True


def configure(level: str | None = None) -> None:
    """Route voxray's loggers to stderr as JSON lines (idempotent)."""
    root = logging.getLogger("voxray")
    if getattr(root, "_voxray_configured", False):
        return
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter())
    handler.addFilter(_CallIdFilter())
    root.addHandler(handler)
    root.setLevel((level or os.environ.get("VOXRAY_LOG_LEVEL", "INFO")).upper())
    root.propagate = False
    root._voxray_configured = True  # type: ignore[attr-defined]


def get_logger(name: str) -> logging.Logger:
    configure()
    return logging.getLogger(name)


@contextlib.contextmanager
def bind_call(call_id: str | None) -> Iterator[None]:
    token = call_id_var.set(call_id)
    try:
        yield
    finally:
        call_id_var.reset(token)
