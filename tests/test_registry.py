"""The call registry's rules (no Ray): listing, kill requests, and replicas that vanish."""

from __future__ import annotations

import asyncio

from voxray.deployments.registry import CallInfo, RegistryCore


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def call(call_id: str, replica: str) -> CallInfo:
    return CallInfo(id=call_id, replica=replica, path="/call", codec="pcm",
                    created_at=f"2026-11-25T00:00:0{call_id[-1]}Z")


async def test_kill_requests_reach_the_replica_that_holds_the_call():
    reg = RegistryCore()
    reg.register(call("c1", "r1"))
    poll = asyncio.create_task(reg.wait_kills("r1", 5.0))
    await asyncio.sleep(0)
    assert reg.request_kill("c1") is True
    assert await asyncio.wait_for(poll, 1) == ["c1"]
    assert reg.request_kill("nope") is False


async def test_calls_of_a_replica_that_stopped_polling_are_forgotten():
    clock = Clock()
    reg = RegistryCore(replica_timeout_s=35, clock=clock)
    reg.register(call("c1", "alive"))
    reg.register(call("c2", "dead"))
    for _ in range(5):  # "alive" keeps its long poll going; "dead" was killed after registering
        clock.now += 10
        assert await reg.wait_kills("alive", 0.0) == []
    assert [c.id for c in reg.list()] == ["c1"]
    assert reg.request_kill("c2") is False  # the API answers 404
    assert reg.request_kill("c1") is True


async def test_a_replica_inside_a_long_poll_is_alive_however_long_it_waits():
    clock = Clock()
    reg = RegistryCore(replica_timeout_s=35, clock=clock)
    reg.register(call("c1", "r1"))
    poll = asyncio.create_task(reg.wait_kills("r1", 5.0))
    await asyncio.sleep(0)
    clock.now += 100
    assert [c.id for c in reg.list()] == ["c1"]
    assert reg.request_kill("c1") is True
    assert await asyncio.wait_for(poll, 1) == ["c1"]


def test_calls_on_a_dead_node_leave_with_a_record_of_why():
    reg = RegistryCore()
    reg.register(call("c1", "r1").model_copy(update={"node": "n1"}))
    reg.register(call("c2", "r2").model_copy(update={"node": "n2"}))
    assert reg.nodes() == {"n1", "n2"}
    reg.forget_nodes({"n2"})
    assert [c.id for c in reg.list()] == ["c1"]
    lost = reg.take_lost()
    assert [(info.id, why) for info, why in lost] == [("c2", "node_lost")]
    assert reg.take_lost() == []  # each lost call is recorded once


def test_a_silent_replica_s_calls_are_recorded_as_replica_lost():
    from voxray.deployments.registry import lost_record

    clock = Clock()
    reg = RegistryCore(replica_timeout_s=35, clock=clock)
    reg.register(call("c1", "r1"))
    clock.now += 36
    [(info, why)] = reg.take_lost()
    rec = lost_record(info, why, "2026-11-25T00:01:00Z")
    assert (rec.id, rec.reason, rec.initiator, rec.start_time) == ("c1", "replica_lost", "system", info.created_at)


def test_a_replaced_registry_is_filled_again_by_each_replica_s_sync():
    reg = RegistryCore()  # a new, empty registry after the old one's node went
    reg.register(call("c9", "r1"))  # a call r1 has since ended, never unregistered here
    reg.sync("r1", [call("c1", "r1"), call("c2", "r1")])
    reg.sync("r2", [call("c3", "r2")])
    assert [c.id for c in reg.list()] == ["c1", "c2", "c3"]
