"""The RTP source filter on real kernel sockets: what passes, what is dropped and counted."""

from __future__ import annotations

import socket

import pytest
from voxray.ua_node.sip import rtp_filter as rf
from voxray.ua_node.sip.addr import peer_address
from voxray.ua_node.sip.rtp_guard import RtpGuard, wanted_sources


def _udp(host: str = "127.0.0.1") -> socket.socket:
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind((host, 0))
    return s


def _received(rx: socket.socket) -> list[tuple[str, int]]:
    rx.settimeout(0.3)
    out = []
    try:
        while True:
            out.append(rx.recvfrom(2048)[1])
    except TimeoutError:
        return out


def _drops(sock: socket.socket) -> int:
    found = rf.find_socket(sock.getsockname()[1])
    assert found is not None
    return next(s.drops for s in rf.udp_sockets() if s.inode == found[1])


@pytest.fixture
def socks():
    made: list[socket.socket] = []

    def make(host: str = "127.0.0.1") -> socket.socket:
        made.append(_udp(host))
        return made[-1]
    yield make
    for s in made:
        s.close()


def test_filter_accepts_one_source_and_counts_the_rest(socks):
    rx, good, other_port, other_host = socks(), socks(), socks(), socks("127.0.0.2")
    port = rx.getsockname()[1]
    fd, _ = rf.find_socket(port)
    rf.attach(fd, rf.build_program(rf.Source(*good.getsockname())))
    base = _drops(rx)
    for s in (good, other_port, other_host, good):
        s.sendto(b"\x80" * 172, ("127.0.0.1", port))
    assert _received(rx) == [good.getsockname()] * 2
    assert _drops(rx) - base == 2
    # Any port of one host (the RTCP rule of the latch policy).
    rf.attach(fd, rf.build_program(rf.Source("127.0.0.1", None)))
    for s in (good, other_port, other_host):
        s.sendto(b"\x80" * 20, ("127.0.0.1", port))
    assert sorted(_received(rx)) == sorted([good.getsockname(), other_port.getsockname()])
    rf.attach(fd, None)  # detached: everything passes again
    for s in (good, other_port, other_host):
        s.sendto(b"\x80" * 20, ("127.0.0.1", port))
    assert len(_received(rx)) == 3


def test_ipv6_program_matches_the_ipv6_source():
    if not socket.has_ipv6:
        pytest.skip("no IPv6")
    try:
        rx = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
        rx.bind(("::1", 0))
    except OSError:
        pytest.skip("no IPv6 loopback here")
    tx4, tx6 = _udp(), socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
    try:
        tx6.bind(("::1", 0))
        port = rx.getsockname()[1]
        fd, _ = rf.find_socket(port)
        rf.attach(fd, rf.build_program(rf.Source("::1", tx6.getsockname()[1])))
        tx6.sendto(b"x" * 20, ("::1", port))
        rx.settimeout(0.5)
        assert rx.recvfrom(100)[1][1] == tx6.getsockname()[1]
        other = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
        other.bind(("::1", 0))
        other.sendto(b"x" * 20, ("::1", port))
        assert _received(rx) == []
        other.close()
    finally:
        rx.close(), tx4.close(), tx6.close()


def test_wanted_sources_per_policy():
    sdp, seen = ("10.0.0.5", 4000), ("203.0.113.9", 61000)
    assert wanted_sources("any", sdp, None, seen) is None
    assert wanted_sources("sdp", sdp, None, seen) == (rf.Source("10.0.0.5", 4000), rf.Source("10.0.0.5", 4001))
    assert wanted_sources("sdp", sdp, ("10.0.0.5", 5000), None)[1] == rf.Source("10.0.0.5", 5000)
    assert wanted_sources("latch", sdp, None, None) is None  # nothing arrived yet
    assert wanted_sources("latch", sdp, None, seen) == (rf.Source(*seen), rf.Source("203.0.113.9", None))


def test_latch_guard_locks_to_the_first_source_and_relearns_on_a_new_sdp(socks):
    rtp, rtcp, peer, intruder = socks(), socks(), socks(), socks()
    lr, lc = rtp.getsockname()[1], rtcp.getsockname()[1]
    g = RtpGuard("latch", report_every_s=0)
    sdp = ("127.0.0.1", 40000)
    assert g.update(lr, lc, sdp, None, None) is None and not g.latched  # no RTP yet: open
    intruder.sendto(b"x" * 20, ("127.0.0.1", lr))
    assert len(_received(rtp)) == 1
    src = g.update(lr, lc, sdp, None, peer.getsockname())
    assert src == rf.Source(*peer.getsockname()) and g.latched
    assert g.update(lr, lc, sdp, None, intruder.getsockname()) is None  # latched: stays
    for _ in range(3):
        intruder.sendto(b"x" * 20, ("127.0.0.1", lr))
    peer.sendto(b"x" * 20, ("127.0.0.1", lr))
    assert _received(rtp) == [peer.getsockname()]
    drops = {s.inode: s.drops for s in rf.udp_sockets()}
    assert g.dropped(drops, now=1.0) == 3
    assert g.dropped(drops, now=2.0) is None  # reported once
    # A re-INVITE moving the peer's media re-opens the latch.
    assert g.update(lr, lc, ("127.0.0.1", 40010), None, peer.getsockname()) is None and not g.latched
    intruder.sendto(b"x" * 20, ("127.0.0.1", lr))
    assert len(_received(rtp)) == 1


def test_sdp_guard_enforces_the_sdp_address_and_rate_limits_reports(socks):
    rtp, peer, intruder = socks(), socks(), socks()
    lr = rtp.getsockname()[1]
    g = RtpGuard("sdp", report_every_s=10)
    assert g.update(lr, None, peer.getsockname(), None, None) == rf.Source(*peer.getsockname())
    intruder.sendto(b"x" * 20, ("127.0.0.1", lr))
    peer.sendto(b"x" * 20, ("127.0.0.1", lr))
    assert _received(rtp) == [peer.getsockname()]
    drops = lambda: {s.inode: s.drops for s in rf.udp_sockets()}
    assert g.dropped(drops(), now=100.0) == 1
    intruder.sendto(b"x" * 20, ("127.0.0.1", lr))
    _received(rtp)
    assert g.dropped(drops(), now=105.0) is None  # within report_every_s: held back
    assert g.dropped(drops(), now=111.0) == 1


def test_guard_reports_a_missing_socket_and_leaves_no_half_filter(socks):
    g = RtpGuard("sdp")
    with pytest.raises(OSError):
        g.update(1, None, ("127.0.0.1", 4000), None, None)  # nothing of ours on port 1
    rtp, other = socks(), socks()
    lr = rtp.getsockname()[1]
    with pytest.raises(OSError):  # the RTP socket is ours, the RTCP port is not
        g.update(lr, 1, ("127.0.0.1", 4000), None, None)
    assert not g.latched
    other.sendto(b"x" * 20, ("127.0.0.1", lr))
    assert _received(rtp) == [other.getsockname()]  # the RTP filter was taken off again


def test_proc_parsing_and_addresses():
    text = ("  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode ref pointer drops\n"
            "  1: 0100007F:7530 00000000:0000 07 00000000:00000000 00:00000000 00000000  1000        0 99 2 0000000000000000 7\n"
            "garbage line\n")
    assert rf.parse_proc_udp(text) == [rf.UdpSocket(local_port=30000, inode=99, drops=7)]
    assert peer_address("127.0.0.1:4000") == ("127.0.0.1", 4000)
    assert peer_address("[::1]:4000") == ("::1", 4000)
    for bad in ("", "0.0.0.0:4000", "127.0.0.1:0", "host:4000", "127.0.0.1"):
        assert peer_address(bad) is None, bad
