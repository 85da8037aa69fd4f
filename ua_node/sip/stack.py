"""The pjsua2 stack on one dedicated thread.

pjsua2 is not thread-friendly: the endpoint is created, pumped (`libHandleEvents`)
and called on this one thread only. Other threads hand it work through `submit`
(a queue drained between pumps); its callbacks reach asyncio through
`loop.call_soon_threadsafe`. The conference bridge's clock (null audio device)
runs on a pjmedia thread and only touches the media ports' thread-safe queues.
"""

from __future__ import annotations

import asyncio
import collections
import gc
import queue
import threading
import time
from collections.abc import Callable
from typing import Any

import pjsua2 as pj

from voxray.logs import get_logger
from voxray.ua_node.sip.config import SipSettings

log = get_logger("voxray.sip")


class PjLogWriter(pj.LogWriter):
    def write(self, entry) -> None:  # pj thread
        msg = entry.msg.rstrip()
        if msg:
            log.debug("pjsip", extra={"pj": msg})


class FrameInbox:
    """Audio frames from pjmedia's clock thread to the asyncio loop, one wake-up per clock
    tick for all calls: the clock hands every call's frame over within the same tick, and
    a `call_soon_threadsafe` per frame (50 per call-second) woke the loop once per frame."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self._frames: collections.deque[tuple[Callable[[bytes], None], bytes]] = collections.deque()
        self._scheduled = False

    def put(self, fn: Callable[[bytes], None], pcm: bytes) -> None:  # clock thread
        self._frames.append((fn, pcm))
        if not self._scheduled:
            self._scheduled = True
            try:
                self.loop.call_soon_threadsafe(self._drain)
            except RuntimeError:  # loop closed: shutting down
                pass

    def _drain(self) -> None:  # loop
        # Cleared first: a frame put while draining schedules the next drain, none is lost.
        self._scheduled = False
        frames = self._frames
        while frames:
            fn, pcm = frames.popleft()
            fn(pcm)


class PjStack:
    def __init__(self, settings: SipSettings, loop: asyncio.AbstractEventLoop) -> None:
        self.settings = settings
        self.loop = loop
        self.ep: pj.Endpoint | None = None
        self.port: int | None = None
        self._jobs: queue.SimpleQueue[tuple[Callable[[], Any], asyncio.Future | None]] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._ready = threading.Event()
        self._stop = threading.Event()
        self._error: BaseException | None = None
        self._tickers: list[Callable[[], None]] = []
        self._on_shutdown: list[Callable[[], None]] = []
        self._log_writer: PjLogWriter | None = None
        self.frames = FrameInbox(loop)
        self.has_calls: Callable[[], bool] = lambda: False  # pj thread; set by the endpoint

    # -- from any thread -------------------------------------------------------------

    def start(self, timeout_s: float = 20.0) -> None:
        self._thread = threading.Thread(target=self._run, name="pjsua2", daemon=True)
        self._thread.start()
        if not self._ready.wait(timeout_s):
            raise RuntimeError("pjsua2 did not start in time")
        if self._error is not None:
            raise RuntimeError(f"pjsua2 failed to start: {self._error}") from self._error

    def post(self, fn: Callable[[], Any]) -> None:
        """Run fn on the pj thread, fire and forget (errors are logged)."""
        self._jobs.put((fn, None))

    async def call(self, fn: Callable[[], Any], timeout_s: float = 10.0) -> Any:
        """Run fn on the pj thread and await its result without blocking the loop."""
        fut = self.loop.create_future()
        self._jobs.put((fn, fut))
        return await asyncio.wait_for(fut, timeout_s)

    def to_loop(self, fn: Callable, *args) -> None:
        """From the pj thread: run fn(*args) on the asyncio loop."""
        try:
            self.loop.call_soon_threadsafe(fn, *args)
        except RuntimeError:  # loop closed: shutting down
            pass

    def add_ticker(self, fn: Callable[[], None]) -> None:
        """fn runs on the pj thread about every 250 ms."""
        self._tickers.append(fn)

    def on_shutdown(self, fn: Callable[[], None]) -> None:
        self._on_shutdown.append(fn)

    def stop(self, timeout_s: float = 10.0) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout_s)

    # -- the pj thread -----------------------------------------------------------------

    def _settle(self, fut: asyncio.Future | None, result: Any = None, exc: BaseException | None = None) -> None:
        if fut is None:
            if exc is not None:
                log.warning("sip job failed", extra={"error": repr(exc)})
            return

        def settle() -> None:
            if fut.done():
                return
            if exc is not None:
                fut.set_exception(exc)
            else:
                fut.set_result(result)
        self.to_loop(settle)

    def _init(self) -> None:
        s = self.settings
        ep = pj.Endpoint()
        ep.libCreate()
        cfg = pj.EpConfig()
        cfg.uaConfig.threadCnt = 0
        cfg.uaConfig.mainThreadOnly = True
        cfg.uaConfig.userAgent = "voxray"
        # pjsua clips this to its build's PJSUA_MAX_CALLS: the pjsua2-python 2.15.1.post1
        # wheel allows 4 concurrent calls per process (more get 486 Busy Here).
        cfg.uaConfig.maxCalls = s.max_calls
        cfg.logConfig.level = s.log_level
        cfg.logConfig.consoleLevel = 0
        self._log_writer = PjLogWriter()
        cfg.logConfig.writer = self._log_writer
        cfg.medConfig.clockRate = 16000
        cfg.medConfig.sndClockRate = 16000
        cfg.medConfig.audioFramePtime = 20
        cfg.medConfig.hasIoqueue = True
        cfg.medConfig.threadCnt = 1
        cfg.medConfig.noVad = True
        cfg.medConfig.ecTailLen = 0
        ep.libInit(cfg)
        ep.audDevManager().setNullDev()
        tcfg = pj.TransportConfig()
        tcfg.boundAddress = s.bind
        tcfg.port = s.port
        if s.public_address:
            tcfg.publicAddress = s.public_address
        try:
            tid = ep.transportCreate(pj.PJSIP_TRANSPORT_UDP, tcfg)
        except pj.Error:
            if not s.free_port_fallback or not s.port:
                raise
            # The port the node picked was taken meanwhile (by a caller's RTP, say).
            log.warning("sip port taken; listening on a free one", extra={"port": s.port})
            tcfg.port = 0
            tid = ep.transportCreate(pj.PJSIP_TRANSPORT_UDP, tcfg)
        self.port = ep.transportGetInfo(tid).localName.rsplit(":", 1)[-1]
        self.port = int(self.port)
        # Codec priorities: the configured list first, everything else off.
        wanted = {c.lower(): 255 - i for i, c in enumerate(s.codecs)}
        for ci in ep.codecEnum2():
            prio = next((p for name, p in wanted.items() if ci.codecId.lower().startswith(name)), 0)
            ep.codecSetPriority(ci.codecId, prio)
        ep.libStart()
        self.ep = ep

    def _run(self) -> None:
        try:
            self._init()
        except BaseException as exc:  # reported by start()
            self._error = exc
            self._ready.set()
            return
        self._ready.set()
        log.info("sip stack up", extra={"bind": self.settings.bind, "port": self.port})
        next_tick = time.monotonic() + 0.25
        last_job = 0.0
        try:
            while not self._stop.is_set():
                # SIP from the network wakes the poll at once; jobs from the loop wait for it
                # to return. So: short while the agent is busy with a call (its commands come
                # in bursts), a frame's length while calls are up, and 100 ms when idle (the
                # poll at 100 Hz was the largest part of an idle worker's CPU).
                now = time.monotonic()
                wait_ms = 10 if now - last_job < 1.0 else 20 if self.has_calls() else 100
                self.ep.libHandleEvents(wait_ms)
                for _ in range(64):
                    if self._jobs.empty():
                        break
                    fn, fut = self._jobs.get_nowait()
                    last_job = time.monotonic()
                    try:
                        result = fn()
                    except BaseException as exc:
                        self._settle(fut, exc=exc)
                    else:
                        self._settle(fut, result)
                if time.monotonic() >= next_tick:
                    next_tick = time.monotonic() + 0.25
                    for tick in list(self._tickers):
                        try:
                            tick()
                        except Exception as exc:
                            log.warning("sip ticker failed", extra={"error": repr(exc)})
        finally:
            self._destroy()

    def _destroy(self) -> None:
        ep = self.ep
        if ep is None:
            return
        for fn in self._on_shutdown:
            try:
                fn()
            except Exception as exc:
                log.warning("sip shutdown step failed", extra={"error": repr(exc)})
        # Let BYEs and un-REGISTERs leave before the library goes.
        deadline = time.monotonic() + 1.0
        while time.monotonic() < deadline:
            ep.libHandleEvents(10)
        gc.collect()
        try:
            ep.libDestroy()
        except Exception as exc:
            log.warning("libDestroy failed", extra={"error": repr(exc)})
        self.ep = None
        log.info("sip stack down")
