"""The UA node's call life cycle (no Ray, no network): commands, events, inactivity."""

from __future__ import annotations

import asyncio
import json

import numpy as np
import pytest

from voxray.deployments.services import LocalModelServices
from voxray.protocol import events as ev
from voxray.ua_node.node import UaNodeCore
from voxray.ua_node.transport import MediaTransport


class PipeTransport(MediaTransport):
    """A transport whose 'network' is this test: it records what the node plays out."""

    kind = "pipe"

    def __init__(self) -> None:
        super().__init__()
        self.played: list[np.ndarray] = []
        self.closed = False

    async def send_audio(self, pcm16k: bytes) -> None:
        await super().send_audio(pcm16k)
        self.played.append(self.next_frame())

    async def close(self) -> None:
        self.closed = True


@pytest.fixture(scope="module")
def core() -> UaNodeCore:
    return UaNodeCore(LocalModelServices())


async def _open(core: UaNodeCore, call_id: str, **option) -> PipeTransport:
    transport = PipeTransport()

    async def factory(cid, opt):
        return transport, ev.Answer(track_id=cid)

    core.register_transport("pipe", factory)
    assert (await core.open_call(call_id, "pipe", option)).ok
    return transport


async def _events(core: UaNodeCore, call_id: str, until: str, timeout: float = 20) -> list[dict]:
    got: list[dict] = []
    deadline = asyncio.get_running_loop().time() + timeout
    while asyncio.get_running_loop().time() < deadline:
        batch = await core.next_events(call_id, 1.0)
        if batch is None:
            break
        got += [e.model_dump(by_alias=True) for e in batch]
        if any(e["event"] == until for e in got):
            return got
    raise AssertionError(f"no {until}: {[e['event'] for e in got]}")


async def test_commands_play_through_the_transport_and_events_come_back(core):
    t = await _open(core, "n1")
    r = await core.command("n1", json.dumps({"command": "tts", "text": "Hi there.", "playId": "a"}))
    assert r.ok
    got = await _events(core, "n1", "trackEnd")
    assert [e["event"] for e in got][0] == "answer"
    assert t.played and max(np.abs(f).max() for f in t.played) > 3000
    bad = await core.command("n1", '{"command":"tts","text":7}')
    assert not bad.ok and bad.code == 422
    missing = await core.command("nope", '{"command":"pause"}')
    assert not missing.ok and missing.code == 404
    assert not (await core.open_call("n1", "pipe", {})).ok  # id in use
    await core.end_call("n1", "done", "agent")
    assert t.closed
    tail = await _events(core, "n1", "hangup")
    assert tail[-1]["reason"] == "done"


async def test_silent_peer_is_hung_up_after_inactivity_timeout(core):
    t = await _open(core, "n2", inactivityTimeout=1)
    t.on_audio(np.zeros(320, np.int16).tobytes())  # one frame, then the peer vanishes
    got = await _events(core, "n2", "hangup", timeout=5)
    hangup = got[-1]
    assert (hangup["reason"], hangup["initiator"]) == ("inactivity_timeout", "server")
    assert t.closed


async def test_a_peer_that_refuses_while_the_call_is_set_up_is_reported_in_order(core):
    # A callee answering 486 before the INVITE's setup returned: its reject must reach the
    # agent, then the hangup, and the session the node attached must not be left running.
    transport = PipeTransport()

    async def factory(cid, opt):
        transport.emit(ev.RejectEvent(code=486, reason="Busy Here"))
        transport.peer_closed("rejected", "callee")
        return transport, None

    core.register_transport("busy", factory)
    assert (await core.open_call("n3", "busy", {})).ok
    got = await _events(core, "n3", "hangup", timeout=5)
    assert [e["event"] for e in got] == ["reject", "hangup"]
    assert got[0]["code"] == 486 and (got[1]["reason"], got[1]["initiator"]) == ("rejected", "callee")
    assert transport.closed and core.calls.get("n3") is None or core.calls["n3"].session.closed
