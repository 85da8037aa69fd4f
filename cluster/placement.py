"""Placing UA nodes: one named, detached actor per Ray node, pinned to that node (it
starts its own UA worker processes there, named after it: see ua_node/actor.py)."""

from __future__ import annotations

from typing import TYPE_CHECKING

import ray
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

if TYPE_CHECKING:
    from voxray.config import VoxrayConfig

NAMESPACE = "voxray"


def ua_node_name(node_id: str) -> str:
    return f"voxray-ua-{node_id[:16]}"


def ua_node_for(node_id: str, app_name: str = "voxray", media: dict | None = None,
                transports: dict | None = None, admission: dict | None = None):
    """The UA node actor on `node_id`, started there if it is not up yet."""
    from voxray.ua_node.actor import UaNode

    return UaNode.options(
        name=ua_node_name(node_id), namespace=NAMESPACE, lifetime="detached", get_if_exists=True,
        scheduling_strategy=NodeAffinitySchedulingStrategy(node_id=node_id, soft=False),
    ).remote(app_name, media, transports, admission)


def local_ua_node(app_name: str = "voxray", media: dict | None = None, transports: dict | None = None,
                  admission: dict | None = None):
    """The UA node on the node this process runs on."""
    return ua_node_for(ray.get_runtime_context().get_node_id(), app_name, media, transports, admission)


def ensure_ua_nodes(app_name: str = "voxray", media: dict | None = None,
                    transports: dict | None = None, admission: dict | None = None) -> list:
    """One UA node per alive node; waits until each is ready and returns their info."""
    actors = [ua_node_for(n["NodeID"], app_name, media, transports, admission)
              for n in ray.nodes() if n.get("Alive")]
    return ray.get([a.ready.remote() for a in actors], timeout=120)


def describe(info: dict) -> str:
    """A UA node's `ready` answer in a line:
    'UA node on 3f2a...: 8 sip workers, 2 webrtc workers; SIP front sip:...'."""
    roles = [w["role"] for w in info.get("workers", {}).values()]
    pool = ", ".join(f"{roles.count(r)} {r} worker{'s' if roles.count(r) > 1 else ''}"
                     for r in ("sip", "webrtc") if r in roles)
    front = f"; SIP front {info['front']}" if info.get("front") else ""
    return f"UA node on {info['node_id'][:12]}: {pool or 'no network transports'}{front}"


def ensure_ua_nodes_for(config: VoxrayConfig) -> list:
    """ensure_ua_nodes with the settings the app was deployed with."""
    return ensure_ua_nodes(config.serve.app_name, config.media_dict(), config.transports.model_dump(),
                           config.admission.model_dump())


def ua_node_actors(alive_only: bool = True) -> list:
    """The UA node actors up in the cluster (blocking GCS look-ups)."""
    found = []
    for n in ray.nodes():
        if alive_only and not n.get("Alive"):
            continue
        try:
            found.append(ray.get_actor(ua_node_name(n["NodeID"]), namespace=NAMESPACE))
        except ValueError:
            pass
    return found


class UaNodeDirectory:
    """How the ingress finds UA nodes, handed to it at deploy time (cluster/app.py), so that
    deployments/ never imports the placement or the UA node itself. Both are blocking."""

    def local(self, app_name: str, media: dict, transports: dict, admission: dict):
        return local_ua_node(app_name, media, transports, admission)

    def all(self) -> list:
        return ua_node_actors()

    def place_missing(self, app_name: str, media: dict, transports: dict, admission: dict) -> int:
        """A UA node on every alive node that has none yet (a node that joined since the
        deploy, however it was started); returns how many were started."""
        have = {a["name"] for a in ray.util.list_named_actors(all_namespaces=True)
                if a.get("namespace") == NAMESPACE}
        missing = [n["NodeID"] for n in ray.nodes() if n.get("Alive") and ua_node_name(n["NodeID"]) not in have]
        for node_id in missing:
            ua_node_for(node_id, app_name, media, transports, admission)
        return len(missing)


def kill_ua_nodes() -> None:
    for actor in ua_node_actors(alive_only=False):
        try:  # end calls and stop transports cleanly first (SIP: BYEs, un-REGISTER), workers too
            ray.get(actor.shutdown.remote(), timeout=20)
        except Exception:
            pass
        ray.kill(actor)
    # Workers of a UA node that was already gone: detached, so nothing else stops them.
    for named in ray.util.list_named_actors(all_namespaces=True):
        if named.get("namespace") == NAMESPACE and named["name"].startswith("voxray-ua-"):
            try:
                ray.kill(ray.get_actor(named["name"], namespace=NAMESPACE), no_restart=True)
            except ValueError:
                pass


def drain_ua_node(node_id: str, timeout_s: float = 300.0) -> int:
    """Before a node leaves: its UA node takes no new calls and waits for live ones to end.

    Returns how many calls were still up at the timeout (0: the node may go).
    """
    actor = ray.get_actor(ua_node_name(node_id), namespace=NAMESPACE)
    return ray.get(actor.drain.remote(timeout_s), timeout=timeout_s + 30)


def main(argv: list[str] | None = None) -> None:
    """`python -m voxray.cluster.placement [--drain NODE_ID]` against RAY_ADDRESS.

    Without arguments: a UA node on every alive node (run when a worker joins, since
    the deploy placed UA nodes only on the nodes up at that time). With --drain: drain
    that node's UA node before the node is stopped.
    """
    import argparse

    from voxray.cluster.ray_start import eprint, start_ray
    from voxray.config import VoxrayConfig

    p = argparse.ArgumentParser(description=main.__doc__.split("\n\n")[0])
    p.add_argument("--address", default=None, help="Ray cluster (default RAY_ADDRESS, else auto)")
    p.add_argument("--config", default=None, help="the config the app was deployed with (media, transports)")
    p.add_argument("--drain", metavar="NODE_ID", help="drain this node's UA node instead")
    p.add_argument("--timeout", type=float, default=300.0)
    args = p.parse_args(argv)
    start_ray(args.address or "auto", log=eprint)
    if args.drain:
        left = drain_ua_node(args.drain, args.timeout)
        eprint(f"UA node on {args.drain[:12]} drained; {left} call(s) still up")
        raise SystemExit(1 if left else 0)
    config = VoxrayConfig.load(args.config)
    for info in ensure_ua_nodes_for(config):
        eprint(describe(info))


if __name__ == "__main__":
    main()
