"""Call detail records in SQLite: one row per call, written when it ends."""

from __future__ import annotations

import asyncio
import json
import sqlite3
from datetime import datetime, timezone
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
    # Attached by the agent (POST /call/records/{id}/notes), e.g. the LLM agent's summary. A table of
    # its own: an agent writes them as the call ends, before or after this row exists.
    notes: dict[str, Any] = Field(default_factory=dict)
    recording: str | None = None  # the WAV `recorder` asked for, on the node that held the media


_SCHEMA = """
CREATE TABLE IF NOT EXISTS calls (
    id TEXT NOT NULL, path TEXT, caller TEXT, callee TEXT, codec TEXT,
    start_time TEXT, answer_time TEXT, hangup_time TEXT, reason TEXT, initiator TEXT,
    frames_in INTEGER, frames_out INTEGER, errors INTEGER, metrics TEXT, recording TEXT
);
CREATE INDEX IF NOT EXISTS calls_by_start ON calls(start_time);
CREATE TABLE IF NOT EXISTS call_notes (
    id TEXT NOT NULL, key TEXT NOT NULL, value TEXT, time TEXT, PRIMARY KEY (id, key)
);
"""
_COLUMNS = [c for c in CallRecord.model_fields if c != "notes"]


class CdrStore:
    """SQLite behind a lock; each statement runs in a thread so the loop never blocks."""

    def __init__(self, path: str) -> None:
        self.path = path
        Path(path).expanduser().parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(str(Path(path).expanduser()), check_same_thread=False)
        self._db.executescript(_SCHEMA)
        columns = {row[1] for row in self._db.execute("PRAGMA table_info(calls)")}
        if "recording" not in columns:  # a database from before recordings were linked
            self._db.execute("ALTER TABLE calls ADD COLUMN recording TEXT")
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
            data["notes"] = self._notes(data["id"])
            out.append(CallRecord.model_validate(data))
        return out

    def _notes(self, call_id: str) -> dict[str, Any]:
        rows = self._db.execute("SELECT key, value FROM call_notes WHERE id = ? ORDER BY key", [call_id])
        return {k: json.loads(v) for k, v in rows}

    def _annotate(self, call_id: str, notes: dict[str, Any]) -> dict[str, Any]:
        now = datetime.now(timezone.utc).isoformat(timespec="milliseconds")
        self._db.executemany("INSERT OR REPLACE INTO call_notes (id, key, value, time) VALUES (?, ?, ?, ?)",
                             [(call_id, k, json.dumps(v), now) for k, v in notes.items()])
        self._db.commit()
        return self._notes(call_id)

    async def add(self, rec: CallRecord) -> None:
        async with self._lock:
            await asyncio.to_thread(self._insert, rec)

    async def list(self, limit: int = 100, call_id: str | None = None) -> list[CallRecord]:
        async with self._lock:
            return await asyncio.to_thread(self._select, limit, call_id)

    async def annotate(self, call_id: str, notes: dict[str, Any]) -> dict[str, Any]:
        """Merge `notes` (key -> any JSON) into the call's notes; return them all."""
        async with self._lock:
            return await asyncio.to_thread(self._annotate, call_id, notes)
