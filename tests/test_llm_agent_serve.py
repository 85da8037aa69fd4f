"""The LLM agent as a Serve deployment: an inbound SIP call answered inside the cluster.

A second voxray app is deployed beside the session's (as tests/test_security.py does), with
`[agent] enabled`, API tokens on and its own call records, on route prefix /llm. sipp calls the
session's UA node; the UA node's webhook POST (the session's webhook server, tests/conftest.py)
is handed as it came to the app's `POST /llm/agent/webhook`, which is what a UA node whose
`webhook_url` points there would do. The agent replica connects /llm/call/sip?id=... with the
token, accepts, greets, answers the caller's first turn from the model (tests/chat_stub.py on
a loopback port, scripted), and on the caller's goodbye the model's hangup tool ends the call:
sipp gets the BYE. The summary lands on the call record.

Needs what tests/test_sip.py needs (pjsua2, sipp, sox) and Piper for the caller's voice. About
two minutes on 2 cores (the second app loads its own models). Run alone:
    .venv/bin/python -m pytest -q tests/test_llm_agent_serve.py
"""

from __future__ import annotations

import asyncio
import subprocess
from pathlib import Path

import httpx
import numpy as np
import pytest

from tests.chat_stub import ChatStub, Reply
from tests.records import call_record
from tests.sip_env import SIP_ENV
from tests.test_sip import Peer, render, sipp, webhook  # noqa: F401 (fixture); skips where pjsua2 or sipp is missing
from voxray.config import Scaling, VoxrayConfig
from voxray.speech import conversation, write_wav

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(480)]

APP = "voxray-llm"
PREFIX = "/llm"
TOKEN = "s3cret-agent-token"
GREETING = "Hello, this is the clinic. How can I help?"
SUMMARY = "The caller asked to book a teeth cleaning and said goodbye."
PLAYBOOK = """---
llm:
  provider: openai
  model: stub-model
  baseUrl: {base_url}
greeting: "{greeting}"
goodbye: "Goodbye!"
interruption:
  strategy: none
posthook:
  summary: short
---
You are the receptionist of a dental clinic.
"""


def _users(req: dict) -> list[str]:
    return [m["content"] for m in req["messages"] if m["role"] == "user"]


def script(req: dict) -> Reply:
    """The model: the caller's second turn (or any goodbye) gets the hangup tool; else an answer."""
    if not req.get("stream"):
        return Reply(tokens=[SUMMARY])
    users = _users(req)
    if len(users) >= 2 or "bye" in (users[-1].lower() if users else ""):
        return Reply(tokens=["Thanks for calling."],
                     tool_calls=[("hangup", ['{"goodbye": "Good', 'bye!", "reason": "caller said goodbye"}'])])
    return Reply(tokens=["Sure, ", "we can ", "book a cleaning ", "for you on Monday."])


@pytest.fixture(scope="module")
def caller_alaw(artifacts) -> Path:
    """The caller: silence while the greeting plays, a request, a pause for the answer, goodbye.
    8 kHz A-law, as sipp streams it (rtp_stream)."""
    d = artifacts / "sip"
    d.mkdir(exist_ok=True)
    pcm = conversation(["Hello, I would like to book a teeth cleaning.", "Thank you, goodbye."],
                       gap_s=10.0, lead_s=6.0)
    pcm = np.concatenate([pcm, np.zeros(8 * 16000, np.int16)])  # RTP goes on until the agent's BYE
    src, out = d / "llm-caller16k.wav", d / "llm-caller-alaw.wav"
    write_wav(src, pcm)
    subprocess.run(["sox", str(src), "-r", "8000", "-c", "1", "-e", "a-law", str(out)], check=True)
    return out


def _config(server: str, base_url: str, cdr: Path) -> VoxrayConfig:
    config = VoxrayConfig()
    config.serve.app_name, config.serve.route_prefix = APP, PREFIX
    config.serve.host, port = "127.0.0.1", server.rsplit(":", 1)[1]
    config.serve.port = int(port)  # the agent's socket: this app, through the session's Serve proxy
    config.security.api_tokens = [TOKEN]
    config.security.api_token_env = ""
    config.security.cdr_path = str(cdr)
    # This app's own models are not used by SIP calls (the UA node's workers use the session
    # app's); one replica each keeps the machine free for the call.
    config.asr = Scaling(min_replicas=1, max_replicas=1)
    config.tts = Scaling(min_replicas=1, max_replicas=1)
    config.ingress.graceful_shutdown_timeout_s = 5  # deleting the app must not wait out a drain
    config.agent.enabled = True
    config.agent.playbook_text = PLAYBOOK.format(base_url=base_url, greeting=GREETING)
    config.agent.call_timeout_s = 150
    config.agent.scaling = Scaling(max_ongoing_requests=4, graceful_shutdown_timeout_s=5)
    return config


async def _agent_result(call_id: str, timeout: float = 60.0) -> dict:
    """The call's outcome from the agent replica (`running` until its summary is done)."""
    from ray import serve

    handle = serve.get_deployment_handle("LlmAgentDeployment", APP)
    out = None
    async with asyncio.timeout(timeout):
        while True:
            out = await handle.call_result.remote(call_id)
            if out is not None and out.get("status") != "running":
                return out
            await asyncio.sleep(0.5)


async def _record(server: str, call_id: str) -> dict:
    rec = await call_record(f"{server}{PREFIX}", call_id, token=TOKEN, ready=lambda r: bool(r["notes"].get("summary")),
                            timeout_s=20.0)
    assert rec, f"no call record with a summary for {call_id}"
    return rec


async def test_inbound_sip_call_is_answered_by_the_in_cluster_llm_agent(
        voxray_server, webhook, caller_alaw, artifacts, tmp_path):  # noqa: F811
    from ray import serve

    from voxray.cluster.app import build_app

    workdir = artifacts / "sip"
    async with ChatStub(script=script) as stub:
        config = _config(voxray_server, stub.base_url, tmp_path / "cdr.sqlite")
        app = build_app(config)
        await asyncio.to_thread(serve.run, app, name=APP, route_prefix=PREFIX)
        caller: Peer | None = None
        try:
            scenario = render("uac_speech_until_bye.xml", workdir, SPEECH=caller_alaw, BYE_TIMEOUT_MS=120000)
            caller = await sipp(scenario, workdir, "-key", "callee", "llm-desk", f"127.0.0.1:{SIP_ENV.sip_port}",
                                timeout_s=170).start()
            hook = await webhook.next("/hook", timeout=30)
            assert hook["callee"].startswith("sip:llm-desk@")
            call_id = hook["call_id"]
            async with httpx.AsyncClient(base_url=f"http://{voxray_server}", timeout=10.0,
                                         headers={"Authorization": f"Bearer {TOKEN}"}) as http:
                # The webhook is behind the API token, and names a call that is ringing.
                r = await http.post(f"{PREFIX}/agent/webhook", json=hook, headers={"Authorization": ""})
                assert r.status_code == 401, r.text
                r = await http.post(f"{PREFIX}/agent/webhook", json={**hook, "call_id": "no-such-call",
                                                                       "dialogId": "no-such-call"})
                assert r.status_code == 404, r.text
                r = await http.post(f"{PREFIX}/agent/webhook", content=b"{not json")
                assert r.status_code == 400, r.text
                # The UA node's body, as it came: the agent takes the call.
                r = await http.post(f"{PREFIX}/agent/webhook", json=hook)
                assert r.status_code == 200, r.text
                assert r.json() == {"id": call_id, "agent": "llm"}

                # The model's hangup tool ends the call: the caller gets the agent's BYE.
                assert await caller.wait(160) == 0, caller.text()[-3000:]

                out = await _agent_result(call_id)
                assert out["status"] == "ended", out
                events, commands = out["events"], out["commands"]
                assert commands[0]["command"] == "accept", commands
                assert any(e["event"] == "answer" for e in events), events
                # The greeting was played.
                assert {"event": "trackStart", "playId": "greeting"} in events, events
                assert {"event": "trackEnd", "playId": "greeting"} in events, events
                # A turn: the caller's words went to the model, its answer was streamed and played.
                streamed = [r for r in stub.requests if r.get("stream")]
                assert len(streamed) >= 2, [_users(r) for r in streamed]
                first = streamed[0]["messages"]
                assert "receptionist of a dental clinic" in first[0]["content"]
                assert {"role": "assistant", "content": GREETING} in first
                assert _users(streamed[0]) and _users(streamed[0])[0].strip()
                assert {"command": "tts", "playId": "a1", "streaming": True} in commands, commands
                assert {"event": "trackEnd", "playId": "a1"} in events, events
                # The next request held that exchange (the answer as far as the caller heard it).
                assert any(m["role"] == "assistant" and (m.get("content") or "").startswith("Sure")
                           for m in streamed[-1]["messages"]), streamed[-1]["messages"]
                # The hangup tool: `hangup` from the agent, and the call ended on it.
                assert {"command": "hangup", "reason": "caller said goodbye", "initiator": "agent"} in commands
                hangup = next(e for e in events if e["event"] == "hangup")
                assert hangup["initiator"] == "agent", hangup
                assert out["hangup_reason"] == "caller said goodbye"
                # The summary: one more model request (not streamed), filed on this app's call record.
                assert out["summary"] == SUMMARY and out["summary_written"], out
                rec = await _record(voxray_server, call_id)
                assert rec["path"] == "/call/sip" and rec["initiator"] == "agent", rec
                assert rec["notes"]["summary"] == SUMMARY and "Caller:" in rec["notes"]["transcript"]

            stats = await serve.get_deployment_handle("LlmAgentDeployment", APP).stats.remote()
            assert stats["taken"] == 1 and stats["calls"] == 0, stats
        finally:
            if caller is not None:
                await caller.stop()
            await asyncio.to_thread(serve.delete, APP)
