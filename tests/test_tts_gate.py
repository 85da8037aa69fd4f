"""The TTS replica's gate (deployments/tts_gate.py): first pieces of tracks before later ones."""

from __future__ import annotations

import asyncio

import pytest

from voxray.deployments.tts_gate import FIRST, LATER, PriorityGate


async def _job(gate: PriorityGate, name: str, prio: int, order: list[str], hold: asyncio.Event | None = None):
    async with gate.slot(prio):
        order.append(name)
        if hold is not None:
            await hold.wait()
        await asyncio.sleep(0.01)


async def test_first_pieces_overtake_later_ones_that_waited_longer():
    gate, order, hold = PriorityGate(1), [], asyncio.Event()
    running = asyncio.create_task(_job(gate, "busy", LATER, order, hold))
    await asyncio.sleep(0)
    waiting = [asyncio.create_task(_job(gate, n, p, order)) for n, p in
               (("rest-1", LATER), ("rest-2", LATER), ("sure-1", FIRST), ("sure-2", FIRST))]
    await asyncio.sleep(0.01)
    assert gate.waiting == 4
    hold.set()
    await asyncio.gather(running, *waiting)
    assert order == ["busy", "sure-1", "sure-2", "rest-1", "rest-2"]


async def test_slots_bound_what_runs_at_once():
    gate, live, peak = PriorityGate(2), [0], [0]

    async def job():
        async with gate.slot(FIRST):
            live[0] += 1
            peak[0] = max(peak[0], live[0])
            await asyncio.sleep(0.01)
            live[0] -= 1
    await asyncio.gather(*(job() for _ in range(10)))
    assert peak[0] == 2 and gate.waiting == 0 and gate._busy == 0


async def test_a_cancelled_waiter_gives_up_its_place_and_loses_no_slot():
    gate, order, hold = PriorityGate(1), [], asyncio.Event()
    running = asyncio.create_task(_job(gate, "busy", LATER, order, hold))
    await asyncio.sleep(0)
    gone = asyncio.create_task(_job(gate, "gone", FIRST, order))
    after = asyncio.create_task(_job(gate, "after", LATER, order))
    await asyncio.sleep(0.01)
    gone.cancel()
    hold.set()
    await asyncio.gather(running, after)
    with pytest.raises(asyncio.CancelledError):
        await gone
    assert order == ["busy", "after"] and gate._busy == 0
    async with gate.slot(LATER):  # the slot is free again
        pass


def test_a_gate_needs_a_slot():
    with pytest.raises(ValueError):
        PriorityGate(0)
