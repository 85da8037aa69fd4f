"""Multi-node voxray on one machine, driven in its own process (see tests/test_multinode.py).

A head and a worker Ray node (ray.cluster_utils.Cluster, each with its own logical
CPUs), the app deployed with one ingress replica per node and a UA node per node.
Phase "spread": WebRTC calls placed until both ingress replicas hold one; each call's
media then lives on that node's UA node; every call must get asrFinal and TTS audio.
Phase "node loss": /call calls up on both nodes, the worker node removed: its calls end
(socket closed, a call record `node_lost`, gone from /call/lists), the head's go on to
asrFinal and TTS; a new worker node joins and gets the lost replica and a UA node.
Phase "drain": /call calls up on both replicas, the ingress scaled from 2 replicas to 1;
the calls on the replica being removed must go on past Serve's default 20 s grace
(speech -> asrFinal -> TTS -> hangup) while a new call lands elsewhere.
`--proxy ray|haproxy` picks what carries the sockets (serve.proxy; default: its default):
behind HAProxy (Serve's direct ingress) the draining replica's own server holds the calls,
behind Serve's proxy actor the proxy does.

Prints one JSON line with what it saw; the test asserts on it. Bounded throughout.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import httpx  # noqa: E402
import numpy as np  # noqa: E402

from tests.conftest import SENTENCE  # noqa: E402
from tests.wsclient import CallClient  # noqa: E402

CALL_TIMEOUT_S = 90.0
DRAIN_HOLD_S = 22.0  # past Serve's default graceful_shutdown_timeout_s (20 s)
MAX_PLACEMENT_TRIES = 6  # the loops below place up to 2x (calls held open) or 4x (hung up) this many calls


async def placement_tries(max_calls: int):
    """Indices of calls to place until one lands where a phase wants it, with a growing
    pause between them (0.25 s up to 2 s): HAProxy balances, and a replica Serve counts
    as running joins a node's HAProxy only once the proxy has its new config and reloaded,
    which took 2-5 s on a busy 2-core machine (back to back, 12 calls all went to the old
    replica before that)."""
    pause = 0.25
    for i in range(max_calls):
        yield i
        await asyncio.sleep(pause)
        pause = min(2.0, pause * 2)


def log(*a) -> None:
    print("[driver]", *a, file=sys.stderr, flush=True)


def ingress_replicas() -> list[str]:
    import ray

    return sorted(a["name"].rsplit("#", 1)[-1] for a in ray.util.list_named_actors(all_namespaces=True)
                  if "voxray#Ingress#" in a["name"])


async def replica_of(server: str, call_id: str) -> str | None:
    async with httpx.AsyncClient(timeout=10) as http:
        for _ in range(50):
            calls = (await http.get(f"http://{server}/call/lists")).json()["calls"]
            found = [c["replica"] for c in calls if c["id"] == call_id]
            if found:
                return found[0]
            await asyncio.sleep(0.2)
    return None


async def speak_and_hang_up(client: CallClient, call: dict, payload: bytes, reply: str) -> bool:
    """One /call turn on a held call: the caller speaks, the agent replies and hangs up.
    Fills call's asr_text, tts_frames and hangup, or its error; True when it all came."""
    try:
        await client.stream(payload, 640)
        call["asr_text"] = (await client.wait_for("asrFinal", timeout=CALL_TIMEOUT_S))["text"]
        n = len(client.events)
        await client.send({"command": "tts", "text": reply, "playId": "reply"})
        await client.wait_for("trackEnd", timeout=CALL_TIMEOUT_S, after=n, playId="reply")
        call["tts_frames"] = len(client.audio)
        await client.send({"command": "hangup", "reason": "done"})
        call["hangup"] = (await client.wait_for("hangup", timeout=30))["reason"]
        return True
    except AssertionError as exc:
        call["error"] = str(exc)[:300]
        return False


async def spread_phase(server: str, speech: np.ndarray) -> dict:
    """WebRTC calls until both ingress replicas (hence both UA nodes) hold one."""
    import ray

    from tests.rtcpeer import RtcPeer
    from voxray.cluster.placement import NAMESPACE, ua_node_name

    calls: list[dict] = []
    peers: list = []
    clients: list[CallClient] = []
    try:
        async for i in placement_tries(MAX_PLACEMENT_TRIES * 2):
            peer = RtcPeer(np.concatenate([np.zeros(8000, np.int16), speech]))
            client = await CallClient.connect(f"ws://{server}/call/webrtc?id=mn{i}")
            peers.append(peer)
            clients.append(client)
            await client.send({"command": "invite", "option": {"caller": "mn", "offer": await peer.offer()}})
            answer = await client.wait_for("answer", timeout=CALL_TIMEOUT_S)
            await peer.accept(answer["sdp"])
            calls.append({"id": f"mn{i}", "replica": await replica_of(server, f"mn{i}")})
            if len({c["replica"] for c in calls}) >= 2 and len(calls) >= 2:
                break
        # Which UA node holds which call, asked of each node's actor while the calls are up.
        ua_calls = {}
        for node in ray.nodes():
            if node.get("Alive"):
                ua = ray.get_actor(ua_node_name(node["NodeID"]), namespace=NAMESPACE)
                ua_calls[node["NodeID"][:12]] = sorted(c["id"] for c in await ua.list_calls.remote())

        async def converse(client: CallClient, peer, call: dict) -> None:
            final = await client.wait_for("asrFinal", timeout=CALL_TIMEOUT_S)
            call["asr_text"] = final["text"]
            n, heard_from = len(client.events), len(peer.heard)
            await client.send({"command": "tts", "text": "Sure, a table for two at seven.", "playId": "r1"})
            await client.wait_for("trackEnd", timeout=CALL_TIMEOUT_S, after=n, playId="r1")
            await asyncio.sleep(0.5)
            heard = peer.heard_since(heard_from)
            call["tts_rms"] = float(np.sqrt(np.mean(heard.astype(np.float64) ** 2))) if heard.size else 0.0
            await client.send({"command": "hangup", "reason": "done"})
            call["hangup"] = (await client.wait_for("hangup", timeout=30))["reason"]

        await asyncio.gather(*(converse(c, p, call) for c, p, call in zip(clients, peers, calls, strict=True)))
        return {"calls": calls, "ua_calls": ua_calls}
    finally:
        for c in clients:
            await c.close()
        for p in peers:
            await p.close()


async def node_loss_phase(server: str, speech: np.ndarray, cluster, worker) -> dict:
    """Calls on both nodes; the worker node goes; a new one joins."""
    import ray

    from voxray.cluster.placement import NAMESPACE, ua_node_name

    head_node = ray.get_runtime_context().get_node_id()
    clients: dict[str, CallClient] = {}
    calls: dict[str, dict] = {}
    payload = np.concatenate([np.zeros(4000, np.int16), speech, np.zeros(16000, np.int16)]).tobytes()
    try:
        replica_node = ingress_replica_nodes()
        async for i in placement_tries(MAX_PLACEMENT_TRIES * 2):
            cid = f"nl{i}"
            client = await CallClient.connect(f"ws://{server}/call?id={cid}")
            await client.send({"command": "invite", "option": {"codec": "pcm"}})
            await client.wait_for("answer", timeout=CALL_TIMEOUT_S)
            replica = await replica_of(server, cid)
            clients[cid] = client
            calls[cid] = {"replica": replica, "on_lost_node": replica_node.get(replica) == worker.node_id}
            if len({c["on_lost_node"] for c in calls.values()}) == 2:
                break
        t_loss = time.monotonic()
        cluster.remove_node(worker)
        log("worker node removed; calls:", calls)

        async def lost(cid: str) -> None:
            client, call = clients[cid], calls[cid]
            try:
                await asyncio.wait_for(client.closed.wait(), 60)
                call["socket_closed_after_s"] = round(time.monotonic() - t_loss, 1)
            except asyncio.TimeoutError:
                call["error"] = "socket still open 60 s after its node went"
            call["events_after"] = client.names()[-3:]

        await asyncio.gather(*(lost(c) if calls[c]["on_lost_node"]
                               else speak_and_hang_up(clients[c], calls[c], payload, "Still here.")
                               for c in calls))
        # The registry drops the lost calls from the list and writes their records.
        async with httpx.AsyncClient(timeout=10) as http:
            deadline = time.monotonic() + 60
            listed: list[str] = []
            while time.monotonic() < deadline:
                listed = [c["id"] for c in (await http.get(f"http://{server}/call/lists")).json()["calls"]]
                if not any(calls[c]["on_lost_node"] for c in listed if c in calls):
                    break
                await asyncio.sleep(1)
            out_listed = [c for c in listed if c in calls]
            for cid, call in calls.items():
                recs = (await http.get(f"http://{server}/call/records", params={"id": cid})).json()["records"]
                call["record_reason"] = recs[0]["reason"] if recs else None
        # The lost node's UA node went with it: its name is free, nothing waits to restart it.
        deadline = time.monotonic() + 60
        lost_ua_gone = False
        while not lost_ua_gone and time.monotonic() < deadline:
            try:
                ray.get_actor(ua_node_name(worker.node_id), namespace=NAMESPACE)
                await asyncio.sleep(1)
            except ValueError:
                lost_ua_gone = True
        # A new node joins: Serve puts the lost ingress replica there, and it gets a UA node.
        t_join = time.monotonic()
        new = cluster.add_node(num_cpus=4)
        cluster.wait_for_nodes()
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            nodes = set(ingress_replica_nodes().values())
            try:
                ray.get_actor(ua_node_name(new.node_id), namespace=NAMESPACE)
                has_ua = True
            except ValueError:
                has_ua = False
            if new.node_id in nodes and has_ua:
                break
            await asyncio.sleep(1)
        rejoined = {"ingress_on_new_node": new.node_id in set(ingress_replica_nodes().values()),
                    "ua_node_on_new_node": has_ua, "after_s": round(time.monotonic() - t_join, 1)}
        # Serve counts the new replica as running; new calls are answered, one by it.
        from ray import serve

        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            dep = serve.status().applications["voxray"].deployments["Ingress"]
            if {str(getattr(k, "value", k)): v for k, v in dep.replica_states.items()}.get("RUNNING", 0) >= 2:
                break
            await asyncio.sleep(1)
        answered, on_new_node = 0, False
        async for i in placement_tries(MAX_PLACEMENT_TRIES * 4):
            cid = f"nlnew{i}"
            c = await CallClient.connect(f"ws://{server}/call?id={cid}")
            clients[cid] = c
            await c.send({"command": "invite", "option": {"codec": "pcm"}})
            await c.wait_for("answer", timeout=CALL_TIMEOUT_S)
            answered += 1
            replica = await replica_of(server, cid)
            await c.send({"command": "hangup"})
            await c.wait_for("hangup", timeout=30)
            if ingress_replica_nodes().get(replica) == new.node_id:
                on_new_node = True
                break
        rejoined["new_node_took_a_call"] = on_new_node
        return {"calls": calls, "listed_after": out_listed, "rejoined": rejoined, "new_calls_answered": answered,
                "head": head_node[:12], "lost_ua_node_gone": lost_ua_gone}
    finally:
        for c in clients.values():
            await c.close()


def ingress_replica_nodes() -> dict[str, str]:
    """Ingress replica id -> the node it runs on (from Ray's actor table)."""
    import ray

    out = {}
    for a in ray.util.list_named_actors(all_namespaces=True):
        if "voxray#Ingress#" in a["name"]:
            try:
                actor = ray.get_actor(a["name"], namespace=a["namespace"])
            except ValueError:
                continue
            state = ray._private.state.actors(actor._actor_id.hex())
            if state.get("State") == "ALIVE":
                out[a["name"].rsplit("#", 1)[-1]] = state.get("Address", {}).get("NodeID")
    return out


async def drain_phase(server: str, speech: np.ndarray, config) -> dict:
    """Scale the ingress 2 -> 1 while calls are up on both replicas."""
    from ray import serve

    from voxray.cluster.app import build_app

    calls: list[dict] = []
    clients: list[CallClient] = []
    payload = np.concatenate([np.zeros(4000, np.int16), speech, np.zeros(16000, np.int16)]).tobytes()
    try:
        async for i in placement_tries(MAX_PLACEMENT_TRIES * 2):
            client = await CallClient.connect(f"ws://{server}/call?id=dr{i}")
            clients.append(client)
            await client.send({"command": "invite", "option": {"codec": "pcm"}})
            await client.wait_for("answer", timeout=CALL_TIMEOUT_S)
            calls.append({"id": f"dr{i}", "replica": await replica_of(server, f"dr{i}")})
            if len({c["replica"] for c in calls}) >= 2:
                break
        before = ingress_replicas()
        smaller = config.model_copy(deep=True)
        smaller.ingress.min_replicas = smaller.ingress.max_replicas = 1
        t_issue = time.monotonic()
        done = threading.Event()
        redeploy_error: list[str] = []

        def redeploy() -> None:
            try:
                serve.run(build_app(smaller), name=config.serve.app_name, route_prefix=config.serve.route_prefix)
            except Exception as exc:  # reported in the JSON
                redeploy_error.append(repr(exc))
            finally:
                done.set()

        threading.Thread(target=redeploy, daemon=True).start()
        # serve.run returns only once the old replicas have gone, i.e. after our calls end.
        # Serve stops one old replica (it drains) and replaces the other only after that.
        await asyncio.sleep(5)
        log("scale-down under way after", round(time.monotonic() - t_issue, 1), "s; replicas:", ingress_replicas())

        # A call placed while the old replica drains: it must be answered.
        newcomer = await CallClient.connect(f"ws://{server}/call?id=drnew")
        clients.append(newcomer)
        await newcomer.send({"command": "invite", "option": {"codec": "pcm"}})
        await newcomer.wait_for("answer", timeout=CALL_TIMEOUT_S)
        new_replica = await replica_of(server, "drnew")
        await newcomer.send({"command": "hangup"})
        await newcomer.wait_for("hangup", timeout=30)

        await asyncio.sleep(max(0.0, t_issue + DRAIN_HOLD_S - time.monotonic()))

        async def converse(client: CallClient, call: dict) -> None:
            if await speak_and_hang_up(client, call, payload, "Goodbye."):
                call["ended_after_issue_s"] = round(time.monotonic() - t_issue, 1)

        await asyncio.gather(*(converse(c, call) for c, call in zip(clients, calls, strict=False)))
        # The draining replica leaves once its calls have ended.
        deadline = time.monotonic() + 60
        while len(ingress_replicas()) > 1 and time.monotonic() < deadline:
            await asyncio.sleep(1)
        after = ingress_replicas()
        await asyncio.to_thread(done.wait, 90)
        return {"calls": calls, "replicas_before": before, "replicas_after": after,
                "new_call_replica": new_replica, "redeploy_error": redeploy_error}
    finally:
        for c in clients:
            await c.close()


def main() -> None:
    from ray import serve
    from ray.cluster_utils import Cluster

    from voxray.cluster.ingress_proxy import embedded_ports, free_listen_port
    from voxray.cluster.local import deploy, shutdown
    from voxray.cluster.ray_start import serve_vars, ray_env_defaults, start_ray
    from voxray.config import VoxrayConfig
    from voxray.speech import espeak_speech

    ray_env_defaults()
    os.environ.pop("RAY_ADDRESS", None)
    # One proxy (on the head) serves both nodes here, and a proxy prefers replicas on its
    # own node; in a real cluster every node has its proxy behind a load balancer. Turned
    # off so the head's proxy spreads calls over both nodes' replicas (inherited by the
    # Ray processes the Cluster starts from here).
    os.environ["RAY_SERVE_PROXY_PREFER_LOCAL_NODE_ROUTING"] = "0"
    os.environ["RAY_SERVE_PROXY_PREFER_LOCAL_AZ_ROUTING"] = "0"
    proxy = sys.argv[sys.argv.index("--proxy") + 1] if "--proxy" in sys.argv else VoxrayConfig().serve.proxy
    if proxy == "haproxy":
        # Free ports for HAProxy's stats and metrics and the fallback proxy, as an embedded
        # Ray gets them (start_ray keeps a variable set here).
        os.environ.update(embedded_ports())
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 4, "include_dashboard": False})
    worker = cluster.add_node(num_cpus=4)
    out: dict = {}
    try:
        start_ray(address=cluster.address, log=log, ingress_proxy=proxy)
        cluster.wait_for_nodes()
        config = VoxrayConfig()
        config.serve.proxy = proxy
        config.serve.host, config.serve.port = "127.0.0.1", free_listen_port()
        config.ingress.min_replicas = config.ingress.max_replicas = 2
        config.ingress.max_replicas_per_node = 1  # one per node: calls land on both
        # One HTTP proxy (on the head) for both replicas; two would share one loopback port.
        env = serve_vars()
        serve.start(proxy_location="HeadOnly",
                    http_options={"host": config.serve.host, "port": config.serve.port},
                    controller_options={"runtime_env": {"env_vars": env}} if env else None)
        deploy(config, log=log)
        server = f"127.0.0.1:{config.serve.port}"
        speech = espeak_speech(SENTENCE, 16000)
        out["nodes"] = [n["NodeID"][:12] for n in __import__("ray").nodes() if n.get("Alive")]
        out["spread"] = asyncio.run(spread_phase(server, speech))
        if "--no-node-loss" not in sys.argv:
            out["node_loss"] = asyncio.run(node_loss_phase(server, speech, cluster, worker))
        if "--no-drain" not in sys.argv:
            out["drain"] = asyncio.run(drain_phase(server, speech, config))
    except Exception as exc:
        out["error"] = repr(exc)[:1000]
        raise
    finally:
        print(json.dumps(out), flush=True)
        try:
            shutdown()
        finally:
            cluster.shutdown()


if __name__ == "__main__":
    main()
