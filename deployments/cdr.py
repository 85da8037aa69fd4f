"""Call detail records in SQLite: one row per call, written when it ends."""

from __future__ import annotations

import asyncio
import json
import sqlite3
from pathlib import Path
from typing import Any

from pydantic import BaseModel, Field


class CallRecord(BaseModel):
    id: str
    path: str
    caller: str | None = None
    callee: str | None = None
    codec: str | None = None
    start_time: str | None = None
    answer_time: str | None = None
    hangup_time: str | None = None
    reason: str | None = None
    initiator: str | None = None
    frames_in: int = 0
    frames_out: int = 0
    errors: int = 0
    metrics: dict[str, Any] = Field(default_factory=dict)  # e.g. ttfb.asr.whisper: {last, count, max}


_SCHEMA = """
CREATE TABLE IF NOT EXISTS calls (
    id TEXT NOT NULL, path TEXT, caller TEXT, callee TEXT, codec TEXT,
    start_time TEXT, answer_time TEXT, hangup_time TEXT, reason TEXT, initiator TEXT,
    frames_in INTEGER, frames_out INTEGER, errors INTEGER, metrics TEXT
);
CREATE INDEX IF NOT EXISTS calls_by_start ON calls(start_time);
"""
_COLUMNS = list(CallRecord.model_fields)


class CdrStore:
    """SQLite behind a lock; each statement runs in a thread so the loop never blocks."""

    def __init__(self, path: str) -> None:
        self.path = path
        Path(path).expanduser().parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(str(Path(path).expanduser()), check_same_thread=False)
        self._db.executescript(_SCHEMA)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._lock = asyncio.Lock()

    def _insert(self, rec: CallRecord) -> None:
        row = rec.model_dump()
        row["metrics"] = json.dumps(row["metrics"])
        self._db.execute(f"INSERT INTO calls ({', '.join(_COLUMNS)}) VALUES ({', '.join('?' * len(_COLUMNS))})",
                         [row[c] for c in _COLUMNS])
        self._db.commit()

    def _select(self, limit: int, call_id: str | None) -> list[CallRecord]:
        sql = f"SELECT {', '.join(_COLUMNS)} FROM calls"
        args: list[Any] = []
        if call_id:
            sql += " WHERE id = ?"
            args.append(call_id)
        sql += " ORDER BY rowid DESC LIMIT ?"
        args.append(limit)
        out = []
        for row in self._db.execute(sql, args):
            data = dict(zip(_COLUMNS, row))
            data["metrics"] = json.loads(data["metrics"] or "{}")
            out.append(CallRecord.model_validate(data))
        return out

    async def add(self, rec: CallRecord) -> None:
        async with self._lock:
            await asyncio.to_thread(self._insert, rec)

    async def list(self, limit: int = 100, call_id: str | None = None) -> list[CallRecord]:
        async with self._lock:
            return await asyncio.to_thread(self._select, limit, call_id)
