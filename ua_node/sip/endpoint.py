"""SIP calls for a UA node: inbound routing, agent commands, outbound INVITEs.

Runs on the actor's asyncio loop; every pjsua2 call goes through `PjStack`
(`stack.call` / `stack.post`) to the pj thread. Methods named `_pj_*` run there.
"""

from __future__ import annotations

import asyncio
import time
import uuid

import httpx
import numpy as np
import pjsua2 as pj

from voxray import metrics
from voxray.logs import bind_call, get_logger
from voxray.protocol import commands as cmd
from voxray.protocol import events as ev
from voxray.protocol.errors import ProtocolError
from voxray.media.audio_source import AudioSourcePolicy, load_audio
from voxray.ua_node.node import NodeCall, UaNodeCore
from voxray.ua_node.sip.config import SipSettings
from voxray.ua_node.sip.lifetime import destroy
from voxray.ua_node.sip.pjcall import SipAccount, SipCall, header_tag, plain_uri, sip_body, sip_header
from voxray.ua_node.sip.routing import Route, choose_route, notify, validate_rules
from voxray.ua_node.sip.rtp_filter import udp_sockets
from voxray.ua_node.sip.stack import PjStack
from voxray.ua_node.sip.transport import SipTransport
from voxray.ua_node.sip.trust import TrustedSources, registrar_host, resolve

log = get_logger("voxray.sip")


def _pj_message(exc: BaseException) -> str:
    info = getattr(exc, "info", None)
    if callable(info):
        try:
            return info()
        except Exception:
            pass
    return getattr(exc, "reason", None) or str(exc) or type(exc).__name__


class SipEndpoint:
    def __init__(self, core: UaNodeCore, settings: SipSettings, loop: asyncio.AbstractEventLoop) -> None:
        validate_rules(settings.rules)
        self.core = core
        self.settings = settings
        self.stack = PjStack(settings, loop)
        self.http = httpx.AsyncClient()
        self.account: SipAccount | None = None  # pj thread
        self._live: dict[str, SipCall] = {}  # pj thread: calls (and their accounts) kept alive
        self._ticks = 0  # pj thread
        self._tasks: set[asyncio.Task] = set()
        self.trusted = TrustedSources(settings.trusted_sources)
        mc = core.media_config
        self.play_policy = AudioSourcePolicy(list(mc.play_dirs), mc.play_cache_dir, mc.play_allow_private_urls)

    # -- life cycle ---------------------------------------------------------------------

    async def start(self) -> None:
        if self.settings.account and self.settings.trusted_sources:
            host = registrar_host(self.settings.account.registrar)
            # The registrar relays our inbound calls: it is trusted whatever the list says.
            registrar_ips = await asyncio.to_thread(resolve, host) if host else []
            self.trusted = TrustedSources(self.settings.trusted_sources, registrar_ips)
        await asyncio.to_thread(self.stack.start)
        await self.stack.call(self._pj_create_account)
        self.stack.add_ticker(self._pj_tick)
        self.stack.on_shutdown(self._pj_shutdown)
        log.info("sip ready", extra={"port": self.stack.port, "registrar": bool(self.settings.account)})

    async def close(self) -> None:
        await asyncio.to_thread(self.stack.stop)
        await self.http.aclose()

    @property
    def host(self) -> str:
        return self.settings.public_address or self.settings.bind

    def _spawn(self, coro) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # -- pj thread: accounts ------------------------------------------------------------------

    def _media_config(self, cfg: pj.AccountConfig) -> None:
        s = self.settings
        cfg.mediaConfig.transportConfig.boundAddress = s.bind
        cfg.mediaConfig.transportConfig.port = s.rtp_port
        cfg.mediaConfig.transportConfig.portRange = s.rtp_port_range
        # Random ports within the range: a third party cannot guess the next call's RTP port.
        cfg.mediaConfig.transportConfig.randomizePort = True
        if s.public_address:
            cfg.mediaConfig.transportConfig.publicAddress = s.public_address
        # No re-INVITE to narrow a multi-codec answer down to one (simple gateways choke on it).
        cfg.mediaConfig.lockCodecEnabled = False
        cfg.callConfig.timerUse = pj.PJSUA_SIP_TIMER_OPTIONAL
        cfg.callConfig.timerSessExpiresSec = s.session_timer_s
        cfg.callConfig.timerMinSESec = 90

    def _pj_create_account(self) -> None:
        s = self.settings
        cfg = pj.AccountConfig()
        if s.account:
            a = s.account
            cfg.idUri = f"sip:{a.username}@{a.domain}"
            cfg.regConfig.registrarUri = a.registrar
            cfg.regConfig.timeoutSec = a.reregister_s
            cfg.regConfig.retryIntervalSec = a.retry_s
            cfg.regConfig.firstRetryIntervalSec = 1
            cfg.regConfig.unregWaitMsec = 1000
            if a.password:
                cfg.sipConfig.authCreds.append(pj.AuthCredInfo("digest", a.realm, a.username, 0, a.password))
        else:
            cfg.idUri = f"sip:{s.user}@{self.host}:{self.stack.port}"
        self._media_config(cfg)
        acc = SipAccount(self.stack, self._pj_on_incoming)
        acc.create(cfg, True)
        self.account = acc

    def _pj_ephemeral_account(self, option: cmd.CallOption) -> SipAccount:
        """An unregistered account carrying one outbound call's digest credentials."""
        sip = option.sip
        cfg = pj.AccountConfig()
        domain = sip.realm or (self.settings.account.domain if self.settings.account else self.host)
        cfg.idUri = self.to_uri(option.caller) if option.caller else f"sip:{sip.username}@{domain}"
        cfg.sipConfig.authCreds.append(pj.AuthCredInfo("digest", sip.realm or "*", sip.username, 0, sip.password))
        self._media_config(cfg)
        acc = SipAccount(self.stack, self._pj_on_incoming)
        acc.create(cfg, False)
        return acc

    def _pj_shutdown(self) -> None:
        for call in list(self._live.values()):
            if not call.disconnected:
                try:
                    call.hangup(pj.CallOpParam())
                except pj.Error:
                    pass
        if self.stack.ep is not None:
            for _ in range(20):  # let the BYEs leave
                self.stack.ep.libHandleEvents(10)
        for call in list(self._live.values()):
            call.retire()
        self._live.clear()
        if self.account is not None:
            self.account.shutdown()  # un-REGISTERs
            destroy(self.account)
            self.account = None

    def _pj_tick(self) -> None:
        self._ticks += 1
        drops: dict[int, int] | None = None
        if self._ticks % 4 == 0 and any(c.guard.latched for c in self._live.values()):
            drops = {s.inode: s.drops for s in udp_sockets()}  # one /proc read a second for all calls
        now = time.monotonic()
        for key, call in list(self._live.items()):
            t = call.transport
            if call.disconnected:
                del self._live[key]
                call.retire()
                continue
            if not call.guard.latched:
                call.guard_update()
            elif drops is not None:
                n = call.guard.dropped(drops, now)
                if n:
                    self.stack.to_loop(t.pj_rtp_dropped, n, str(call.guard.rtp))
            seen = call.rtp_seen()
            if seen is not None:  # the node's inactivity watch reads it (transport.last_heard)
                t.last_rx = seen

    # -- inbound -------------------------------------------------------------------------------

    def _pj_on_incoming(self, acc: SipAccount, prm) -> None:
        msg = prm.rdata.wholeMsg
        t = SipTransport(self, uuid.uuid4().hex, inbound=True)
        call = SipCall(self.stack, acc, t, prm.callId)
        t.bind_pj(call)
        self._live[t.call_id] = call
        from_h, to_h = sip_header(msg, "from", "f") or "", sip_header(msg, "to", "t") or ""
        info = {
            "caller": plain_uri(from_h), "callee": plain_uri(to_h),
            "sip_call_id": sip_header(msg, "call-id", "i"), "from_tag": header_tag(from_h),
            "to_tag": None, "sdp": sip_body(msg), "source": prm.rdata.srcAddress,
        }
        try:
            info["to_tag"] = header_tag(call.getInfo().localUri)
        except pj.Error:
            pass
        self.stack.to_loop(self._on_incoming, t, info)

    def _on_incoming(self, t: SipTransport, info: dict) -> None:
        if not self.trusted.allows(info["source"] or ""):
            with bind_call(t.call_id):
                log.warning("INVITE from an untrusted source refused",
                            extra={"source": info["source"], "caller": info["caller"],
                                   "rejected_total": self.trusted.rejected})
            metrics.inc("sip_rejected_total", reason="untrusted_source")
            t.ended = True
            self._spawn(self.hangup(t, 403, "Forbidden"))
            return
        why = self.core.refusal()
        if why is not None:  # draining, at capacity or overloaded: the caller may try again
            with bind_call(t.call_id):
                log.warning("INVITE refused", extra={"why": why.text, "caller": info["caller"]})
            metrics.inc("sip_rejected_total", reason="draining" if why.reason == "draining" else "overloaded")
            t.ended = True
            self._spawn(self.hangup(t, 503, "Service Unavailable", {"Retry-After": str(self.core.retry_after_s)}))
            return
        call = NodeCall(t.call_id, "sip", cmd.CallOption(caller=info["caller"], callee=info["callee"]))
        call.transport = t
        t.sip_info = info
        self.core.add_call(call)
        with bind_call(t.call_id):
            log.info("incoming sip call", extra={k: info[k] for k in ("caller", "callee", "sip_call_id", "source")})
        t.emit(ev.Incoming(caller=info["caller"], callee=info["callee"], sdp=info["sdp"]))
        route = choose_route(self.settings, info["caller"], info["callee"])
        self._spawn(self._route(t, info, route))

    async def _route(self, t: SipTransport, info: dict, route: Route) -> None:
        with bind_call(t.call_id):
            if route.reject:
                log.info("inbound call rejected", extra={"code": route.reject, "why": route.reason})
                await self._reject(t, route.reject, route.reason, "system")
                return
            payload = {"caller": info["caller"], "callee": info["callee"], "call_id": t.call_id,
                       "from_tag": info["from_tag"], "to_tag": info["to_tag"],
                       "sip_call_id": info["sip_call_id"]}
            if not await notify(self.http, route.url, payload, self.settings.webhook_timeout_s):
                await self._reject(t, 480, "agent webhook failed", "system")
                return
            log.info("inbound call routed", extra={"url": route.url, "via": route.reason})
            await asyncio.sleep(self.settings.answer_timeout_s)
            if not t.accepted and not t.ended:
                log.info("inbound call not answered in time")
                await self._reject(t, 408, "not answered in time", "system")

    async def _reject(self, t: SipTransport, code: int, reason: str, initiator: str) -> None:
        t.ended = True
        await self.hangup(t, code, reason)
        await self.core.end_call(t.call_id, "rejected", initiator)

    # -- agent commands ---------------------------------------------------------------------

    async def handle_command(self, call: NodeCall, c: cmd.Command) -> bool:
        """SIP's own commands; False hands the command on to the media session."""
        t = call.transport
        if not isinstance(t, SipTransport):
            return False
        # voxray.protocol.rules has checked c against t.call_state() already.
        if isinstance(c, cmd.Accept):
            await self._accept(call, t, c.option)
        elif isinstance(c, cmd.Reject):
            await self._reject(t, c.code or 486, c.reason or "rejected", "agent")
        elif isinstance(c, cmd.Ringing):
            if c.recorder and c.recorder.recorder_file:
                t.recorder_file = c.recorder.recorder_file
            if c.early_media and call.session is None:
                t.early_media = True
                self.core.attach(call, t)
            await self._pj_job(lambda: self._pj_answer(t, 183 if c.early_media else 180))
        elif isinstance(c, cmd.Refer):
            await self._refer(t, c)
        else:
            return False
        return True

    async def _accept(self, call: NodeCall, t: SipTransport, option: cmd.CallOption) -> None:
        updates = {"caller": option.caller or call.option.caller, "callee": option.callee or call.option.callee}
        call.option = option.model_copy(update=updates)
        if option.recorder and option.recorder.recorder_file:
            t.recorder_file = option.recorder.recorder_file
        t.accepted = True
        if call.session is None:
            self.core.attach(call, t)
        sdp = await self._pj_job(lambda: self._pj_answer(t, 200))
        await call.emit(ev.Answer(track_id=t.call_id, sdp=sdp))

    async def _refer(self, t: SipTransport, c: cmd.Refer) -> None:
        if not t.confirmed:
            raise ProtocolError("refer needs an answered call", 409)
        if t.refer_pending:
            raise ProtocolError("a transfer is already pending", 409)
        dest = self.to_uri(c.callee)
        opts = c.options
        moh = await self._load_moh(opts.moh) if opts and opts.moh else None
        t.refer_auto_hangup = True if not opts or opts.auto_hangup is None else opts.auto_hangup
        t.refer_pending = True

        def xfer() -> None:
            pjcall = t.pj_call()
            if pjcall is None:
                raise ProtocolError("the call has ended", 410)
            pjcall.xfer(dest, pj.CallOpParam(True))
            if moh is not None:
                t.set_moh(moh)
        try:
            await self._pj_job(xfer)
        except ProtocolError:
            t.refer_pending = False
            raise
        with bind_call(t.call_id):
            log.info("refer sent", extra={"to": dest, "moh": bool(moh is not None)})

    async def _load_moh(self, url: str) -> np.ndarray:
        """Music on hold, as 16 kHz mono PCM, under the same policy as `play` (allowed folders,
        no private URLs unless allowed, size and length caps)."""
        return await load_audio(url, 16000, self.play_policy, what="moh")

    async def _pj_job(self, fn):
        try:
            return await self.stack.call(fn)
        except ProtocolError:
            raise
        except asyncio.TimeoutError:
            raise ProtocolError("the SIP stack did not answer in time", 504) from None
        except Exception as exc:
            raise ProtocolError(f"sip: {_pj_message(exc)}", 502) from None

    def _pj_answer(self, t: SipTransport, code: int) -> str | None:
        pjcall = t.pj_call()
        if pjcall is None or pjcall.disconnected:
            raise ProtocolError("the caller has gone", 410)
        prm = pj.CallOpParam(True)
        prm.statusCode = code
        pjcall.answer(prm)
        return pjcall.local_sdp

    async def hangup(self, t: SipTransport, code: int = 200, reason: str = "",
                     headers: dict[str, str] | None = None) -> None:
        def job() -> None:
            pjcall = t.pj_call()
            if pjcall is None or pjcall.disconnected:
                return
            prm = pj.CallOpParam(True)
            if not pjcall.confirmed:
                prm.statusCode = code
                if reason:
                    prm.reason = reason
                for name, value in (headers or {}).items():
                    h = pj.SipHeader()
                    h.hName, h.hValue = name, value
                    prm.txOption.headers.append(h)
            pjcall.hangup(prm)
        try:
            await self.stack.call(job)
        except Exception as exc:
            with bind_call(t.call_id):
                log.warning("sip hangup failed", extra={"error": _pj_message(exc)})

    # -- outbound ----------------------------------------------------------------------------

    def to_uri(self, target: str) -> str:
        target = target.strip()
        if target.startswith(("sip:", "sips:")):
            return target
        if "@" in target:
            return f"sip:{target}"
        if self.settings.account:
            return f"sip:{target}@{self.settings.account.domain}"
        raise ProtocolError(f"'{target}' is not a SIP URI and no registrar domain is configured", 422)

    async def open_outbound(self, call_id: str, option: cmd.CallOption):
        if not option.callee:
            raise ProtocolError("a SIP invite needs option.callee (a SIP URI, or a user at the registrar)", 422)
        dest = self.to_uri(option.callee)
        sip = option.sip
        if sip and (sip.username is None) != (sip.password is None):
            raise ProtocolError("option.sip needs both username and password", 422)
        t = SipTransport(self, call_id, inbound=False)
        if option.recorder and option.recorder.recorder_file:
            t.recorder_file = option.recorder.recorder_file

        def make_call() -> None:
            acc = self.account
            ephemeral = None
            if sip and sip.username:
                acc = ephemeral = self._pj_ephemeral_account(option)
            call = SipCall(self.stack, acc, t)
            call.ephemeral_account = ephemeral
            prm = pj.CallOpParam(True)
            for name, value in ((sip.headers if sip else None) or {}).items():
                h = pj.SipHeader()
                h.hName, h.hValue = name, value
                prm.txOption.headers.append(h)
            t.bind_pj(call)
            try:
                call.makeCall(dest, prm)
            except BaseException:
                t.forget_pj()
                call.retire()
                raise
            self._live[call_id] = call
        await self._pj_job(make_call)
        log.info("sip invite sent", extra={"to": dest})
        return t, None
