"""Placing UA nodes: one named, detached actor per Ray node, pinned to that node."""

from __future__ import annotations

import ray
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

NAMESPACE = "voxray"


def ua_node_name(node_id: str) -> str:
    return f"voxray-ua-{node_id[:16]}"


def ua_node_for(node_id: str, app_name: str = "voxray", media: dict | None = None,
                transports: dict | None = None):
    """The UA node actor on `node_id`, started there if it is not up yet."""
    from voxray.ua_node.actor import UaNode

    return UaNode.options(
        name=ua_node_name(node_id), namespace=NAMESPACE, lifetime="detached", get_if_exists=True,
        scheduling_strategy=NodeAffinitySchedulingStrategy(node_id=node_id, soft=False),
    ).remote(app_name, media, transports)


def local_ua_node(app_name: str = "voxray", media: dict | None = None, transports: dict | None = None):
    """The UA node on the node this process runs on."""
    return ua_node_for(ray.get_runtime_context().get_node_id(), app_name, media, transports)


def ensure_ua_nodes(app_name: str = "voxray", media: dict | None = None,
                    transports: dict | None = None) -> list:
    """One UA node per alive node; waits until each is ready and returns their info."""
    actors = [ua_node_for(n["NodeID"], app_name, media, transports) for n in ray.nodes() if n.get("Alive")]
    return ray.get([a.ready.remote() for a in actors], timeout=120)


def kill_ua_nodes() -> None:
    for n in ray.nodes():
        try:
            actor = ray.get_actor(ua_node_name(n["NodeID"]), namespace=NAMESPACE)
        except ValueError:
            continue
        try:  # end calls and stop transports cleanly first (SIP: BYEs, un-REGISTER)
            ray.get(actor.shutdown.remote(), timeout=10)
        except Exception:
            pass
        ray.kill(actor)
