"""One call's RTP source policy: which address its RTP and RTCP sockets accept.

Policies (`transports.sip.rtp_source`):
- "latch": accept the first source RTP arrives from after the answer (symmetric
  RTP: works for peers behind NAT whose SDP carries a private address), then that
  source only. A new remote address in a re-INVITE's SDP re-opens the latch.
- "sdp": accept only the address and port in the peer's SDP; the strictest.
- "any": pjmedia's own behaviour (switches to a new source after 10 packets in a row).

`RtpGuard` decides; the socket work goes through `rtp_filter`. Everything here
runs on the pj thread.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from voxray.ua_node.sip import rtp_filter
from voxray.ua_node.sip.rtp_filter import Source

Policy = Literal["latch", "sdp", "any"]
HostPort = tuple[str, int]


def wanted_sources(policy: Policy, sdp_rtp: HostPort | None, sdp_rtcp: HostPort | None,
                   seen_rtp: HostPort | None) -> tuple[Source, Source] | None:
    """(RTP source, RTCP source) to enforce; None: nothing to enforce (yet)."""
    if policy == "sdp" and sdp_rtp is not None:
        rtcp = sdp_rtcp or (sdp_rtp[0], sdp_rtp[1] + 1)
        return Source(*sdp_rtp), Source(*rtcp)
    if policy == "latch" and seen_rtp is not None:
        # RTCP from the latched host on any port: NATs map the RTCP port on their own.
        return Source(*seen_rtp), Source(seen_rtp[0], None)
    return None


@dataclass
class _Sock:
    fd: int
    inode: int
    baseline: int  # the drop counter when our filter went on


@dataclass
class RtpGuard:
    policy: Policy
    report_every_s: float = 5.0
    rtp: Source | None = None  # enforced now
    sdp_rtp: HostPort | None = None
    _socks: dict[int, _Sock] = field(default_factory=dict)  # local port -> socket
    _reported: int = 0  # drops already reported, counted from the filters' baselines
    _last_report: float = float("-inf")

    @property
    def latched(self) -> bool:
        return self.rtp is not None

    def update(self, local_rtp: int | None, local_rtcp: int | None, sdp_rtp: HostPort | None,
               sdp_rtcp: HostPort | None, seen_rtp: HostPort | None) -> Source | None:
        """Apply the policy to the call's sockets; the RTP source newly enforced, if any."""
        if self.policy == "any" or local_rtp is None:
            return None
        if sdp_rtp is not None and sdp_rtp != self.sdp_rtp:
            if self.sdp_rtp is not None and self.policy == "latch":
                self._detach()  # the peer moved its media: learn again
                seen_rtp = None  # the last packet seen may still be the old address's
            self.sdp_rtp = sdp_rtp
        if self.policy == "latch" and self.rtp is not None and local_rtp in self._socks:
            return None  # latched: only a new SDP address re-opens it
        want = wanted_sources(self.policy, self.sdp_rtp, sdp_rtcp, seen_rtp)
        if want is None or (want[0] == self.rtp and local_rtp in self._socks):
            return None
        rtp_src, rtcp_src = want
        sockets = rtp_filter.udp_sockets()
        fds = rtp_filter.socket_fds()
        ports = [(local_rtp, rtp_src)]
        if local_rtcp and local_rtcp != local_rtp:
            ports.append((local_rtcp, rtcp_src))
        try:
            for port, src in ports:
                found = rtp_filter.find_socket(port, sockets, fds)
                if found is None:
                    raise OSError(f"no socket bound to media port {port}")
                fd, inode = found
                rtp_filter.attach(fd, rtp_filter.build_program(src))
                drops = next((s.drops for s in sockets if s.inode == inode), 0)
                self._socks[port] = _Sock(fd, inode, drops)
        except OSError:
            self._detach()  # all or nothing: no half-filtered call
            raise
        self.rtp = rtp_src
        self._reported = 0  # new baselines
        return rtp_src

    def _detach(self) -> None:
        for s in self._socks.values():
            try:
                rtp_filter.attach(s.fd, None)
            except OSError:
                pass
        self._socks.clear()
        self.rtp = None

    def dropped(self, drops_by_inode: dict[int, int], now: float) -> int | None:
        """Packets the filter dropped since the last report, when a report is due."""
        total = sum(max(0, drops_by_inode.get(s.inode, s.baseline) - s.baseline) for s in self._socks.values())
        pending = total - self._reported
        if pending <= 0 or now - self._last_report < self.report_every_s:
            return None
        self._reported, self._last_report = total, now
        return pending
