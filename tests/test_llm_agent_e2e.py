"""The LLM agent on a real voxray: spoken multi-turn calls over /call, end to end.

Needs what every e2e test needs: the `voxray_server` fixture (an embedded single-node Ray
with the Serve app: VAD, Whisper ASR, Piper TTS, the call registry), and Piper for the
caller's voice (voxray.speech.conversation, offline). The model is tests/chat_stub.py on a
loopback port, answering from what it is asked, so no key or network is used. About a minute
per test on 2 cores. Run alone: .venv/bin/python -m pytest -q tests/test_llm_agent_e2e.py
"""

from __future__ import annotations


import pytest

from tests.chat_stub import ChatStub, Reply
from tests.records import call_record
from voxray.agents.llm.chat_stream import ChatClient
from voxray.agents.llm.playbook import parse_playbook
from voxray.agents.llm.runner import run_agent
from voxray.speech import conversation, write_wav

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(240)]

PLAYBOOK = """---
llm:
  provider: openai
  model: stub-model
greeting: "Hello, this is the clinic. How can I help?"
goodbye: "Goodbye!"
interruption:
  strategy: both
posthook:
  summary: short
---
You are the receptionist of a dental clinic.
"""
CLEANING = "Sure, we can book a cleaning for you on Monday."
SUMMARY = "The caller asked to book a teeth cleaning and then said goodbye."
LONG_ANSWER = ("We offer many services. A cleaning takes about an hour. We also do fillings, crowns and "
               "whitening, and our hygienists will check your gums and take x-rays when they are due. "
               "Most insurance plans are accepted, and we are open six days a week from eight to six.")


def _last_user(req: dict) -> str:
    users = [m["content"] for m in req["messages"] if m["role"] == "user"]
    return users[-1].lower() if users else ""


def script(req: dict) -> Reply:
    """The model: a goodbye ends the call; anything else gets an answer about a cleaning."""
    if not req.get("stream"):
        return Reply(tokens=[SUMMARY])
    last = _last_user(req)
    if "bye" in last:
        return Reply(tokens=["Thanks for calling."],
                     tool_calls=[("hangup", ['{"goodbye": "Good', 'bye!", "reason": "caller said goodbye"}'])])
    if "service" in last:
        return Reply(tokens=[w + " " for w in LONG_ANSWER.split()])
    return Reply(tokens=["Sure, ", "we can ", "book a cleaning ", "for you on Monday."])


async def _record(server: str, call_id: str) -> dict:
    rec = await call_record(server, call_id, ready=lambda r: bool(r["notes"]))
    assert rec, f"no record with notes for {call_id}"
    return rec


async def test_llm_agent_holds_a_spoken_call_and_files_its_summary(voxray_server, tmp_path):
    wav = tmp_path / "caller.wav"
    write_wav(wav, conversation(["Hello, I would like to book a teeth cleaning.", "Thank you, goodbye."],
                                gap_s=9.0))
    lines: list[str] = []
    async with ChatStub(script=script) as stub:
        async with ChatClient(stub.base_url, "stub-model") as client:
            result = await run_agent(parse_playbook(PLAYBOOK, env={}), f"ws://{voxray_server}/call?id=llm-e2e-1",
                                     client=client, caller="tester", caller_wav=str(wav),
                                     print_fn=lines.append, timeout_s=150)
    finals = [e["text"] for e in result.events if e["event"] == "asrFinal"]
    assert any("cleaning" in t.lower() for t in finals), finals
    assert "bye" in finals[-1].lower(), finals
    streamed = [r for r in stub.requests if r.get("stream")]
    assert len(streamed) >= 2
    assert "cleaning" in _last_user(streamed[0])
    # The first answer went out as streamed tts on one playId and was played.
    answer = [c for c in result.commands if c["command"] == "tts" and c.get("streaming")]
    play_id = answer[0]["playId"]
    assert "".join(c["text"] for c in answer if c["playId"] == play_id) == CLEANING
    assert any(e["event"] == "trackEnd" and e.get("playId") == play_id for e in result.events)
    # The second turn's request held the first exchange.
    assert {"role": "assistant", "content": CLEANING} in streamed[-1]["messages"]
    # The hangup tool: goodbye spoken on the answer's track, then `hangup` after its trackEnd.
    assert {"command": "hangup", "reason": "caller said goodbye", "initiator": "agent"} in result.commands
    hangup = next(e for e in result.events if e["event"] == "hangup")
    assert hangup["initiator"] == "agent"
    # The summary: one non-streamed request, attached to the call record.
    assert result.summary == SUMMARY and result.summary_written
    rec = await _record(voxray_server, "llm-e2e-1")
    assert rec["notes"]["summary"] == SUMMARY and "Caller:" in rec["notes"]["transcript"]
    assert (rec["reason"], rec["initiator"]) == ("caller said goodbye", "agent")


async def test_llm_agent_barge_in_keeps_only_what_the_caller_heard(voxray_server, tmp_path):
    wav = tmp_path / "caller.wav"
    # The second sentence comes while the long answer to the first is still playing.
    write_wav(wav, conversation(["What services do you offer?", "Sorry, how much is a cleaning?",
                                 "Okay, goodbye."], gap_s=5.0))
    async with ChatStub(script=script) as stub:
        async with ChatClient(stub.base_url, "stub-model") as client:
            result = await run_agent(parse_playbook(PLAYBOOK, env={}), f"ws://{voxray_server}/call?id=llm-e2e-2",
                                     client=client, caller="tester", caller_wav=str(wav),
                                     print_fn=lambda _: None, timeout_s=150)
    cut = [e for e in result.events if e["event"] == "interruption" and e.get("playId", "").startswith("a")]
    assert cut, "the caller's second sentence did not barge in on the long answer"
    later = [r for r in stub.requests if r.get("stream") and any(
        m["role"] == "assistant" and (m.get("content") or "").endswith("…") for m in r["messages"])]
    assert later, "no later request carried the cut answer"
    heard = next(m["content"] for m in later[0]["messages"] if m["role"] == "assistant"
                 and (m.get("content") or "").endswith("…"))
    assert LONG_ANSWER.startswith(heard[:-1]) and len(heard) < len(LONG_ANSWER)
    assert any(c["command"] == "hangup" for c in result.commands)
