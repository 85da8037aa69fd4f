"""The asyncio-side half of one SIP call: a voxray MediaTransport over pjsua2.

`pj_*` methods are scheduled onto the actor's loop by the pj thread; the pj call
itself (`_pj`) is touched only inside functions run on the pj thread.
"""

from __future__ import annotations

import asyncio
import time
from typing import Protocol

import numpy as np

from voxray import metrics
from voxray.logs import bind_call, get_logger
from voxray.protocol import events as ev
from voxray.protocol.rules import CallState
from voxray.ua_node.node import UaNodeCore
from voxray.ua_node.sip.media_port import BridgePort
from voxray.ua_node.sip.stack import PjStack
from voxray.ua_node.transport import MediaTransport


class SipCalls(Protocol):
    """What a call's asyncio half needs of the endpoint that holds it (endpoint.SipEndpoint)."""

    core: UaNodeCore
    stack: PjStack

    async def hangup(self, t: "SipTransport", code: int = 200, reason: str = "",
                     headers: dict[str, str] | None = None) -> None: ...


class PjSide(Protocol):
    """The pj thread's half of the call (pjcall.SipCall), as seen from here."""

    port: BridgePort | None

log = get_logger("voxray.sip")


class SipTransport(MediaTransport):
    kind = "sip"

    def __init__(self, endpoint: SipCalls, call_id: str, inbound: bool) -> None:
        super().__init__()
        self.endpoint = endpoint
        self.call_id = call_id
        self.inbound = inbound
        self.last_rx: float | None = None  # monotonic time of the last RTP packet (set by the pj tick)
        self._pj: PjSide | None = None  # pj thread only
        self.accepted = False  # inbound: 200 OK sent
        self.confirmed = False
        self.ended = False
        self.refer_pending = False
        self.early_media = False  # ringing with early media: the session plays before the answer
        self.refer_auto_hangup = True
        self.frames_in = 0

    # -- helpers ------------------------------------------------------------------------

    def _closed(self, reason: str, initiator: str) -> None:
        self.ended = True
        if self.on_closed is None and self.wired:  # a ringing inbound call: no session to attach
            asyncio.get_running_loop().create_task(self.endpoint.core.end_call(self.call_id, reason, initiator))
        else:
            self.peer_closed(reason, initiator)

    def last_heard(self) -> float:
        # RTP packets, not decoded frames: pjmedia's jitter buffer plays on (PLC) when RTP stops.
        # A call not answered yet is ringing, not silent.
        return self.last_rx if self.confirmed and self.last_rx is not None else time.monotonic()

    def call_state(self) -> CallState:
        return CallState(media="sip", inbound=self.inbound, set_up=not self.inbound or self.accepted,
                         answered=self.accepted if self.inbound else self.confirmed,
                         early_media=self.early_media, caller_gone=self.ended)

    def bind_pj(self, pjcall: PjSide) -> None:  # pj thread
        self._pj = pjcall

    def forget_pj(self) -> None:  # pj thread
        self._pj = None

    def pj_call(self) -> PjSide | None:  # pj thread
        return self._pj

    # -- from the pj thread (run on the loop) ------------------------------------------------

    def pj_audio(self, pcm: bytes) -> None:
        self.frames_in += 1
        if self.on_audio is not None and not self.ended:
            self.on_audio(pcm)

    def pj_dtmf(self, digit: str) -> None:
        with bind_call(self.call_id):
            log.info("dtmf", extra={"digit": digit})
        self.emit(ev.Dtmf(digit=digit))

    def pj_ringing(self, early_media: bool) -> None:
        self.emit(ev.RingingEvent(early_media=early_media))

    def pj_confirmed(self, sdp: str | None) -> None:
        self.confirmed = True
        self.last_rx = time.monotonic()
        with bind_call(self.call_id):
            log.info("sip call confirmed", extra={"inbound": self.inbound})
        if not self.inbound:
            self.emit(ev.Answer(sdp=sdp))

    def pj_disconnected(self, code: int, reason: str, confirmed: bool) -> None:
        with bind_call(self.call_id):
            log.info("sip call disconnected", extra={"code": code, "reason": reason, "ended": self.ended})
        if self.ended:
            return
        if not self.inbound and not confirmed:
            self.emit(ev.RejectEvent(code=code, reason=reason))
            self._closed("rejected", "callee")
        elif not confirmed:
            self._closed("canceled", "caller")
        else:
            self._closed("hangup", "caller" if self.inbound else "callee")

    def pj_rtp_source(self, source: str, policy: str) -> None:
        with bind_call(self.call_id):
            log.info("rtp source locked", extra={"source": source, "policy": policy})

    def pj_rtp_filter_failed(self, error: str) -> None:
        with bind_call(self.call_id):
            log.warning("rtp source filter not attached; pjmedia's own checks only", extra={"error": error})

    def pj_rtp_dropped(self, packets: int, source: str) -> None:
        with bind_call(self.call_id):
            log.warning("rtp from an unexpected source dropped", extra={"packets": packets, "accepted": source})
        metrics.inc("rtp_foreign_dropped_total", packets)
        self.emit(ev.Error(sender="sip", code=403, error=(
            f"dropped {packets} RTP packets from an unexpected source address; "
            f"this call takes media from {source} only")))

    def pj_refer_status(self, code: int, reason: str, final: bool) -> None:
        # A flat map: active-call's clients read `other.extra` as strings (the wire writes 200 as "200").
        self.emit(ev.Other(sender="sip", extra={"event": "refer", "code": code, "reason": reason, "final": final}))
        if final:
            self.refer_pending = False
            self.endpoint.stack.post(self._stop_moh)
            if 200 <= code < 300 and self.refer_auto_hangup and not self.ended:
                asyncio.get_running_loop().create_task(
                    self.endpoint.core.end_call(self.call_id, "transferred", "system"))

    # -- pj thread jobs -------------------------------------------------------------------

    def _stop_moh(self) -> None:
        c = self._pj
        if c is not None and c.port is not None:
            c.port.set_moh(None)

    def set_moh(self, pcm: np.ndarray | None) -> None:  # pj thread
        c = self._pj
        if c is not None and c.port is not None:
            c.port.set_moh(pcm)

    # -- MediaTransport ---------------------------------------------------------------------

    async def close(self) -> None:
        if self.ended:
            return
        self.ended = True
        code = 480 if (self.inbound and not self.accepted) else 200
        await self.endpoint.hangup(self, code, "call ended")
