"""Ports and settings for the SIP tests, fixed when the test session starts.

The session's one voxray deployment (tests/conftest.py) carries this SIP config, so
tests/test_sip.py can drive SIP calls against it: the UA node listens for SIP on
`sip_port`, sends RTP from `rtp_base`.., POSTs inbound calls to a webhook on
`webhook_port` (or routes them by rule) and registers to kamailio on `kamailio_port`
(started by the SIP tests; until then registration just retries).
"""

from __future__ import annotations

import importlib.util
import random
import socket
from dataclasses import dataclass

from voxray.ua_node.sip.config import SipAccount, SipRule, SipSettings

REGISTRAR_USER = "voxray"
REGISTRAR_PASSWORD = "s3cret-voxray"


def free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def free_media_ports(lo: int = 40000, hi: int = 50000) -> int:
    """A port p where sipp can bind its audio (p) and video (p + 2) RTP sockets now.

    sipp exits at once ("Unable to bind ... RTP socket") when either is taken, so a random
    pick that another peer holds fails a test at random.
    """
    for _ in range(200):
        p = random.randrange(lo, hi, 4)
        socks = []
        try:
            for port in (p, p + 1, p + 2, p + 3):
                s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
                socks.append(s)
                s.bind(("127.0.0.1", port))
            return p
        except OSError:
            continue
        finally:
            for s in socks:
                s.close()
    raise RuntimeError("no free media port range for sipp")


def free_tcp_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass(frozen=True)
class SipTestEnv:
    sip_port: int
    rtp_base: int
    rtp_count: int
    webhook_port: int
    kamailio_port: int

    @classmethod
    def create(cls) -> "SipTestEnv":
        return cls(sip_port=free_udp_port(), rtp_base=random.randrange(30000, 39000, 2), rtp_count=200,
                   webhook_port=free_tcp_port(), kamailio_port=free_udp_port())

    @property
    def available(self) -> bool:
        return importlib.util.find_spec("pjsua2") is not None

    def settings(self) -> SipSettings:
        hook = f"http://127.0.0.1:{self.webhook_port}"
        return SipSettings(
            enabled=self.available, bind="127.0.0.1", port=self.sip_port,
            rtp_port=self.rtp_base, rtp_port_range=self.rtp_count,
            account=SipAccount(registrar=f"sip:127.0.0.1:{self.kamailio_port}", username=REGISTRAR_USER,
                               domain="127.0.0.1", password=REGISTRAR_PASSWORD, retry_s=2),
            webhook_url=f"{hook}/hook",
            rules=[SipRule(callee=r"^sip:busy", reject=486), SipRule(callee=r"^sip:rule-", url=f"{hook}/rule")],
            answer_timeout_s=30,
            trusted_sources=["127.0.0.1/32"],  # test_sip_fuzz sends from 127.0.0.2 to be refused
            max_calls=16,  # 4 SIP workers of 4 calls behind the node's kamailio front
        )


SIP_ENV = SipTestEnv.create()
