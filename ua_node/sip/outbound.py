"""Calls the agent places: `invite` on `/call/sip` with `option.callee` (and, optionally,
`option.sip` credentials and headers for this call)."""

from __future__ import annotations

import pjsua2 as pj

from voxray.logs import get_logger
from voxray.protocol import commands as cmd
from voxray.protocol.errors import ProtocolError
from voxray.ua_node.sip import accounts
from voxray.ua_node.sip.endpoint import SipEndpoint
from voxray.ua_node.sip.pjcall import SipCall
from voxray.ua_node.sip.transport import SipTransport

log = get_logger("voxray.sip")


class OutboundCalls:
    def __init__(self, ep: SipEndpoint) -> None:
        self.ep = ep

    async def open_outbound(self, call_id: str, option: cmd.CallOption) -> tuple[SipTransport, None]:
        ep = self.ep
        if not option.callee:
            raise ProtocolError("a SIP invite needs option.callee (a SIP URI, or a user at the registrar)", 422)
        dest = ep.to_uri(option.callee)
        sip = option.sip
        if sip and (sip.username is None) != (sip.password is None):
            raise ProtocolError("option.sip needs both username and password", 422)
        caller_uri = ep.to_uri(option.caller) if option.caller and sip and sip.username else None
        t = SipTransport(ep, call_id, inbound=False)  # its session records (option.recorder)

        def make_call() -> None:  # pj thread
            acc = ep.account
            ephemeral = None
            if sip and sip.username:
                acc = ephemeral = accounts.call_account(ep.stack, ep.settings, ep.host, caller_uri, option,
                                                        lambda a, prm: ep.on_incoming(a, prm))
            call = SipCall(ep.stack, acc, t)
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
            ep.live[call_id] = call
        await ep.job(make_call)
        log.info("sip invite sent", extra={"to": dest})
        return t, None
