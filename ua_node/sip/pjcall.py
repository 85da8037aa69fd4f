"""pjsua2 Account and Call subclasses: everything here runs on the pj thread.

They report to the asyncio side (`SipTransport`) only through `stack.to_loop`, and
hold the pj objects (call, media port) that must die on this thread.
"""

from __future__ import annotations

import re
import time
from typing import Protocol

import numpy as np
import pjsua2 as pj

from voxray.logs import get_logger
from voxray.ua_node.sip.addr import host_port, peer_address
from voxray.ua_node.sip.lifetime import destroy
from voxray.ua_node.sip.media_port import BridgePort, audio_format
from voxray.ua_node.sip.rtp_guard import RtpGuard
from voxray.ua_node.sip.stack import PjStack

log = get_logger("voxray.sip")

_TAG = re.compile(r";\s*tag=([^;>\s]+)", re.I)


def sip_header(msg: str, *names: str) -> str | None:
    """First value of a header (long or compact name) in a raw SIP message."""
    head = msg.split("\r\n\r\n", 1)[0]
    for line in head.split("\r\n")[1:]:
        name, _, value = line.partition(":")
        if name.strip().lower() in names:
            return value.strip()
    return None


def sip_headers(msg: str) -> list[str]:
    """Every header line of a raw SIP message, as "Name: value" (active-call's webhook sends them)."""
    head = msg.split("\r\n\r\n", 1)[0]
    return [line for line in head.split("\r\n")[1:] if ":" in line]


def sip_body(msg: str) -> str | None:
    parts = msg.split("\r\n\r\n", 1)
    return parts[1] if len(parts) == 2 and parts[1].strip() else None


def plain_uri(uri: str) -> str:
    """`"Alice" <sip:alice@host>;tag=x` -> `sip:alice@host`."""
    m = re.search(r"<([^>]*)>", uri)
    uri = m.group(1) if m else uri.split(";", 1)[0]
    return uri.strip()


def _port(name: str) -> int | None:
    """The port of pjsua's "host:port" (None when empty)."""
    hp = host_port(name)
    return (hp[1] or None) if hp else None


def header_tag(value: str | None) -> str | None:
    m = _TAG.search(value or "")
    return m.group(1) if m else None


class CallReports(Protocol):
    """The asyncio half a pj call reports to (transport.SipTransport); `pj_*` run on the loop."""

    call_id: str

    def next_frame(self) -> np.ndarray: ...  # the media port's clock thread
    def forget_pj(self) -> None: ...  # pj thread
    def pj_audio(self, pcm: bytes) -> None: ...
    def pj_dtmf(self, digit: str) -> None: ...
    def pj_ringing(self, early_media: bool) -> None: ...
    def pj_confirmed(self, sdp: str | None) -> None: ...
    def pj_disconnected(self, code: int, reason: str, confirmed: bool) -> None: ...
    def pj_refer_status(self, code: int, reason: str, final: bool) -> None: ...
    def pj_rtp_source(self, source: str, policy: str) -> None: ...
    def pj_rtp_filter_failed(self, error: str) -> None: ...


class SipAccount(pj.Account):
    def __init__(self, stack: PjStack, on_incoming) -> None:
        super().__init__()
        self.stack = stack
        self._on_incoming = on_incoming  # (account, OnIncomingCallParam) on the pj thread
        self.reg_active = False

    def onIncomingCall(self, prm) -> None:
        self._on_incoming(self, prm)

    def onRegState(self, prm) -> None:
        info = self.getInfo()
        self.reg_active = bool(info.regIsActive)
        log.info("sip registration", extra={"code": prm.code, "reason": prm.reason,
                                            "active": self.reg_active, "expires": prm.expiration})


class SipCall(pj.Call):
    """One pjsua2 call; `transport` is its asyncio-side half."""

    def __init__(self, stack: PjStack, acc: pj.Account, transport: CallReports,
                 call_id: int = pj.PJSUA_INVALID_ID) -> None:
        super().__init__(acc, call_id)
        self.stack = stack
        self.transport = transport
        self.port: BridgePort | None = None
        self.audio_index: int | None = None
        self.local_sdp: str | None = None
        self.remote_sdp: str | None = None
        self.confirmed = False
        self.disconnected = False
        self.ephemeral_account: pj.Account | None = None  # per-call credentials (outbound)
        self._rx_pkts = -1
        self._last_rx = time.monotonic()
        self._early_reported = False
        self.guard = RtpGuard(stack.settings.rtp_source)

    # -- pj callbacks ------------------------------------------------------------------

    def onCallSdpCreated(self, prm) -> None:
        self.local_sdp = prm.sdp.wholeSdp
        if prm.remSdp.wholeSdp:
            self.remote_sdp = prm.remSdp.wholeSdp

    def _remote_sdp_from(self, e) -> None:
        """The peer's SDP answer (outbound calls): the body of a response to our INVITE."""
        try:
            if e.type != pj.PJSIP_EVENT_TSX_STATE or e.body.tsxState.type != pj.PJSIP_EVENT_RX_MSG:
                return
            msg = e.body.tsxState.src.rdata.wholeMsg
        except (AttributeError, pj.Error):
            return
        if msg.startswith("SIP/2.0 ") and "INVITE" in (sip_header(msg, "cseq") or ""):
            body = sip_body(msg)
            if body and "m=audio" in body:
                self.remote_sdp = body

    def onCallTsxState(self, prm) -> None:
        self._remote_sdp_from(prm.e)

    def onCallState(self, prm) -> None:
        ci = self.getInfo()
        state = ci.state
        t = self.transport
        if ci.role == pj.PJSIP_ROLE_UAC:
            self._remote_sdp_from(prm.e)
        if state == pj.PJSIP_INV_STATE_EARLY and ci.role == pj.PJSIP_ROLE_UAC:
            code = ci.lastStatusCode
            if code in (180, 183) and not self._early_reported:
                self._early_reported = True
                self.stack.to_loop(t.pj_ringing, code == 183)
        elif state == pj.PJSIP_INV_STATE_CONFIRMED and not self.confirmed:
            self.confirmed = True
            self._last_rx = time.monotonic()
            self.stack.to_loop(t.pj_confirmed, self.local_sdp if ci.role == pj.PJSIP_ROLE_UAS else self.remote_sdp)
        elif state == pj.PJSIP_INV_STATE_DISCONNECTED and not self.disconnected:
            self.disconnected = True
            code, reason = ci.lastStatusCode, ci.lastReason
            self.release_media()
            self.stack.to_loop(t.pj_disconnected, code, reason, self.confirmed)
            t.forget_pj()
            # Now, not later: ~Call acts on its pjsua slot id, which pjsua frees after this
            # callback. Destroyed after a new call took the slot, it would clear that call's
            # association and hang it up (603 Decline to a caller who just rang in).
            destroy(self)

    def onCallMediaState(self, prm) -> None:
        ci = self.getInfo()
        media = ci.media
        for mi in media:
            if mi.type != pj.PJMEDIA_TYPE_AUDIO or mi.status not in (
                    pj.PJSUA_CALL_MEDIA_ACTIVE, pj.PJSUA_CALL_MEDIA_REMOTE_HOLD):
                continue
            am = self.getAudioMedia(mi.index)
            self.audio_index = mi.index
            if self.port is None:
                t = self.transport
                self.port = BridgePort(lambda pcm: self.stack.frames.put(t.pj_audio, pcm), t.next_frame)
                self.port.createPort(f"vox-{t.call_id[:20]}", audio_format())
            am.startTransmit(self.port)
            self.port.startTransmit(am)
            self.guard_update()
            break

    def onDtmfDigit(self, prm) -> None:
        # RFC 4733 telephone-events and SIP INFO (application/dtmf-relay) both land here.
        self.stack.to_loop(self.transport.pj_dtmf, prm.digit)

    def onCallTransferStatus(self, prm) -> None:
        prm.cont = True
        self.stack.to_loop(self.transport.pj_refer_status, prm.statusCode, prm.reason, bool(prm.finalNotify))

    # -- used by the stack (pj thread) ---------------------------------------------------

    def release_media(self) -> None:
        # Explicitly, here on the pj thread: never by Python's GC (lifetime.py says why).
        port, self.port = self.port, None
        destroy(port)

    def retire(self) -> None:
        """Free the pj objects of a call that is over or never started (pj thread; see lifetime.py).

        A call that reached DISCONNECTED was destroyed in that callback already; one that
        did not still owns its pjsua slot, so its destructor hangs up the right call.
        """
        self.release_media()
        if self.ephemeral_account is not None:
            # shutdown() and the destructor both act on the account's slot id: back to back
            # on this thread, no other account can take the slot in between.
            self.ephemeral_account.shutdown()
            destroy(self.ephemeral_account)
            self.ephemeral_account = None
        destroy(self)

    def guard_update(self) -> None:
        """Apply the RTP source policy (on media changes, and each tick until latched)."""
        g = self.guard
        if g.policy == "any" or self.audio_index is None or self.disconnected:
            return
        try:
            ti = self.getMedTransportInfo(self.audio_index)
            si = self.getStreamInfo(self.audio_index)
        except pj.Error:
            return
        try:
            src = g.update(_port(ti.localRtpName), _port(ti.localRtcpName), peer_address(si.remoteRtpAddress),
                           peer_address(si.remoteRtcpAddress), peer_address(ti.srcRtpName))
        except OSError as exc:
            # Without the filter the call still works, with pjmedia's own (weaker) source checks.
            self.stack.to_loop(self.transport.pj_rtp_filter_failed, str(exc))
            g.policy = "any"
            return
        if src is not None:
            self.stack.to_loop(self.transport.pj_rtp_source, str(src), g.policy)

    def rtp_seen(self) -> float | None:
        """Monotonic time RTP last arrived (from the stream's packet counter), or None before media."""
        if not self.confirmed or self.disconnected or self.audio_index is None:
            return None
        try:
            pkts = self.getStreamStat(self.audio_index).rtcp.rxStat.pkt
        except pj.Error:
            return None
        if pkts != self._rx_pkts:
            self._rx_pkts = pkts
            self._last_rx = time.monotonic()
        return self._last_rx
