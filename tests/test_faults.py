"""Faults survived: a model replica or a UA worker killed in the middle of a call."""

from __future__ import annotations

import asyncio
import time

import numpy as np
import pytest
import ray
from ray import serve

from tests.conftest import SENTENCE
from tests.test_models import wer
from tests.wsclient import CallClient

pytestmark = pytest.mark.e2e


def _kill_replica(deployment: str, app: str = "voxray") -> str:
    """Kill the replica that takes the requests: the first by id, which fill-first routing
    (deployments/routing.py) fills while the others stand by."""
    replicas = sorted((a["name"].rsplit("#", 1)[-1], a) for a in ray.util.list_named_actors(all_namespaces=True)
                      if a["name"].startswith("SERVE_REPLICA") and f"{app}#{deployment}#" in a["name"])
    if not replicas:
        raise AssertionError(f"no replica of {deployment}")
    _, actor = replicas[0]
    ray.kill(ray.get_actor(actor["name"], namespace=actor["namespace"]), no_restart=True)
    return actor["name"]


async def _healthy(deployment: str, app: str = "voxray", timeout: float = 90) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        status = await asyncio.to_thread(serve.status)
        dep = status.applications[app].deployments[deployment]
        if str(dep.status.value if hasattr(dep.status, "value") else dep.status) == "HEALTHY":
            alive = [a for a in ray.util.list_named_actors(all_namespaces=True)
                     if f"{app}#{deployment}#" in a["name"]]
            if alive:
                return
        await asyncio.sleep(0.5)
    raise AssertionError(f"{deployment} did not recover")


async def _invite(server: str) -> CallClient:
    client = await CallClient.connect(f"ws://{server}/call")
    await client.send({"command": "invite", "option": {"codec": "pcm"}})
    await client.wait_for("answer", timeout=15)
    return client


async def _speak(client: CallClient, speech16k: np.ndarray) -> None:
    await client.stream(np.concatenate([np.zeros(4000, np.int16), speech16k,
                                        np.zeros(16000, np.int16)]).tobytes(), 640)


async def _heard_and_still_usable(client: CallClient, final: dict, killed: str) -> None:
    """The sentence was transcribed despite the kill, and the call still plays a reply."""
    assert wer(SENTENCE, final["text"]) <= 0.5, (killed, final["text"])
    n = len(client.events)
    await client.send({"command": "tts", "text": "Still here.", "playId": "after"})
    await client.wait_for("trackEnd", after=n, playId="after", timeout=60)


async def test_call_survives_a_killed_asr_replica(voxray_server, speech16k):
    deployment = "AsrDeployment"
    client = await _invite(voxray_server)
    try:
        sender = asyncio.create_task(_speak(client, speech16k))
        # Kill while the caller talks: the turn's transcript (sent at the first pause,
        # before `silence`) and the partials meet a dead replica and are retried.
        await client.wait_for("speaking", timeout=30)
        killed = await asyncio.to_thread(_kill_replica, deployment)
        await sender
        # Keep the line open while the replica is replaced.
        keepalive = asyncio.create_task(client.stream(np.zeros(16000 * 60, np.int16).tobytes(), 640))
        try:
            final = await client.wait_for("asrFinal", timeout=90)
        finally:
            keepalive.cancel()
        await _heard_and_still_usable(client, final, killed)
    finally:
        await client.close()
        await _healthy(deployment)


async def test_a_killed_webrtc_worker_ends_its_call_and_the_next_call_is_served(voxray_server, speech16k):
    """UA workers hold SIP and WebRTC media (VAD included); one killed mid-call ends that
    call with `ua_worker_lost`, and the node's other WebRTC worker takes the next call
    while Ray brings the dead one back."""
    import os
    import signal

    from tests.rtcpeer import RtcPeer
    from tests.test_webrtc import _call
    from voxray.cluster.placement import NAMESPACE, ua_node_name

    node = ray.get_actor(ua_node_name(ray.get_runtime_context().get_node_id()), namespace=NAMESPACE)
    peer = RtcPeer(np.concatenate([np.zeros(8000, np.int16), speech16k]))
    client = await _call(voxray_server, peer)
    try:
        await client.wait_for("speaking", timeout=60)
        held = [c["worker"] for c in await node.list_calls.remote() if c["kind"] == "webrtc"]
        assert len(held) == 1, held
        pid = (await node.worker_pids.remote())[held[0]]
        os.kill(pid, signal.SIGKILL)
        hangup = await client.wait_for("hangup", timeout=30)
        assert hangup["reason"] == "ua_worker_lost", hangup
    finally:
        await client.close()
        await peer.close()
    peer = RtcPeer(np.concatenate([np.zeros(8000, np.int16), speech16k]))
    client = await _call(voxray_server, peer)
    try:
        await _heard_and_still_usable(client, await client.wait_for("asrFinal", timeout=90), held[0])
    finally:
        await client.close()
        await peer.close()
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        w = (await node.ready.remote())["workers"][held[0]]
        if w["up"] and w["pid"] != pid:
            return
        await asyncio.sleep(1.0)
    raise AssertionError(f"{held[0]} did not come back")


async def test_tts_replica_killed_then_tts_retries(voxray_server):
    client = await _invite(voxray_server)
    try:
        await asyncio.to_thread(_kill_replica, "TtsDeployment")
        await client.send({"command": "tts", "text": "The show goes on.", "playId": "t"})
        end = await client.wait_for("trackEnd", playId="t", timeout=90)
        assert end["duration"] > 500
        assert "error" not in client.names()
    finally:
        await client.close()
        await _healthy("TtsDeployment")


async def _timed_turn(server: str, speech16k: np.ndarray, kill: str | None, when: str) -> dict:
    """One turn of a new call: the caller speaks, the agent replies as soon as asrFinal
    arrives. Seconds from the end of speech to asrFinal and to the reply's first audio,
    with a replica of `kill` killed `when` ("ending": 0.3 s before the caller stops;
    "final": between the transcript and the reply's tts command)."""
    client = await _invite(server)
    keepalive = None
    try:
        lead = np.zeros(4000, np.int16)
        voiced = np.flatnonzero(np.abs(speech16k) > 500)
        speech = speech16k[: voiced[-1] + 1]  # the end of speech is its last loud sample
        t0 = time.monotonic()
        sender = asyncio.create_task(client.stream(np.concatenate([lead, speech]).tobytes(), 640))
        t_end = t0 + (len(lead) + len(speech)) / 16000
        if kill and when == "ending":  # 0.3 s before the caller stops: the turn's decodes are under way
            await asyncio.sleep(max(0.0, t_end - 0.3 - time.monotonic()))
            await asyncio.to_thread(_kill_replica, kill)
        await sender
        keepalive = asyncio.create_task(client.stream(np.zeros(16000 * 30, np.int16).tobytes(), 640))
        final = await client.wait_for("asrFinal", timeout=60)
        t_final = client.arrival(final)
        if kill and when == "final":
            await asyncio.to_thread(_kill_replica, kill)
        n_audio = len(client.audio)
        await client.send({"command": "tts", "text": "Sure, let me look at your account.", "playId": "reply"})
        await client.wait_for("trackStart", playId="reply", timeout=60)
        while len(client.audio) <= n_audio:
            await asyncio.sleep(0.005)
        t_audio = client.audio[n_audio][0]
        assert wer(SENTENCE, final["text"]) <= 0.5, final["text"]
        return {"asr_s": t_final - t_end, "audio_s": t_audio - t_end, "reply_s": t_audio - t_final}
    finally:
        if keepalive:
            keepalive.cancel()
        await client.close()


async def test_a_killed_model_replica_costs_the_turn_under_a_second(voxray_server, speech16k):
    """ASR and TTS keep a warm standby (min_replicas 2): a request that meets the killed
    replica goes to the live one at once. Turns with a kill, beside turns without, in one
    run; before the standby a killed single ASR replica made asrFinal 9.9 s late. The
    bound here (2 s) leaves room for this noisy machine while the replacement loads its
    model beside the turn; the README reports the measured figures."""
    base = [await _timed_turn(voxray_server, speech16k, None, "") for _ in range(2)]
    asr = await _timed_turn(voxray_server, speech16k, "AsrDeployment", "ending")
    await _healthy("AsrDeployment")
    tts = await _timed_turn(voxray_server, speech16k, "TtsDeployment", "final")
    await _healthy("TtsDeployment")
    ref_asr = min(b["asr_s"] for b in base)
    ref_reply = min(b["reply_s"] for b in base)
    # VAD runs in the ingress by default (no VadDeployment to kill): test_ingress_proxy kills
    # the VAD replica of a server that has one (media.vad_in_process = false).
    extra = {"asr": asr["asr_s"] - ref_asr, "tts": tts["reply_s"] - ref_reply}
    print(f"\nreplica killed mid-turn, extra delay (s): {extra}; baseline asrFinal {ref_asr:.2f} s, "
          f"reply audio after asrFinal {ref_reply:.2f} s")
    for what, seconds in extra.items():
        assert seconds < 2.0, (what, extra, base)
