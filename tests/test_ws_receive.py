"""Pacing the pulls of a `/call` socket's messages from Serve's proxy to the session's VAD chunks."""

from __future__ import annotations

import asyncio
import math
import pickle
import time

import pytest
from ray.serve._private.http_util import ASGIReceiveProxy
from starlette.websockets import WebSocket

from tests.fake_models import FRAME, FakeModels, Sink, silence
from voxray.deployments.ws_receive import PacedPull, PullPacer, pace_serve_receive
from voxray.media.config import MediaConfig
from voxray.media.session import MediaSession
from voxray.protocol.options import CallOption

pytestmark = pytest.mark.timeout(30)

PERIOD = 0.02  # the caller's frames
CHUNK_FRAMES = 3.2  # a 64 ms VAD chunk in 20 ms frames


def test_the_first_pull_goes_at_once_then_pulls_start_when_the_data_is_due():
    pacer = PullPacer(max_wait_s=0.08, lag_s=0.002, min_gap_s=0.01)
    assert pacer.start_at(10.0, due=None) == 10.0
    pacer.started(10.0)
    assert pacer.start_at(10.0, due=10.05) == pytest.approx(10.052)  # lag_s after the due frame
    assert pacer.start_at(10.0, due=None) == pytest.approx(10.01)  # nothing known: only kept apart
    assert pacer.start_at(10.0, due=9.0) == pytest.approx(10.01)  # overdue: at once (it waits in the proxy)
    assert pacer.start_at(10.0, due=11.0) == pytest.approx(10.08)  # commands wait at most max_wait_s
    assert pacer.start_at(10.5, due=11.0) == 10.5  # after a quiet spell: at once


async def test_back_to_back_pulls_without_a_due_time_are_kept_apart():
    times: list[float] = []

    async def pull(_meta) -> bytes:
        times.append(time.monotonic())
        return b""

    paced = PacedPull(pull, PullPacer(max_wait_s=0.08, min_gap_s=0.03))
    for _ in range(4):
        await paced(None)
    gaps = [b - a for a, b in zip(times, times[1:])]
    assert all(g >= 0.028 for g in gaps), gaps


class FakeServeProxy:
    """The proxy side of Serve's pull: each pull waits for a message, then takes all queued ones."""

    def __init__(self) -> None:
        self.queue: list[dict] = []
        self.ready = asyncio.Event()
        self.pulls = 0

    def put(self, message: dict) -> None:
        self.queue.append(message)
        self.ready.set()

    async def receive_asgi_messages(self, _meta) -> bytes:
        self.pulls += 1
        await self.ready.wait()
        self.ready.clear()
        messages, self.queue = self.queue, []
        return pickle.dumps(messages)


class ChunkConsumer:
    """Wants a chunk every CHUNK_FRAMES frames, as a session's VAD does; says when the next is due."""

    def __init__(self) -> None:
        self.frames = 0
        self.last_in: float | None = None

    def feed(self) -> None:
        self.frames += 1
        self.last_in = time.monotonic()

    def due(self) -> float | None:
        if self.last_in is None:
            return None
        next_chunk_end = math.floor(self.frames / CHUNK_FRAMES + 1) * CHUNK_FRAMES
        return self.last_in + math.ceil(next_chunk_end - self.frames - 1e-9) * PERIOD


async def _stream(max_wait_s: float, frames: int = 40) -> tuple[FakeServeProxy, list[float], list[float]]:
    """A caller's frames every PERIOD through Serve's receive proxy to a Starlette socket.

    Returns the proxy, each frame's wait (put -> read), and the waits of the frames that complete a chunk."""
    proxy = FakeServeProxy()
    scope = {"type": "websocket", "path": "/call", "headers": [], "query_string": b""}
    receive = ASGIReceiveProxy(scope, None, proxy.receive_asgi_messages)

    async def send(_msg) -> None:
        return None

    ws = WebSocket(scope, receive, send)
    consumer = ChunkConsumer()
    assert (pace_serve_receive(ws, max_wait_s, due=consumer.due) is not None) == (max_wait_s > 0)
    fetcher = asyncio.create_task(receive.fetch_until_disconnect())
    sent: list[float] = []
    read: list[float] = []

    async def reader() -> None:
        while True:
            msg = await ws._receive()
            if msg["type"] == "websocket.disconnect":
                return
            assert msg["bytes"] == bytes([len(read) % 256])  # in order, none lost
            read.append(time.monotonic())
            consumer.feed()

    reading = asyncio.create_task(reader())
    t0 = time.monotonic()
    for i in range(frames):
        sent.append(time.monotonic())
        proxy.put({"type": "websocket.receive", "bytes": bytes([i % 256])})
        await asyncio.sleep(max(0.0, t0 + (i + 1) * PERIOD - time.monotonic()))
    proxy.put({"type": "websocket.disconnect", "code": 1000})
    await asyncio.wait_for(asyncio.gather(fetcher, reading), 5)
    waits = [r - s for r, s in zip(read, sent)]
    completing = {math.ceil(k * CHUNK_FRAMES) - 1 for k in range(1, int(frames / CHUNK_FRAMES) + 1)}
    return proxy, waits, [w for i, w in enumerate(waits) if i in completing and i > 8]


async def test_one_pull_per_chunk_and_the_chunk_completing_frame_is_not_held_back():
    plain, plain_waits, _ = await _stream(0.0)
    paced, paced_waits, completing = await _stream(0.08)
    assert len(plain_waits) == len(paced_waits) == 40
    assert plain.pulls >= 35  # about one pull per frame
    assert paced.pulls <= 40 / CHUNK_FRAMES * 1.5  # about one per chunk
    # Nothing waits much past max_wait (slack: one event-loop stall on a busy CI machine).
    assert max(paced_waits) < 0.08 + 0.15
    # The frames VAD is waiting for come through soon after they arrive; held back, they
    # would wait out most of max_wait (80 ms). The median rides out a stall or two.
    assert sorted(completing)[len(completing) // 2] < 0.035, completing


def test_a_socket_not_read_through_serve_is_left_alone():
    scope = {"type": "websocket", "path": "/call", "headers": [], "query_string": b""}

    async def receive():
        return {"type": "websocket.connect"}

    async def send(_msg):
        return None

    ws = WebSocket(scope, receive, send)
    assert pace_serve_receive(ws, 0.08) is None
    assert ws._receive is receive


async def test_the_session_says_when_the_frame_completing_its_next_vad_chunk_is_due():
    session = MediaSession("call-1", CallOption(codec="pcm"), FakeModels(), Sink(), MediaConfig(vad_chunk_windows=2))
    assert session.audio_due() is None  # no audio yet
    frame = silence(20)
    for n in range(1, 8):
        session.feed(frame.tobytes())
        # 1024-sample chunks from 320-sample frames complete with frames 4, 7, 10, ...
        frames_to_go = {1: 3, 2: 2, 3: 1, 4: 3, 5: 2, 6: 1, 7: 3}[n]
        assert session.audio_due() == pytest.approx(session.last_audio_in + frames_to_go * 0.02), n
    assert FRAME == 320


async def test_a_waiting_pull_starts_at_once_when_woken():
    started: list[float] = []

    async def pull(_meta) -> bytes:
        started.append(time.monotonic())
        return b""

    paced = PacedPull(pull, PullPacer(max_wait_s=0.5, min_gap_s=0.3), due=lambda: time.monotonic() + 1.0)
    await paced(None)  # the first goes at once
    second = asyncio.create_task(paced(None))  # would wait 0.5 s (max_wait)
    await asyncio.sleep(0.05)
    t_wake = time.monotonic()
    paced.wake()
    await second
    assert started[1] - t_wake < 0.2  # not the 0.45 s it had left to wait
