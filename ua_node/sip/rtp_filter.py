"""Kernel-side RTP source filtering for pjmedia's sockets (Linux classic BPF).

pjmedia accepts RTP from any address and, after PJMEDIA_RTP_NAT_PROBATION_CNT (10)
packets in a row from a new one, switches the call's remote address to it: a
flooding third party can inject audio into a call and receive the call's audio
("RTP bleed"). The pjsua2 API has no setting for this and the socket is pjmedia's,
so the filter is attached to that socket from outside: find it by its local port
in /proc/net/udp, dup its descriptor from /proc/self/fd and SO_ATTACH_FILTER a
program that accepts one source address (and port) only. Dropped packets never
reach pjmedia; the socket's `drops` counter in /proc/net/udp counts them.

Pure parts (program building, /proc parsing) are free of I/O so the tests can
check them directly.
"""

from __future__ import annotations

import ctypes
import ipaddress
import os
import socket
import struct
from dataclasses import dataclass

SO_ATTACH_FILTER = 26
SO_DETACH_FILTER = 27
SKF_NET_OFF = -0x100000  # loads relative to the network (IP) header
SKF_AD_PROTOCOL = -0x1000  # SKF_AD_OFF + 0: skb->protocol (ethertype)
ETH_P_IP, ETH_P_IPV6 = 0x0800, 0x86DD

# Classic BPF opcodes used here.
_LD_W_ABS = 0x20
_LD_H_ABS = 0x28
_JEQ_K = 0x15
_RET_K = 0x06
_ACCEPT = 0xFFFF
_DROP = 0


def _u32(n: int) -> int:
    return n & 0xFFFFFFFF


@dataclass(frozen=True)
class Source:
    """The one address RTP (or RTCP) is accepted from; port None accepts any port."""

    host: str
    port: int | None = None

    def __str__(self) -> str:
        return f"{self.host}:{self.port if self.port is not None else '*'}"


def build_program(src: Source) -> list[tuple[int, int, int, int]]:
    """A socket filter accepting datagrams from `src` only: (code, jt, jf, k) instructions.

    At a UDP socket's filter the packet data starts at the UDP header (offset 0 is the
    source port) and the IP header is reachable through SKF_NET_OFF.
    """
    ip = ipaddress.ip_address(src.host)
    if ip.version == 4:
        proto, words, base = ETH_P_IP, [int(ip)], 12  # IPv4 source address at +12
    else:
        raw = ip.packed
        proto, words, base = ETH_P_IPV6, list(struct.unpack("!4I", raw)), 8  # IPv6 source at +8
    body: list[tuple[int, int | None, int]] = [(_LD_W_ABS, None, _u32(SKF_AD_PROTOCOL)),
                                                (_JEQ_K, -1, proto)]
    for i, w in enumerate(words):
        body += [(_LD_W_ABS, None, _u32(SKF_NET_OFF + base + 4 * i)), (_JEQ_K, -1, w)]
    if src.port is not None:
        body += [(_LD_H_ABS, None, 0), (_JEQ_K, -1, src.port)]
    prog: list[tuple[int, int, int, int]] = []
    n = len(body)
    for i, (code, jf, k) in enumerate(body):
        if jf is None:
            prog.append((code, 0, 0, k))
        else:  # on mismatch jump to the final `ret drop` (after the `ret accept`)
            prog.append((code, 0, n - i, k))
    prog += [(_RET_K, 0, 0, _ACCEPT), (_RET_K, 0, 0, _DROP)]
    return prog


class _SockFilter(ctypes.Structure):
    _fields_ = [("code", ctypes.c_uint16), ("jt", ctypes.c_uint8), ("jf", ctypes.c_uint8), ("k", ctypes.c_uint32)]


class _SockFprog(ctypes.Structure):
    _fields_ = [("len", ctypes.c_uint16), ("filter", ctypes.POINTER(_SockFilter))]


def attach(fd: int, prog: list[tuple[int, int, int, int]] | None) -> None:
    """Attach prog to the socket behind fd (None: detach). The filter belongs to the
    socket, so it stays when the dup'd descriptor used to set it is closed."""
    dup = os.dup(fd)
    try:
        sock = socket.socket(fileno=dup)
    except OSError:
        os.close(dup)
        raise
    try:
        if prog is None:
            try:
                sock.setsockopt(socket.SOL_SOCKET, SO_DETACH_FILTER, 0)
            except OSError:  # ENOENT: nothing attached
                pass
            return
        insns = (_SockFilter * len(prog))(*[_SockFilter(*i) for i in prog])
        fprog = _SockFprog(len(prog), insns)
        # The kernel copies the program from the pointer during the call; insns lives until then.
        sock.setsockopt(socket.SOL_SOCKET, SO_ATTACH_FILTER, bytes(fprog))
    finally:
        sock.close()


# -- /proc -----------------------------------------------------------------------------------

@dataclass(frozen=True)
class UdpSocket:
    local_port: int
    inode: int
    drops: int


def parse_proc_udp(text: str) -> list[UdpSocket]:
    """Rows of /proc/net/udp or udp6: local port, inode and the socket's drop counter."""
    out: list[UdpSocket] = []
    for line in text.splitlines()[1:]:
        f = line.split()
        if len(f) < 13:
            continue
        try:
            out.append(UdpSocket(local_port=int(f[1].rsplit(":", 1)[1], 16), inode=int(f[9]), drops=int(f[-1])))
        except (ValueError, IndexError):
            continue
    return out


def udp_sockets() -> list[UdpSocket]:
    """This network namespace's UDP sockets (IPv4 and IPv6)."""
    out: list[UdpSocket] = []
    for name in ("/proc/net/udp", "/proc/net/udp6"):
        try:
            with open(name) as fh:
                out += parse_proc_udp(fh.read())
        except OSError:
            continue
    return out


def socket_fds() -> dict[int, int]:
    """inode -> descriptor, for this process's sockets."""
    out: dict[int, int] = {}
    for name in os.listdir("/proc/self/fd"):
        try:
            target = os.readlink(f"/proc/self/fd/{name}")
        except OSError:
            continue
        if target.startswith("socket:["):
            out[int(target[8:-1])] = int(name)
    return out


def find_socket(local_port: int, sockets: list[UdpSocket] | None = None,
                fds: dict[int, int] | None = None) -> tuple[int, int] | None:
    """(fd, inode) of this process's UDP socket bound to local_port, if any."""
    sockets = udp_sockets() if sockets is None else sockets
    fds = socket_fds() if fds is None else fds
    for s in sockets:
        if s.local_port == local_port and s.inode in fds:
            return fds[s.inode], s.inode
    return None
