"""Inbound INVITEs: who may call (trusted sources), whether the node takes the call now
(draining, admission), and where it goes (rules, then the agent's webhook).

A call that passes rings until the agent connects `/call/sip?id=<call id>` and answers
(`incall.py`), or until `answer_timeout_s` (408).
"""

from __future__ import annotations

import asyncio
import uuid
from datetime import datetime, timezone

import pjsua2 as pj

from voxray import metrics
from voxray.logs import bind_call, get_logger
from voxray.protocol import commands as cmd
from voxray.protocol import events as ev
from voxray.ua_node.node import NodeCall
from voxray.ua_node.sip.endpoint import SipEndpoint
from voxray.ua_node.sip.pjcall import SipAccount, SipCall, header_tag, plain_uri, sip_body, sip_header, sip_headers
from voxray.ua_node.sip.routing import Route, choose_route, notify
from voxray.ua_node.sip.transport import SipTransport

log = get_logger("voxray.sip")


class InboundCalls:
    def __init__(self, ep: SipEndpoint) -> None:
        self.ep = ep
        ep.on_incoming = self.pj_on_incoming

    def pj_on_incoming(self, acc: SipAccount, prm) -> None:  # pj thread
        ep = self.ep
        msg = prm.rdata.wholeMsg
        t = SipTransport(ep, uuid.uuid4().hex, inbound=True)
        call = SipCall(ep.stack, acc, t, prm.callId)
        t.bind_pj(call)
        ep.live[t.call_id] = call
        from_h, to_h = sip_header(msg, "from", "f") or "", sip_header(msg, "to", "t") or ""
        info = {
            "caller": plain_uri(from_h), "callee": plain_uri(to_h),
            "sip_call_id": sip_header(msg, "call-id", "i"), "from_tag": header_tag(from_h),
            "to_tag": None, "sdp": sip_body(msg), "source": prm.rdata.srcAddress,
            "headers": sip_headers(msg), "created_at": datetime.now(timezone.utc).isoformat(timespec="milliseconds"),
        }
        try:
            info["to_tag"] = header_tag(call.getInfo().localUri)
        except pj.Error:
            pass
        ep.stack.to_loop(self.on_incoming, t, info)

    def on_incoming(self, t: SipTransport, info: dict) -> None:
        ep, core = self.ep, self.ep.core
        if not ep.trusted.allows(info["source"] or ""):
            with bind_call(t.call_id):
                log.warning("INVITE from an untrusted source refused",
                            extra={"source": info["source"], "caller": info["caller"],
                                   "rejected_total": ep.trusted.rejected})
            metrics.inc("sip_rejected_total", reason="untrusted_source")
            t.ended = True
            ep.spawn(ep.hangup(t, 403, "Forbidden"))
            return
        why = core.refusal()
        if why is not None:  # draining, at capacity or overloaded: the caller may try again
            with bind_call(t.call_id):
                log.warning("INVITE refused", extra={"why": why.text, "caller": info["caller"]})
            metrics.inc("sip_rejected_total", reason="draining" if why.reason == "draining" else "overloaded")
            t.ended = True
            ep.spawn(ep.hangup(t, 503, "Service Unavailable", {"Retry-After": str(core.retry_after_s)}))
            return
        call = NodeCall(t.call_id, "sip", cmd.CallOption(caller=info["caller"], callee=info["callee"]))
        call.transport = t
        t.sip_info = info
        core.add_call(call)
        with bind_call(t.call_id):
            log.info("incoming sip call", extra={k: info[k] for k in ("caller", "callee", "sip_call_id", "source")})
        t.emit(ev.Incoming(caller=info["caller"], callee=info["callee"], sdp=info["sdp"]))
        ep.spawn(self.route(t, info, choose_route(ep.settings, info["caller"], info["callee"])))

    async def route(self, t: SipTransport, info: dict, route: Route) -> None:
        ep = self.ep
        with bind_call(t.call_id):
            if route.reject:
                log.info("inbound call rejected", extra={"code": route.reject, "why": route.reason})
                await ep.reject(t, route.reject, route.reason, "system")
                return
            payload = {"caller": info["caller"], "callee": info["callee"], "call_id": t.call_id,
                       "from_tag": info["from_tag"], "to_tag": info["to_tag"],
                       "sip_call_id": info["sip_call_id"],
                       # The same call as active-call's running code posts it (its webhook.rs).
                       "dialogId": t.call_id, "createdAt": info["created_at"], "event": "invite",
                       "headers": info["headers"], "offer": info["sdp"] or ""}
            if not await notify(ep.http, route.url, payload, ep.settings.webhook_timeout_s):
                await ep.reject(t, 480, "agent webhook failed", "system")
                return
            log.info("inbound call routed", extra={"url": route.url, "via": route.reason})
            await asyncio.sleep(ep.settings.answer_timeout_s)
            if not t.accepted and not t.ended:
                log.info("inbound call not answered in time")
                await ep.reject(t, 408, "not answered in time", "system")
