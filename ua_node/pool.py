"""The UA worker pool's decisions, free of Ray and I/O: which workers a node runs, with
which SIP port and RTP range, and which worker takes a new call."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from voxray.ua_node.config import PoolSettings
from voxray.ua_node.sip.config import SipSettings

SIP, WEBRTC = "sip", "webrtc"


@dataclass(frozen=True)
class WorkerSpec:
    role: str  # SIP or WEBRTC
    index: int
    sip: dict | None = None  # the worker's own transports.sip (port, RTP range, calls, registration)

    @property
    def key(self) -> str:
        return f"{self.role}{self.index}"


@dataclass
class WorkerState:
    """What the node last heard from a worker (its `ready` answer) and how it is doing."""

    spec: WorkerSpec
    up: bool = False
    calls: int = 0
    draining: bool = False
    pid: int | None = None
    sip_port: int | None = None
    missed: int = 0  # health pings in a row without an answer
    restarts: int = 0
    info: dict = field(default_factory=dict)

    def heard(self, info: dict) -> bool:
        """Record a ready/health answer; True if the worker is a new process (it restarted)."""
        restarted = self.pid is not None and info.get("pid") != self.pid
        if restarted:
            self.restarts += 1
        self.up, self.missed, self.info = True, 0, info
        self.pid = info.get("pid")
        self.calls = int(info.get("calls", 0))
        self.draining = bool(info.get("draining", False))
        self.sip_port = info.get("sip_port")
        return restarted

    def missed_ping(self) -> int:
        self.missed += 1
        self.up = False
        return self.missed


def sip_worker_count(pool: PoolSettings, sip: SipSettings) -> int:
    if not sip.enabled:
        return 0
    if pool.sip_workers is not None:
        return pool.sip_workers
    return max(1, math.ceil(sip.max_calls / sip.calls_per_worker))


def webrtc_worker_count(pool: PoolSettings, cpus: int) -> int:
    if pool.webrtc_workers is not None:
        return pool.webrtc_workers
    return max(1, min(4, cpus))


def use_front(pool: PoolSettings, sip_workers: int, kamailio_found: bool) -> bool:
    kind = pool.front.kind
    if kind == "none" or sip_workers == 0:
        return False
    if kind == "kamailio":
        if not kamailio_found:
            raise RuntimeError("transports.pool.front.kind is 'kamailio' but kamailio is not installed")
        return True
    return kamailio_found and sip_workers > 1


def plan(pool: PoolSettings, sip: SipSettings, cpus: int, front: bool,
         free_port: Callable[[], int]) -> list[WorkerSpec]:
    """The node's workers. Behind a front each SIP worker gets a port of its own (from
    `sip.worker_port`, or a free one), a slice of the RTP range and `calls_per_worker`
    calls; the front's address is their outbound proxy and, when the node registers, the
    contact that one worker registers for the whole node. Without a front, one SIP worker
    is the node's SIP address, as configured."""
    specs: list[WorkerSpec] = []
    n_sip = sip_worker_count(pool, sip) if front else min(1, sip_worker_count(pool, sip))
    if n_sip:
        rtp_slice = sip.rtp_port_range // n_sip
        if rtp_slice < 4 * sip.calls_per_worker:
            raise ValueError(f"transports.sip.rtp_port_range ({sip.rtp_port_range}) is too small for {n_sip} "
                             f"workers of {sip.calls_per_worker} calls (4 ports per call)")
    for i in range(n_sip):
        if not front:
            specs.append(WorkerSpec(SIP, i, sip.model_dump()))
            break
        front_uri = f"sip:{sip.public_address or sip.bind}:{sip.port}"
        own = sip.model_copy(update={
            # A port of its own that a restarted worker takes again, so that the front knows
            # its requests (a REGISTER from an unknown port is refused) from the first one.
            "port": (sip.worker_port + i) if sip.worker_port else free_port(),
            "free_port_fallback": not sip.worker_port,
            "rtp_port": sip.rtp_port + i * rtp_slice,
            "rtp_port_range": rtp_slice,
            "max_calls": sip.calls_per_worker,
            # Calls reach a worker only through the front, which checks the sources itself.
            "trusted_sources": [f"{sip.bind}/32"],
            "outbound_proxy": f"{front_uri};lr",
            # One registration for the node, pointing the registrar at the front.
            "account": sip.account if i == 0 else None,
            "contact": front_uri if i == 0 and sip.account else None,
        })
        specs.append(WorkerSpec(SIP, i, own.model_dump()))
    specs += [WorkerSpec(WEBRTC, i) for i in range(webrtc_worker_count(pool, cpus))]
    return specs


def choose(states: Iterable[WorkerState], role: str, per_worker: int | None = None) -> WorkerState | None:
    """The least-loaded live worker of `role` that is not draining (and not full)."""
    live = [s for s in states if s.spec.role == role and s.up and not s.draining
            and (per_worker is None or s.calls < per_worker)]
    return min(live, key=lambda s: (s.calls, s.spec.index), default=None)
