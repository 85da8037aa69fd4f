"""pjsua's transport addresses ("1.2.3.4:5000", "[::1]:5000") as (host, port). Pure logic."""

from __future__ import annotations

import ipaddress


def host_port(name: str) -> tuple[str, int] | None:
    """(host, port) of an IP address and port as pjsua writes them; None for anything else
    (empty, a bare address without a port, a host name)."""
    if name.startswith("["):
        host, sep, port = name[1:].partition("]:")
        if not sep:
            return None
    elif name.count(":") == 1:
        host, _, port = name.partition(":")
    else:
        return None
    try:
        ipaddress.ip_address(host)
        p = int(port)
    except ValueError:
        return None
    return (host, p) if 0 <= p < 65536 else None


def peer_address(name: str) -> tuple[str, int] | None:
    """A remote media address media can come from: not a wildcard host, not port 0."""
    hp = host_port(name)
    if hp is None or hp[0] in ("0.0.0.0", "::") or hp[1] == 0:
        return None
    return hp
