"""Settings of a node's UA worker pool and of the SIP front before it (`transports.pool`)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field


class FrontSettings(BaseModel):
    """Kamailio as the node's one SIP address, spreading INVITEs over the SIP workers."""

    kind: Literal["auto", "kamailio", "none"] = Field(
        "auto", description="auto: kamailio when it is installed and the node has more than one SIP worker; "
                            "none: one SIP worker listens on transports.sip.port itself (development)")
    binary: str = "kamailio"
    ping_interval_s: int = Field(1, ge=1, description="OPTIONS health pings to each worker")
    # One late answer is a busy moment, not a dead worker: taken out at the first miss, a worker's
    # slots vanished while 16 calls rang at once on 2 cores (CI), and 4 callers got 503. A dead
    # one is restarted by the node anyway, and INVITEs it does not answer fail over per call.
    ping_failures: int = Field(3, ge=1, le=10, description="failed pings in a row that take a worker out "
                                                          "of the front's set until it answers again")
    children: int = Field(2, ge=1, le=32, description="kamailio UDP worker processes")
    # pike: a source sending more than this many requests per unit is ignored for a while.
    flood_requests: int = Field(64, ge=4)
    flood_unit_s: int = Field(2, ge=1)
    shm_mb: int = Field(64, ge=16)


class PoolSettings(BaseModel):
    """How many worker processes a UA node runs, by role. pjsua2 and aiortc never share a
    process (a crash in one would take the other's calls, and they crashed together)."""

    sip_workers: int | None = Field(
        None, ge=1, le=64, description="SIP worker processes; default: transports.sip.max_calls / calls_per_worker")
    webrtc_workers: int | None = Field(
        None, ge=0, le=32, description="WebRTC worker processes; default: the node's CPUs (at most 4)")
    health_interval_s: float = Field(2.0, gt=0, description="how often the node pings each worker")
    health_timeout_s: float = Field(5.0, gt=0, description="a worker that does not answer in time is restarted "
                                                         "after three missed pings")
    front: FrontSettings = Field(default_factory=FrontSettings)
