"""SIP/RTP for the UA node, on pjsua2 (SIP, SDP, RTP, codecs, jitter buffer).

`register(core, config)` starts the SIP stack when `transports.sip.enabled` is set,
and gives the node a "sip" transport (outbound INVITEs) and the SIP commands
(accept, reject, ringing, refer). Modules: `config` (settings), `stack` (the pj
thread), `pjcall` (pjsua2 Account/Call), `lifetime` (when their C++ halves die),
`media_port` (bridge <-> MediaTransport), `transport` (the call's asyncio half),
`endpoint` (stack, account, live calls), `accounts`, `inbound` (trust, admission,
routing), `routing` (webhook and rules), `incall` (the agent's SIP commands),
`outbound`; `trust`, `rtp_filter`/`rtp_guard` (RTP source policy), `addr`.
"""

from __future__ import annotations

from voxray.logs import get_logger
from voxray.ua_node.sip.config import SipSettings

log = get_logger("voxray.sip")

_endpoint = None  # pjsua is one per process


async def register(core, config: dict | None) -> None:
    global _endpoint
    settings = SipSettings.model_validate(config or {})
    if not settings.enabled or "sip" in core.transports:
        return
    if _endpoint is not None:  # started (or failed) once already: pjsua is one per process
        return
    try:
        import pjsua2  # noqa: F401
    except ImportError:
        log.warning("sip is enabled but pjsua2 is not installed (pip install pjsua2-python)")
        return
    import asyncio

    from voxray.ua_node.sip.endpoint import SipEndpoint
    from voxray.ua_node.sip.incall import InCallCommands
    from voxray.ua_node.sip.inbound import InboundCalls
    from voxray.ua_node.sip.outbound import OutboundCalls

    endpoint = SipEndpoint(core, settings, asyncio.get_running_loop())
    # The concerns around the endpoint, kept on it for tests and the bench to reach.
    endpoint.inbound = InboundCalls(endpoint)  # before start: the account takes INVITEs at once
    endpoint.incall = InCallCommands(endpoint)
    endpoint.outbound = OutboundCalls(endpoint)
    _endpoint = endpoint
    try:
        await endpoint.start()
    except Exception as exc:
        log.error("sip stack failed to start", extra={"error": repr(exc)})
        return
    core.register_transport("sip", endpoint.outbound.open_outbound)
    core.register_command_handler("sip", endpoint.incall.handle_command)
    core.add_shutdown_hook(endpoint.close)


def listening_port() -> int | None:
    """The UDP port this process's SIP stack listens on (None: not up)."""
    return _endpoint.stack.port if _endpoint is not None else None


def media_stats() -> dict:
    """Frames this process's live SIP calls moved so far (bench/sip_media.py reads them)."""
    if _endpoint is None:
        return {"calls": 0, "pj_calls": 0, "frames_in": 0, "frames_out": 0}
    for _ in range(5):  # the pj thread may change the dict while we read it
        try:
            ports = [c.port for c in list(_endpoint.live.values()) if c.port is not None]
            break
        except RuntimeError:
            continue
    else:
        ports = []
    # pj_calls: every call pjsua2 still holds (ringing, or ending and not yet destroyed): each
    # takes one of the process's PJSUA_MAX_CALLS slots.
    return {"calls": len(ports), "pj_calls": len(_endpoint.live), "frames_in": sum(p.frames_in for p in ports),
            "frames_out": sum(p.frames_out for p in ports)}
