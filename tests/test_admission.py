"""Admission control: which new calls are turned away, and when they are let in again."""

from __future__ import annotations

from voxray.admission import Admission, AdmissionSettings
from voxray.protocol import events as ev
from voxray.ua_node.node import UaNodeCore
from voxray.ua_node.transport import MediaTransport


def test_max_calls_caps_concurrent_calls():
    gate = Admission(AdmissionSettings(max_calls=2, asr_latency_s=None))
    assert gate.refusal(0) is None and gate.refusal(1) is None
    why = gate.refusal(2)
    assert why is not None and "max_calls 2" in why and gate.reason_tag(why) == "max_calls"
    assert gate.refused == 1


def test_slow_asr_refuses_until_the_window_forgets_it():
    gate = Admission(AdmissionSettings(asr_latency_s=4.0, window_s=30, min_samples=3))
    gate.observe_asr(9.0, now=100.0)
    gate.observe_asr(9.5, now=101.0)
    assert gate.refusal(5, now=102.0) is None  # two answers are not evidence yet
    gate.observe_asr(0.5, now=102.0)
    assert gate.refusal(5, now=102.5) is not None  # median 9.0 s > 4 s
    gate.observe_asr(0.4, now=103.0)
    gate.observe_asr(0.6, now=104.0)
    assert gate.refusal(5, now=104.5) is None  # median back to 0.6 s
    gate.observe_asr(12.0, now=110.0)
    gate.observe_asr(12.0, now=111.0)
    gate.observe_asr(12.0, now=112.0)
    why = gate.refusal(0, now=113.0)
    assert why is not None and gate.reason_tag(why) == "asr_latency" and "9.2 s, limit 4 s" in why
    assert gate.refusal(0, now=150.0) is None  # the slow answers aged out of the window
    assert gate.asr_p50(now=150.0) is None


def test_disabled_gate_admits_everything():
    gate = Admission(AdmissionSettings(max_calls=None, asr_latency_s=None))
    for i in range(5):
        gate.observe_asr(60.0, now=float(i))
    assert gate.refusal(10_000, now=5.0) is None and gate.refused == 0


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
