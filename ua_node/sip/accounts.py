"""pjsua2 accounts of a UA node (pj thread only): the node's own, and per-call ones.

The node's account registers at the configured registrar with digest auth (or, with no
registrar, only names the node for direct INVITEs); an outbound call with its own
credentials gets an unregistered account of its own. Every account gives its calls the
node's RTP settings.
"""

from __future__ import annotations

from collections.abc import Callable

import pjsua2 as pj

from voxray.protocol import commands as cmd
from voxray.ua_node.sip.config import SipSettings
from voxray.ua_node.sip.pjcall import SipAccount
from voxray.ua_node.sip.stack import PjStack

OnIncoming = Callable[[SipAccount, object], None]  # (account, OnIncomingCallParam), pj thread


def media_config(cfg: pj.AccountConfig, s: SipSettings) -> None:
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


def front_config(cfg: pj.AccountConfig, s: SipSettings) -> None:
    """Behind the node's SIP front: every request leaves through it (outbound calls, in-dialog
    requests before a route set exists), and the node registers the front's address."""
    if s.outbound_proxy:
        cfg.sipConfig.proxies.append(s.outbound_proxy)
    if s.contact and s.account:
        host = s.contact.split(":", 1)[1]
        cfg.sipConfig.contactForced = f"<sip:{s.account.username}@{host}>"


def node_account(stack: PjStack, s: SipSettings, host: str, on_incoming: OnIncoming) -> SipAccount:
    """The node's own account: registered when a registrar is configured."""
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
        cfg.idUri = f"sip:{s.user}@{host}:{stack.port}"
    media_config(cfg, s)
    front_config(cfg, s)
    acc = SipAccount(stack, on_incoming)
    acc.create(cfg, True)
    return acc


def call_account(stack: PjStack, s: SipSettings, domain_host: str, caller_uri: str | None,
                 option: cmd.CallOption, on_incoming: OnIncoming) -> SipAccount:
    """An unregistered account carrying one outbound call's digest credentials."""
    sip = option.sip
    cfg = pj.AccountConfig()
    domain = sip.realm or (s.account.domain if s.account else domain_host)
    cfg.idUri = caller_uri if caller_uri else f"sip:{sip.username}@{domain}"
    cfg.sipConfig.authCreds.append(pj.AuthCredInfo("digest", sip.realm or "*", sip.username, 0, sip.password))
    media_config(cfg, s)
    front_config(cfg, s)
    acc = SipAccount(stack, on_incoming)
    acc.create(cfg, False)
    return acc
