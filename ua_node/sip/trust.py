"""Which addresses may send us INVITEs: configured networks plus the registrar. Pure logic."""

from __future__ import annotations

import ipaddress
import socket
from urllib.parse import urlparse

from voxray.ua_node.sip.addr import host_port


def registrar_host(registrar: str) -> str | None:
    """'sip:pbx.example:5060;transport=udp' -> 'pbx.example'."""
    rest = registrar.split(":", 1)[1] if registrar.lower().startswith(("sip:", "sips:")) else registrar
    return urlparse("//" + rest.split(";", 1)[0]).hostname


def resolve(host: str) -> list[str]:
    """Blocking DNS: call off the event loop."""
    try:
        return sorted({info[4][0] for info in socket.getaddrinfo(host, None)})
    except socket.gaierror:
        return []


class TrustedSources:
    """Open when nothing is configured (direct INVITEs in development); else an allow-list."""

    def __init__(self, networks: list[str], extra_hosts: list[str] = ()) -> None:
        self.networks = [ipaddress.ip_network(n, strict=False) for n in networks]
        self.networks += [ipaddress.ip_network(h) for h in extra_hosts]
        self.enabled = bool(networks)
        self.rejected = 0

    def allows(self, source: str) -> bool:
        """`source` as pjsip gives it: 'ip:port' or '[v6]:port'."""
        if not self.enabled:
            return True
        hp = host_port(source)
        host = hp[0] if hp else source  # a bare address is taken as it is
        try:
            ip = ipaddress.ip_address(host)
        except ValueError:
            self.rejected += 1
            return False
        if any(ip in n for n in self.networks):
            return True
        self.rejected += 1
        return False
