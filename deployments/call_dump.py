"""`dump=true`: every command and event of a call, in order, as JSON lines on disk.

For debugging an agent: the file shows exactly what crossed the socket. Writes
are batched and done in a thread so the call's loop never waits on the disk.
"""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path


class CallDump:
    def __init__(self, folder: str, call_id: str) -> None:
        self.path = Path(folder).expanduser() / f"{call_id}.jsonl"
        self._lines: list[str] = []
        self._task: asyncio.Task | None = None

    def record(self, direction: str, text: str) -> None:
        self._lines.append(json.dumps({"ts": int(time.time() * 1000), "dir": direction, "msg": text}))
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(self._flush_soon())

    async def _flush_soon(self) -> None:
        await asyncio.sleep(0.2)  # gather a burst of events into one write
        await self.flush()

    async def flush(self) -> None:
        lines, self._lines = self._lines, []
        if lines:
            await asyncio.to_thread(self._append, lines)

    def _append(self, lines: list[str]) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path, "a") as f:
            f.write("\n".join(lines) + "\n")
