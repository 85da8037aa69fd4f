"""A small agent-side client for tests: real WebSocket, real JSON, real audio frames."""

from __future__ import annotations

import asyncio
import json
import time

import numpy as np
import websockets

from tests.active_call_rules import violations

# What strict active-call clients would refuse in any event any CallClient received;
# tests/conftest.py fails the test that saw one (every real call is a compatibility test).
STRICT_VIOLATIONS: list[str] = []


class CallClient:
    def __init__(self, ws) -> None:
        self.ws = ws
        self.events: list[dict] = []
        self.event_times: list[float] = []  # arrival (time.monotonic()) of each event
        self.audio: list[tuple[float, bytes]] = []  # (arrival time, frame)
        self._new = asyncio.Condition()
        self._reader = asyncio.create_task(self._read())
        self.closed = asyncio.Event()

    @classmethod
    async def connect(cls, url: str) -> "CallClient":
        ws = await websockets.connect(url, max_size=2**22)
        return cls(ws)

    async def _read(self) -> None:
        try:
            async for msg in self.ws:
                async with self._new:
                    if isinstance(msg, bytes):
                        self.audio.append((time.monotonic(), msg))
                    else:
                        event = json.loads(msg)
                        self.events.append(event)
                        self.event_times.append(time.monotonic())
                        STRICT_VIOLATIONS.extend(f"{v} in {msg[:300]}" for v in violations(event))
                    self._new.notify_all()
        except websockets.ConnectionClosed:
            pass
        finally:
            self.closed.set()
            async with self._new:
                self._new.notify_all()

    async def send(self, command: dict | str) -> None:
        await self.ws.send(command if isinstance(command, str) else json.dumps(command))

    async def wait_for(self, name: str, timeout: float = 30.0, after: int = 0, **match) -> dict:
        """The first event named `name` (at index >= after) whose fields match."""
        async def find():
            async with self._new:
                while True:
                    for e in self.events[after:]:
                        if e.get("event") == name and all(e.get(k) == v for k, v in match.items()):
                            return e
                    if self.closed.is_set():
                        raise AssertionError(f"socket closed before '{name}'; got {self.names()}")
                    await self._new.wait()
        try:
            return await asyncio.wait_for(find(), timeout)
        except asyncio.TimeoutError:
            raise AssertionError(f"no '{name}' within {timeout}s; got {self.names()}") from None

    def arrival(self, event: dict) -> float:
        """When `event` (one of self.events) arrived."""
        return self.event_times[next(i for i, e in enumerate(self.events) if e is event)]

    def names(self) -> list[str]:
        return [e.get("event") for e in self.events]

    async def stream(self, payload: bytes, frame_bytes: int, realtime: bool = True,
                     pad: bytes = b"\0") -> float:
        """Send audio as frames every 20 ms; returns the send time of the last frame.

        `pad` fills the last frame: the codec's silence (0xFF for mu-law).
        """
        t0 = time.monotonic()
        n = 0
        for i in range(0, len(payload), frame_bytes):
            await self.ws.send(payload[i:i + frame_bytes].ljust(frame_bytes, pad))
            n += 1
            if realtime:
                delay = t0 + n * 0.02 - time.monotonic()
                if delay > 0:
                    await asyncio.sleep(delay)
        return time.monotonic()

    async def answer_then_drop_mid_track(self, play_id: str = "p", answer_timeout_s: float = 30,
                                         start_timeout_s: float = 30) -> None:
        """A pcm call answered, a `tts` track started, and then the agent's network blips:
        the socket closes while the track plays, and a second goes by before anything else."""
        await self.send({"command": "invite", "option": {"codec": "pcm"}})
        await self.wait_for("answer", timeout=answer_timeout_s)
        await self.send({"command": "tts", "text": "You dropped while I was talking.", "playId": play_id})
        await self.wait_for("trackStart", timeout=start_timeout_s)
        await self.ws.close()
        await asyncio.sleep(1.0)

    def audio_pcm(self) -> np.ndarray:
        return np.frombuffer(b"".join(f for _, f in self.audio), dtype="<i2")

    async def close(self) -> None:
        await self.ws.close()
        self._reader.cancel()
