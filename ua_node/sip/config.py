"""SIP transport settings (the `transports.sip` section of voxray's config)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field


class SipAccount(BaseModel):
    """Registration to a SIP registrar with digest auth; absent: listen for direct INVITEs."""

    registrar: str = Field(..., description="registrar URI, e.g. sip:127.0.0.1:5060")
    username: str
    domain: str = Field(..., description="domain of the address of record (sip:username@domain)")
    password: str | None = None
    realm: str = "*"
    reregister_s: int = Field(300, ge=30, description="registration expiry; pjsua re-registers before it")
    retry_s: int = Field(5, ge=1, description="retry interval after a failed registration")


class SipRule(BaseModel):
    """Inbound routing: caller/callee regexes (re.search) -> a webhook URL, or a rejection."""

    caller: str | None = None
    callee: str | None = None
    url: str | None = Field(None, description="agent webhook that gets {caller, callee, call_id, from_tag, to_tag}")
    reject: int | None = Field(None, ge=300, le=699, description="reject matching calls with this SIP code")


class SipSettings(BaseModel):
    enabled: bool = False
    bind: str = "127.0.0.1"
    port: int = Field(5060, ge=0, le=65535, description="UDP port for SIP; 0 picks a free one")
    public_address: str | None = Field(None, description="address written in Contact/SDP, default `bind`")
    rtp_port: int = Field(20000, ge=1024, le=65535, description="first RTP port")
    rtp_port_range: int = Field(1000, ge=2, description="number of RTP ports from rtp_port")
    rtp_source: Literal["latch", "sdp", "any"] = Field(
        "latch", description="which address a call's RTP is taken from (a kernel filter drops the rest): "
                             "latch = the first source after the answer (peers behind NAT), sdp = only the "
                             "address in the peer's SDP, any = pjmedia's default (follows a new source after "
                             "10 packets in a row, which lets a flooding third party take the call's media)")
    account: SipAccount | None = None
    user: str = Field("voxray", description="user part of the local address when not registering")
    trusted_sources: list[str] = Field(
        default_factory=list,
        description="networks (CIDR) allowed to send INVITEs, the registrar always included; empty = any")
    webhook_url: str | None = Field(None, description="POSTed for each inbound call no rule routes")
    webhook_timeout_s: float = 5.0
    rules: list[SipRule] = Field(default_factory=list)
    codecs: list[str] = Field(default_factory=lambda: ["G722/16000", "PCMU/8000", "PCMA/8000"],
                              description="codecs, in order of preference (pjsua2 ids); G722 first: "
                                          "wideband speech helps ASR")
    max_calls: int = Field(32, ge=1, description="concurrent SIP calls of the node; behind the front, spread "
                                                 "over max_calls / calls_per_worker worker processes")
    calls_per_worker: int = Field(4, ge=1, le=256, description="calls one pjsua2 process takes; the "
                                  "pjsua2-python wheel is built with a limit of 4 (PJSUA_MAX_CALLS)")
    worker_port: int | None = Field(None, ge=1024, le=65535, description="first SIP port of the workers behind "
                                    "the front (worker i: worker_port + i); default: free ports")
    free_port_fallback: bool = Field(False, description="if `port` is taken, listen on a free one instead "
                                     "(the workers behind the front: the UA node reads the port each got)")
    outbound_proxy: str | None = Field(None, description="route every request through this proxy (set for "
                                       "workers behind the front)")
    contact: str | None = Field(None, description="contact URI registered for the node (the front's address)")
    answer_timeout_s: float = Field(60.0, description="an inbound call the agent leaves unanswered is rejected (408)")
    session_timer_s: int = Field(1800, ge=90, description="SIP session timer (RFC 4028) interval")
    log_level: int = Field(1, ge=0, le=6, description="pjsip's own log level")
