"""Admission control: which new calls are turned away, and when they are let in again."""

from __future__ import annotations

from voxray.ua_node.node import UaNodeCore
from voxray.ua_node.transport import MediaTransport

from voxray.admission import Admission, AdmissionSettings
from voxray.protocol import events as ev


class Calls:
    """The gate's view of the calls up."""

    def __init__(self, n: int = 0) -> None:
        self.n = n

    def __call__(self) -> int:
        return self.n


def test_max_calls_caps_concurrent_calls():
    up = Calls()
    gate = Admission(AdmissionSettings(max_calls=2, asr_latency_s=None), up)
    assert gate.refusal() is None
    up.n = 1
    assert gate.refusal() is None
    up.n = 2
    why = gate.refusal()
    assert why is not None and "max_calls 2" in why.text and why.reason == "max_calls"
    assert gate.refused == 1


def test_initial_limit_holds_a_burst_before_any_answer():
    up = Calls()
    gate = Admission(AdmissionSettings(initial_limit=4), up)
    admitted = 0
    for _ in range(50):  # 50 callers at once, no ASR answer yet
        if gate.refusal() is None:
            admitted += 1
            up.n += 1
    assert admitted == 4 and gate.refused == 46


def test_slow_answers_shrink_the_limit_and_fast_ones_grow_it_back():
    up = Calls(10)
    s = AdmissionSettings(asr_latency_s=4.0, initial_limit=16, backoff=0.5, cooldown_s=5)
    gate = Admission(s, up)
    gate.observe_asr(9.0, now=100.0)
    assert gate.limit == 5.0  # 0.5 x the 10 calls up
    gate.observe_asr(9.0, now=101.0)
    assert gate.limit == 5.0  # same congestion episode: one decrease per cooldown
    why = gate.refusal()
    assert why is not None and why.reason == "asr_latency" and "9.0 s" in why.text
    up.n = 4  # calls ended; answers are fast again
    for i in range(40):
        gate.observe_asr(0.5, now=110.0 + i)
        up.n = int(gate.limit) - 1  # new calls take the room as it opens
    assert gate.limit > 8  # additive increase: about +1 per `limit` fast answers
    assert gate.refusal() is None
    gate.observe_asr(20.0, now=200.0)
    assert gate.limit <= 0.5 * max(up.n, 1) + 1e-9


def test_limit_changes_are_reported():
    seen: list[float] = []
    gate = Admission(AdmissionSettings(asr_latency_s=4.0, initial_limit=8, backoff=0.5), Calls(6), seen.append)
    gate.observe_asr(9.0, now=0.0)
    gate.observe_asr(1.0, now=1.0)  # 6 calls up, limit 3: it binds, so it grows
    assert seen == [3.0, 3.0 + 1 / 3]


def test_limit_does_not_grow_while_it_is_not_what_holds_calls_back():
    up = Calls(1)
    gate = Admission(AdmissionSettings(asr_latency_s=4.0, initial_limit=8), up)
    for i in range(100):
        gate.observe_asr(0.5, now=float(i))
    assert gate.limit == 8  # one quiet call says nothing about room for more


def test_min_limit_and_disabled_gate():
    up = Calls(0)
    gate = Admission(AdmissionSettings(asr_latency_s=1.0, min_limit=2, cooldown_s=0), up)
    for i in range(5):
        gate.observe_asr(30.0, now=float(i))
    assert gate.limit == 2
    off = Admission(AdmissionSettings(max_calls=None, asr_latency_s=None), Calls(10_000))
    for i in range(5):
        off.observe_asr(60.0, now=float(i))
    assert off.refusal() is None and off.refused == 0


class _Null(MediaTransport):
    kind = "null"

    async def close(self) -> None:
        pass


async def test_ua_node_refuses_calls_over_its_cap_with_503():
    from voxray.deployments.services import LocalModelServices

    core = UaNodeCore(LocalModelServices(), admission=Admission(AdmissionSettings(max_calls=1, asr_latency_s=None)))

    async def factory(cid, opt):
        return _Null(), ev.Answer(track_id=cid)

    core.register_transport("null", factory)
    try:
        assert (await core.open_call("a1", "null", {})).ok
        refused = await core.open_call("a2", "null", {})
        assert not refused.ok and refused.code == 503 and "max_calls" in refused.error
        await core.end_call("a1", "hangup", "agent")
        assert (await core.open_call("a3", "null", {})).ok  # room again once a call ended
    finally:
        await core.shutdown()
