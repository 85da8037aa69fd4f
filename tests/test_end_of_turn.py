"""Reading a pause's transcript: finished, cut short, or neither (pure logic)."""

from __future__ import annotations

import pytest

from voxray.media.end_of_turn import EouBounds, classify, decide


@pytest.mark.parametrize("text", [
    "I want to cancel my subscription.", "Can you hear me?", "Thank you, goodbye!",
    "Who am I speaking with?", "Yes, I do.", "I like that.", "Turn it on.",
])
def test_finished_sentences(text):
    assert classify(text) == "complete"


@pytest.mark.parametrize("text", [
    "I would like to", "I would like to.", "My number is, um", "and", "I need a table for",
    "So the thing is,", "I was thinking that maybe...", "Let me check my, uh.", "Because",
])
def test_thoughts_cut_short(text):
    assert classify(text) == "incomplete"


@pytest.mark.parametrize("text", ["", "Hello there", "okay", "Seven thirty", "Hello?", "Yes.", "Thank you."])
def test_neither(text):
    assert classify(text) == "unknown"


def test_each_verdict_waits_its_bound():
    bounds = EouBounds(complete_ms=150, unknown_ms=500, incomplete_ms=1500)
    assert decide("That is all.", bounds).wait_ms == 150
    assert decide("That is all", bounds).wait_ms == 500
    assert decide("That is all and", bounds).wait_ms == 1500


def test_bounds_must_be_ordered():
    with pytest.raises(ValueError):
        EouBounds(complete_ms=600, unknown_ms=480, incomplete_ms=1200)
