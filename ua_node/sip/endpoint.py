"""The UA node's SIP endpoint: the pj stack, the node's account, the calls it holds.

Runs on the actor's asyncio loop; every pjsua2 call goes through `PjStack`
(`stack.call` / `stack.post`) to the pj thread, and methods named `pj_*` run there.
The concerns around it have modules of their own: `inbound` (trust, admission,
routing of INVITEs), `incall` (the agent's SIP commands), `outbound` (INVITEs the
agent places), `accounts` (the pjsua2 accounts); `register` in `__init__` wires them.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

import httpx
import pjsua2 as pj

from voxray.logs import bind_call, get_logger
from voxray.protocol.errors import ProtocolError
from voxray.ua_node.node import UaNodeCore
from voxray.ua_node.sip import accounts
from voxray.ua_node.sip.config import SipSettings
from voxray.ua_node.sip.lifetime import destroy
from voxray.ua_node.sip.pjcall import SipAccount, SipCall
from voxray.ua_node.sip.routing import validate_rules
from voxray.ua_node.sip.rtp_filter import udp_sockets
from voxray.ua_node.sip.stack import PjStack
from voxray.ua_node.sip.transport import SipTransport
from voxray.ua_node.sip.trust import TrustedSources, registrar_host, resolve

log = get_logger("voxray.sip")

FINAL_HEADER = "X-Voxray-Final"  # on every final answer this node's code chose (ua_node/front/config.py)


def pj_message(exc: BaseException) -> str:
    info = getattr(exc, "info", None)
    if callable(info):
        try:
            return info()
        except Exception:
            pass
    return getattr(exc, "reason", None) or str(exc) or type(exc).__name__


def _unrouted(acc: SipAccount, prm) -> None:  # no inbound routing wired: pjsua2 answers 500
    pass


class SipEndpoint:
    def __init__(self, core: UaNodeCore, settings: SipSettings, loop: asyncio.AbstractEventLoop) -> None:
        validate_rules(settings.rules)
        self.core = core
        self.settings = settings
        self.stack = PjStack(settings, loop)
        self.http = httpx.AsyncClient()
        self.account: SipAccount | None = None  # pj thread
        self.live: dict[str, SipCall] = {}  # pj thread: calls (and their accounts) kept alive
        self.on_incoming: Callable[[SipAccount, object], None] = _unrouted  # pj thread (inbound.py)
        self._ticks = 0  # pj thread
        self._tasks: set[asyncio.Task] = set()
        self.trusted = TrustedSources(settings.trusted_sources)

    # -- life cycle ---------------------------------------------------------------------

    async def start(self) -> None:
        if self.settings.account and self.settings.trusted_sources:
            host = registrar_host(self.settings.account.registrar)
            # The registrar relays our inbound calls: it is trusted whatever the list says.
            registrar_ips = await asyncio.to_thread(resolve, host) if host else []
            self.trusted = TrustedSources(self.settings.trusted_sources, registrar_ips)
        self.stack.has_calls = lambda: bool(self.live)
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

    def spawn(self, coro) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def to_uri(self, target: str) -> str:
        """A SIP URI from what an agent wrote: a URI, user@host, or a user at the registrar's domain."""
        target = target.strip()
        if target.startswith(("sip:", "sips:")):
            return target
        if "@" in target:
            return f"sip:{target}"
        if self.settings.account:
            return f"sip:{target}@{self.settings.account.domain}"
        raise ProtocolError(f"'{target}' is not a SIP URI and no registrar domain is configured", 422)

    # -- work on the pj thread -------------------------------------------------------------

    async def job(self, fn):
        """fn on the pj thread; its failure as the ProtocolError the agent gets."""
        try:
            return await self.stack.call(fn)
        except ProtocolError:
            raise
        except asyncio.TimeoutError:
            raise ProtocolError("the SIP stack did not answer in time", 504) from None
        except Exception as exc:
            raise ProtocolError(f"sip: {pj_message(exc)}", 502) from None

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
                # Ours, not pjsua's own "486 Busy Here" of a process at its call limit: the
                # node's front passes this answer to the caller rather than trying another worker.
                for name, value in {FINAL_HEADER: "1", **(headers or {})}.items():
                    h = pj.SipHeader()
                    h.hName, h.hValue = name, value
                    prm.txOption.headers.append(h)
            pjcall.hangup(prm)
        try:
            await self.stack.call(job)
        except Exception as exc:
            with bind_call(t.call_id):
                log.warning("sip hangup failed", extra={"error": pj_message(exc)})

    async def reject(self, t: SipTransport, code: int, reason: str, initiator: str) -> None:
        """End an inbound call before its answer: a final response, and the call's hangup."""
        t.ended = True
        await self.hangup(t, code, reason)
        await self.core.end_call(t.call_id, "rejected", initiator)

    def _pj_create_account(self) -> None:
        self.account = accounts.node_account(self.stack, self.settings, self.host,
                                             lambda acc, prm: self.on_incoming(acc, prm))

    def _pj_shutdown(self) -> None:
        for call in list(self.live.values()):
            if not call.disconnected:
                try:
                    call.hangup(pj.CallOpParam())
                except pj.Error:
                    pass
        if self.stack.ep is not None:
            for _ in range(20):  # let the BYEs leave
                self.stack.ep.libHandleEvents(10)
        for call in list(self.live.values()):
            call.retire()
        self.live.clear()
        if self.account is not None:
            self.account.shutdown()  # un-REGISTERs
            destroy(self.account)
            self.account = None

    def _pj_tick(self) -> None:
        self._ticks += 1
        drops: dict[int, int] | None = None
        if self._ticks % 4 == 0 and any(c.guard.latched for c in self.live.values()):
            drops = {s.inode: s.drops for s in udp_sockets()}  # one /proc read a second for all calls
        now = time.monotonic()
        for key, call in list(self.live.items()):
            t = call.transport
            if call.disconnected:
                del self.live[key]
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
