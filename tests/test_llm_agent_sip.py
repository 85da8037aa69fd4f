"""The LLM agent's transfer tool on a real inbound SIP call, end to end.

sipp calls the session's UA node directly (127.0.0.1:SIP_ENV.sip_port, `-key callee`, no rule
matches, so the webhook gets the call) with tests/sip/uac_refer_speech.xml: Piper speech over
RTP (PCMA), then it takes the agent's REFER (202, a NOTIFY with a 200 sipfrag) and answers the
BYE that follows. The webhook body names the call; the agent (runner.run_agent, accept=True on
ws://<server>/call/sip?id=<call id>, as voxray/agents/llm/inbound.py runs it) greets, the
caller's sentence becomes asrFinal, and the model (tests/chat_stub.py on a loopback port)
answers a short text and a `transfer` tool call to a playbook target, its arguments in pieces
across SSE events and the SSE stream cut mid-line into HTTP chunks. The agent speaks the text,
then sends `refer`; the REFER's progress comes back as `other` events, the final one 200, and
the UA node ends the call as "transferred".

Needs what tests/test_sip.py needs (pjsua2, sipp, sox) and Piper for the caller's voice. About
a minute on 2 cores. Run alone: .venv/bin/python -m pytest -q tests/test_llm_agent_sip.py
"""

from __future__ import annotations

import asyncio
import json
import re
import subprocess
from pathlib import Path

import pytest

from tests.chat_stub import ChatStub, Reply
from tests.sip_env import SIP_ENV
from tests.test_sip import (  # noqa: F401 (fixtures); skips where pjsua2 or sipp is missing
    SENTENCE, Peer, render, sip_workdir, sipp, sipp_messages, webhook,
)
from voxray.agents.llm.chat_stream import ChatClient
from voxray.agents.llm.playbook import parse_playbook
from voxray.agents.llm.runner import run_agent
from voxray.speech import conversation, write_wav

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(300)]

TARGET = "sip:transfer-target@127.0.0.1"
GREETING = "Hello, this is Acme. How can I help?"
ANSWER = ["Sure, ", "I will put you through ", "to our support team now."]
SUMMARY = "The caller needed help with an account and was transferred to support."
# SENTENCE ("Hello, I need help with my account.") is what tests/test_sip.py checks Whisper
# hears over G.711; any one of these words is enough here.
KEYWORDS = ("account", "help")
PLAYBOOK = f"""---
llm:
  provider: openai
  model: stub-model
greeting: "{GREETING}"
goodbye: "Goodbye!"
interruption:
  strategy: none
transfer:
  targets:
    support: "{TARGET}"
    sales: "sip:sales-desk@127.0.0.1"
posthook:
  summary: short
---
You answer the phone for Acme. Transfer callers to the department they need.
"""


def _failed_transfer(req: dict) -> bool:
    return any(m["role"] == "system" and "transfer to" in (m.get("content") or "") and "failed" in m["content"]
               for m in req["messages"])


def script(req: dict) -> Reply:
    """The model: the caller's request gets a short answer and the transfer tool (arguments in
    pieces); a failed transfer is apologized for and hung up on, so the test ends at once."""
    if not req.get("stream"):
        return Reply(tokens=[SUMMARY])
    if _failed_transfer(req):
        return Reply(tokens=["Sorry, the transfer did not work."],
                     tool_calls=[("hangup", ['{"reason": "transfer failed"}'])])
    return Reply(tokens=ANSWER, tool_calls=[("transfer", ['{"tar', 'get": "sup', 'port"', "}"])],
                 split_bytes=29)


@pytest.fixture(scope="module")
def caller_alaw(sip_workdir) -> Path:  # noqa: F811
    """The caller: silence while the greeting plays, SENTENCE in the Piper voice, then silence
    (RTP goes on, so the end of the turn is heard, until the REFER and BYE). 8 kHz A-law, as
    sipp streams it (rtp_stream)."""
    pcm = conversation([SENTENCE], gap_s=60.0, lead_s=6.0)
    src, out = sip_workdir / "llm-transfer16k.wav", sip_workdir / "llm-transfer-alaw.wav"
    write_wav(src, pcm)
    subprocess.run(["sox", str(src), "-r", "8000", "-c", "1", "-e", "a-law", str(out)], check=True)
    return out


def _users(req: dict) -> list[str]:
    return [m["content"] for m in req["messages"] if m["role"] == "user"]


def _flag(value) -> str:
    """`other.extra` values as the wire writes them (strings: "200", "true")."""
    return str(value).lower()


async def test_llm_agent_transfers_an_inbound_sip_call_with_refer(voxray_server, webhook, caller_alaw, sip_workdir):  # noqa: F811
    scenario = render("uac_refer_speech.xml", sip_workdir, SPEECH=caller_alaw,
                      REFER_TIMEOUT_MS=120000, BYE_TIMEOUT_MS=30000)
    caller: Peer | None = None
    agent: asyncio.Task | None = None
    lines: list[str] = []
    try:
        async with ChatStub(script=script) as stub:
            async with ChatClient(stub.base_url, "stub-model") as client:
                caller = await sipp(scenario, sip_workdir, "-key", "callee", "llm-transfer",
                                    f"127.0.0.1:{SIP_ENV.sip_port}", timeout_s=200).start()
                hook = await webhook.next("/hook", timeout=60)
                assert hook["callee"].startswith("sip:llm-transfer@"), hook
                call_id = hook["call_id"]
                # As voxray/agents/llm/inbound.py answers a webhook's call.
                agent = asyncio.create_task(run_agent(
                    parse_playbook(PLAYBOOK, env={}), f"ws://{voxray_server}/call/sip?id={call_id}",
                    client=client, caller=hook["caller"], callee=hook["callee"], accept=True,
                    print_fn=lines.append, timeout_s=170))
                result = await asyncio.wait_for(asyncio.shield(agent), 180)
                # The caller took the REFER, reported 200 and answered the BYE.
                assert await caller.wait(60) == 0, caller.text()[-3000:] + "\n" + "\n".join(lines)
        log = "\n".join(lines)
        events, commands = result.events, result.commands

        # The call: accepted, greeted, the caller's sentence recognized.
        assert commands[0]["command"] == "accept", commands
        assert any(e["event"] == "answer" for e in events), events
        assert any(e["event"] == "trackEnd" and e.get("playId") == "greeting" for e in events), events
        finals = [e.get("text") or "" for e in events if e["event"] == "asrFinal"]
        assert finals, f"no asrFinal: {log}"

        # The model was asked with the caller's words and offered the transfer tool with the
        # playbook's targets only.
        streamed = [r for r in stub.requests if r.get("stream")]
        assert streamed, f"the model was never asked: {log}"
        first = streamed[0]
        assert first["messages"][0]["role"] == "system" and "Acme" in first["messages"][0]["content"]
        assert {"role": "assistant", "content": GREETING} in first["messages"]
        heard = " ".join(u for r in streamed for u in _users(r)).lower()
        assert any(k in heard for k in KEYWORDS), (heard, finals)
        transfer_spec = next(t["function"] for t in first["tools"] if t["function"]["name"] == "transfer")
        assert transfer_spec["parameters"]["properties"]["target"]["enum"] == ["sales", "support"]
        assert not any(_failed_transfer(r) for r in streamed), [r["messages"][-1] for r in streamed]

        # The answer was spoken on its own track, then `refer` to the target the name stands for.
        answer = [c for c in commands if c["command"] == "tts" and c.get("playId") == "a1"]
        assert "".join(c.get("text", "") for c in answer) == "".join(ANSWER), answer
        assert any(c.get("endOfStream") for c in answer), answer
        assert any(e["event"] == "trackStart" and e.get("playId") == "a1" for e in events), events
        refers = [c for c in commands if c["command"] == "refer"]
        assert refers == [{"command": "refer", "callee": TARGET}], commands
        assert commands.index(refers[0]) > commands.index(next(c for c in answer if c.get("endOfStream")))

        # The REFER's progress: `other` events from the SIP side, the last one final with 200.
        progress = [e for e in events if e["event"] == "other" and (e.get("extra") or {}).get("event") == "refer"]
        assert progress, f"no refer progress events: {events}"
        assert all(e.get("sender") == "sip" for e in progress), progress
        finals_refer = [e for e in progress if _flag(e["extra"].get("final")) == "true"]
        assert finals_refer and finals_refer[-1] is progress[-1], progress
        assert [str(e["extra"].get("code")) for e in finals_refer] == ["200"] * len(finals_refer), progress
        assert "system > transfer accepted" in lines, log

        # The call ended on the transfer: the UA node hung up ("transferred") and sent the BYE.
        hangup = next(e for e in events if e["event"] == "hangup")
        assert hangup.get("reason") == "transferred", hangup
        assert events.index(hangup) > events.index(finals_refer[0])
        assert result.hangup_reason == "transferred", result.hangup_reason
        assert not any(c["command"] == "hangup" for c in commands), commands  # no hangup of its own

        # What the caller got: the REFER to the target, NOTIFY answered, BYE.
        messages = sipp_messages(scenario, sip_workdir)
        assert re.search(r"REFER sip:", messages), messages[-3000:]
        assert re.search(r"Refer-To: <?sip:transfer-target@127\.0\.0\.1", messages), messages[-3000:]
        assert re.search(r"BYE sip:", messages), messages[-3000:]

        # The transfer's outcome in the history: the tool call as the model streamed it (its
        # pieces joined), and the tool's result; the summary saw both.
        call = next(m for m in result.messages if m["role"] == "assistant" and m.get("tool_calls"))
        fn = call["tool_calls"][0]["function"]
        assert fn["name"] == "transfer" and json.loads(fn["arguments"]) == {"target": "support"}, call
        tool = next(m for m in result.messages if m["role"] == "tool"
                    and m.get("tool_call_id") == call["tool_calls"][0]["id"])
        assert json.loads(tool["content"]) == {"status": "transferring", "target": TARGET}, tool
        assert not any(m["role"] == "tool" for r in streamed for m in r["messages"]), \
            "the model was asked again after the transfer"
        summary_req = [r for r in stub.requests if not r.get("stream")]
        assert len(summary_req) == 1, summary_req
        transcript = summary_req[0]["messages"][-1]["content"]
        assert "[agent called transfer(" in transcript and "transferring" in transcript, transcript
        assert result.summary == SUMMARY, result.summary
        assert result.summary_written, log
    finally:
        if agent is not None and not agent.done():
            agent.cancel()
            await asyncio.gather(agent, return_exceptions=True)
        if caller is not None:
            await caller.stop()

