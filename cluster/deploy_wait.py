"""When a deploy may return: the pure decision, fed what Serve and Ray report.

A cluster comes up node by node (`ray up` starts workers only after the head, and they
take minutes to install), so a replica minimum can need nodes that are not there yet:
two ingress replicas at most one per node, with one node up. Serve keeps such a replica
pending and places it when a node joins. The deploy therefore returns once every
deployment serves from at least one replica and each missing replica is one Ray cannot
place yet; it never waits on an absent node, and never longer than its timeout.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum


class Outcome(str, Enum):
    WAIT = "wait"          # replicas are still starting on the nodes present
    READY = "ready"        # every replica asked for is running
    PARTIAL = "partial"    # serving; the replicas that are missing wait for nodes to join
    TIMEOUT = "timeout"    # the bounded wait ran out


@dataclass(frozen=True)
class DeploymentProgress:
    """One deployment as the wait sees it."""

    name: str
    wanted: int               # the warm minimum the config asks for
    running: int              # replicas Serve reports RUNNING
    unplaced: int = 0         # replica actors Ray cannot place yet (no node has room)
    message: str = ""         # Serve's own status message, for the error


@dataclass(frozen=True)
class Decision:
    outcome: Outcome
    lines: list[str] = field(default_factory=list)  # one per deployment short of its minimum


def decide(progress: list[DeploymentProgress], elapsed_s: float, timeout_s: float) -> Decision:
    short = [p for p in progress if p.running < p.wanted]
    if progress and not short:
        return Decision(Outcome.READY)
    lines = [_line(p) for p in short]
    serving = bool(progress) and all(p.running >= 1 or p.wanted == 0 for p in progress)
    placeable_left = any(p.running + p.unplaced < p.wanted for p in short)
    if serving and not placeable_left:
        return Decision(Outcome.PARTIAL, lines)
    if elapsed_s >= timeout_s:
        return Decision(Outcome.TIMEOUT, lines or ["the application did not appear in Serve's status"])
    return Decision(Outcome.WAIT, lines)


def _line(p: DeploymentProgress) -> str:
    waiting = f"; {p.unplaced} wait{'s' if p.unplaced == 1 else ''} for a node to join" if p.unplaced else ""
    said = f" ({p.message.strip()})" if p.message.strip() else ""
    return f"{p.name}: {p.running} of {p.wanted} replicas running{waiting}{said}"
