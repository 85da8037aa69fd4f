"""A node's SIP worker pool behind its Kamailio front, with real sipp callers: many calls
spread over the workers, and a worker killed mid-call takes only its own calls."""

from __future__ import annotations

import asyncio
import os
import signal
import time
from collections import defaultdict

import numpy as np
import pytest

from tests.conftest import SENTENCE
from tests.sip_env import SIP_ENV
from tests.test_models import wer
from tests.records import call_record
from tests.test_sip import (  # noqa: F401  (fixtures)
    SIPP_PCAPS, _agent, capture_rtp, decode_rtp, peers, render, rtp_packets, sip_request, sip_workdir, sipp,
    speech_alaw, udp_exchange, webhook,
)
from tests.wsclient import CallClient

pytestmark = [pytest.mark.e2e, pytest.mark.skipif(not SIP_ENV.available, reason="pjsua2 is not installed")]


async def _node():
    import ray

    from voxray.cluster.placement import NAMESPACE, ua_node_name

    return ray.get_actor(ua_node_name(ray.get_runtime_context().get_node_id()), namespace=NAMESPACE)


async def _answer(server: str, hook: dict) -> CallClient:
    client = await _agent(server, hook["call_id"])
    await client.wait_for("incoming", timeout=30)
    await client.send({"command": "accept", "option": {"caller": hook["caller"]}})
    await client.wait_for("answer", timeout=30)
    return client


async def _pool_load() -> dict[str, dict]:
    """Per SIP worker: the calls its core holds and those pjsua2 still holds (a slot each)."""
    node = await _node()
    info = await node.ready.remote()
    keys = [k for k, w in info["workers"].items() if w["role"] == "sip" and w["up"]]
    handles = [await node.worker.remote(k) for k in keys]
    stats = await asyncio.gather(*(h.media_stats.remote() for h in handles))
    return {k: {"core": info["workers"][k]["calls"], "pj": s.get("pj_calls", 0)}
            for k, s in zip(keys, stats, strict=True)}


async def _front_load() -> dict[str, str]:
    """The front's view per worker: its flags and the calls Kamailio counts on it / its max."""
    state = await (await _node()).front_state.remote()
    return {t["uri"]: f"{t['flags']} {t['load']}/{t['max_load']}" for t in (state or {}).get("targets", [])}


async def _idle_pool(timeout_s: float = 45.0) -> None:
    """Wait for the earlier tests' calls to be gone from every worker and from the front's
    count: these tests fill the pool's slots, and a call still ending elsewhere (its BYE's
    answer, pjsua2's timers) holds one."""
    deadline = time.monotonic() + timeout_s
    while True:
        load = await _pool_load()
        front = await (await _node()).front_state.remote()
        targets = (front or {}).get("targets", [])
        if all(v["core"] == 0 and v["pj"] == 0 for v in load.values()) and all(t["load"] == 0 for t in targets):
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"calls left over on the SIP workers after {timeout_s}s: {load}; "
                                 f"front: {await _front_load()}, dialogs {(front or {}).get('dialogs')}; "
                                 f"{await (await _node()).list_calls.remote()}\n"
                                 f"front log: {(front or {}).get('log_tail', '')[-1500:]}")
        await asyncio.sleep(0.5)


async def _calls(server: str, hook, workdir, start, speech, n: int, hold_ms: int):
    await _idle_pool()
    scenario = render("uac_speech.xml", workdir, SPEECH=speech, DTMF_PCAP=SIPP_PCAPS / "dtmf_2833_1.pcap",
                      SPEECH_MS=3200, HOLD_MS=hold_ms)
    caller = await start(sipp(scenario, workdir, "-key", "callee", "agent", "-m", str(n), "-l", str(n),
                              "-r", str(n), f"127.0.0.1:{SIP_ENV.sip_port}", timeout_s=hold_ms / 1000 + 90))
    hooks = []
    try:
        for _ in range(n):
            hooks.append(await hook.next("/hook", timeout=60))
    except AssertionError as exc:  # say why: the callers' view (503s, timeouts) and the pool's
        errors = workdir / "uac_speech-errors.log"
        state = await (await _node()).front_state.remote() or {}
        raise AssertionError(f"{len(hooks)} of {n} calls reached the agent: {exc}\npool: {await _pool_load()}\n"
                             f"front: {await _front_load()}\nfront log: {state.get('log_tail', '')[-1500:]}\n"
                             f"sipp: {caller.text()[-1500:]}\nsipp errors: "
                             f"{errors.read_text(errors='replace')[:2500] if errors.exists() else ''}") from None
    clients = await asyncio.gather(*(_answer(server, h) for h in hooks))
    return caller, hooks, list(clients)


async def _workers_of(call_ids: list[str]) -> dict[str, str]:
    node = await _node()
    return {c["id"]: c["worker"] for c in await node.list_calls.remote() if c["id"] in call_ids}


async def test_sixteen_inbound_calls_spread_over_the_workers_each_transcribed_and_hearing_tts(
        voxray_server, webhook, sip_workdir, peers, speech_alaw):  # noqa: F811
    n = 16
    capture = await capture_rtp(sip_workdir)
    if capture is not None:
        await peers(capture)
    # The callers hang up after 45 s (sipp's scenario expects to send the BYE itself).
    caller, hooks, clients = await _calls(voxray_server, webhook, sip_workdir, peers, speech_alaw, n, 45000)
    try:
        placed = await _workers_of([h["call_id"] for h in hooks])
        assert len(placed) == n and len(set(placed.values())) >= 4, placed  # the front spread them

        async def converse(client: CallClient) -> str:
            final = await client.wait_for("asrFinal", timeout=120)
            at = len(client.events)
            await client.send({"command": "tts", "text": "Sure, I can help with your account.", "playId": "r1"})
            await client.wait_for("trackEnd", timeout=90, after=at, playId="r1")
            return final["text"]

        texts = await asyncio.gather(*(converse(c) for c in clients))
        # sipp's in-dialog requests carry no Route: the front still saw each ACK (else it
        # times the dialog out at 70 s and answers the caller's BYE itself).
        dialogs = (await (await _node()).front_state.remote())["dialogs"]
        assert dialogs["ongoing"] == n and dialogs["answering"] == 0, dialogs
        errors = sorted(wer(SENTENCE, t) for t in texts)
        assert errors[n // 2] <= 0.3 and errors[-1] <= 0.6, texts
        for c in clients:
            assert (await c.wait_for("hangup", timeout=60))["initiator"] == "caller"
        assert await caller.wait(60) == 0, caller.text()[-2000:]
    finally:
        for c in clients:
            await c.close()
    if capture is None:
        pytest.skip("tcpdump cannot capture on lo here: the TTS-over-RTP check was skipped (the rest passed)")
    await capture.stop()
    streams: dict[int, list] = defaultdict(list)
    for port, pt, payload in rtp_packets(sip_workdir / "rtp.pcap"):
        streams[port].append((pt, payload))
    # One RTP stream (source port) per call on the node's side; sipp takes them all on one port.
    loud = [p for p, pkts in streams.items() if np.abs(decode_rtp(pkts).astype(np.int32)).max(initial=0) > 3000]
    assert len(loud) >= n, f"{len(loud)} of {n} callers heard the reply"


async def test_a_killed_worker_ends_only_its_calls_and_comes_back(
        voxray_server, webhook, sip_workdir, peers, speech_alaw):  # noqa: F811
    node = await _node()
    caller, hooks, clients = await _calls(voxray_server, webhook, sip_workdir, peers, speech_alaw, 6, 40000)
    try:
        placed = await _workers_of([h["call_id"] for h in hooks])
        victim = placed[hooks[0]["call_id"]]
        lost = {cid for cid, w in placed.items() if w == victim}
        kept = [c for c, h in zip(clients, hooks, strict=True) if h["call_id"] not in lost]
        assert kept, placed
        pid = (await node.worker_pids.remote())[victim]
        os.kill(pid, signal.SIGKILL)
        t_kill = time.monotonic()

        # Its calls end, each with its reason and a call record; the others go on.
        for c, h in zip(clients, hooks, strict=True):
            if h["call_id"] in lost:
                hangup = await c.wait_for("hangup", timeout=30)
                assert hangup["reason"] == "ua_worker_lost", hangup
        for c in kept:
            at = len(c.events)
            await c.send({"command": "tts", "text": "Still here.", "playId": "k1"})
            await c.wait_for("trackEnd", timeout=60, after=at, playId="k1")
            assert "hangup" not in c.names()

        # New calls during and after the restart are answered by the live workers.
        msg, _ = sip_request("OPTIONS", f"sip:voxray@127.0.0.1:{SIP_ENV.sip_port}")
        assert any(r.startswith("SIP/2.0 200") for r in await asyncio.to_thread(udp_exchange, msg, 5.0,
                                                                               "SIP/2.0 200"))
        more, more_hooks, more_clients = await _calls(voxray_server, webhook, sip_workdir, peers, speech_alaw, 2,
                                                      3000)
        for c in more_clients:
            await c.wait_for("hangup", timeout=60)
            await c.close()
        assert await more.wait(60) == 0, more.text()[-2000:]

        # Ray brings the worker back as a new process, and the node sees it.
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            info = await node.ready.remote()
            w = info["workers"][victim]
            if w["up"] and w["pid"] != pid:
                break
            await asyncio.sleep(1.0)
        else:
            raise AssertionError(f"{victim} did not come back: {info}")
        assert w["restarts"] >= 1 and time.monotonic() - t_kill < 60

        for c in kept:  # they last until their callers hang up
            assert (await c.wait_for("hangup", timeout=60))["initiator"] == "caller"
    finally:
        for c in clients:
            await c.close()
    for cid in lost:  # each lost call has its record, with the reason
        rec = await call_record(voxray_server, cid)
        assert rec and rec["reason"] == "ua_worker_lost", (cid, rec)


async def test_a_full_worker_passes_the_call_to_the_next_one(voxray_server, webhook, sip_workdir, peers):  # noqa: F811
    """The front's count of a worker's calls can lag behind the worker (after the UA node
    restarted, say): a worker at pjsua2's call limit answers with pjsua2's own 486, and
    the front tries the next worker instead of telling the caller "busy"."""
    import tempfile
    from pathlib import Path

    from tests.test_sip import HERE

    node = await _node()
    workers = (await node.ready.remote())["workers"]
    first = sorted(k for k, w in workers.items() if w["role"] == "sip")[0]  # picked first at equal load
    port = workers[first]["sip_port"]
    front_log = Path(tempfile.gettempdir()) / "voxray-front" / f"127.0.0.1-{SIP_ENV.sip_port}" / "kamailio.log"
    seen = front_log.read_text(errors="replace") if front_log.exists() else ""
    cancel = (HERE / "errors" / "cancel_ringing.xml").read_text()
    hold = sip_workdir / "cancel_after_8s.xml"
    hold.write_text(cancel.replace('<pause milliseconds="1000"/>', '<pause milliseconds="8000"/>'))
    # Four calls straight to the first worker, behind the front's back: it is full.
    filler = await peers(sipp(hold, sip_workdir, "-s", "rule-fill", "-m", "4", "-l", "4", "-r", "20",
                              f"127.0.0.1:{port}", timeout_s=60))
    for _ in range(4):
        assert (await webhook.next("/rule"))["callee"].startswith("sip:rule-fill@")
    caller = await peers(sipp(HERE / "errors" / "cancel_ringing.xml", sip_workdir, "-s", "rule-front",
                              f"127.0.0.1:{SIP_ENV.sip_port}", timeout_s=60))
    routed = await webhook.next("/rule")  # another worker took it
    assert routed["callee"].startswith("sip:rule-front@"), routed
    assert await caller.wait(40) == 0, caller.text()[-2000:]  # 100, then CANCEL: 200 and 487, no 486
    assert await filler.wait(40) == 0, filler.text()[-2000:]
    new_lines = front_log.read_text(errors="replace")[len(seen):]
    assert f"sip:127.0.0.1:{port} answered 486" in new_lines, new_lines[-2000:]
