"""Structured logs: one JSON object per line (python-json-logger), with the call id of the
current task bound to every line.

The call id lives in a context variable, so every log line written while handling a
call (including in tasks it spawns and in deployments that bind it) carries it.
"""

from __future__ import annotations

import contextlib
import contextvars
import logging
import sys
import time
from collections.abc import Iterator

from pythonjsonlogger.json import JsonFormatter as JsonLogFormatter

from voxray.env import voxray_env

call_id_var: contextvars.ContextVar[str | None] = contextvars.ContextVar("voxray_call_id", default=None)

class JsonFormatter(JsonLogFormatter):
    """python-json-logger's formatter with voxray's keys: ts (UTC, ms), level, logger, msg,
    call_id, then the record's extra fields; `exc` for a traceback."""

    converter = time.gmtime
    default_time_format = "%Y-%m-%dT%H:%M:%S"
    default_msec_format = "%s.%03dZ"

    def __init__(self) -> None:
        super().__init__("{asctime}{levelname}{name}{message}", style="{",
                         rename_fields={"asctime": "ts", "levelname": "level", "name": "logger",
                                        "message": "msg", "exc_info": "exc"},
                         json_default=str)

    def process_log_record(self, log_record: dict) -> dict:
        log_record["level"] = log_record["level"].lower()
        if log_record.get("call_id") is None:
            log_record.pop("call_id", None)
        return log_record


class _CallIdFilter(logging.Filter):
    """Binds the call id of the current task (the context variable) to every record."""

    def filter(self, record: logging.LogRecord) -> bool:
        if getattr(record, "call_id", None) is None:
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
    root.setLevel((level or voxray_env().log_level).upper())
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
