"""The whole call loop on Ray Serve over real WebSockets, with real speech and models."""

from __future__ import annotations

import asyncio
import json
import time

import httpx
import numpy as np
import pytest

from tests.conftest import SENTENCE
from tests.test_models import wer
from tests.wsclient import CallClient
from voxray.media.codecs import make_codec
from voxray.media.resample import resample

pytestmark = pytest.mark.e2e


async def _invite(server: str, codec: str = "pcm", call_id: str | None = None, **option) -> CallClient:
    url = f"ws://{server}/call" + (f"?id={call_id}" if call_id else "")
    client = await CallClient.connect(url)
    await client.send({"command": "invite", "option": {"codec": codec, "caller": "tester", **option}})
    await client.wait_for("answer", timeout=15)
    return client


@pytest.mark.parametrize("codec", ["pcm", "pcmu"])
async def test_spoken_sentence_becomes_asr_final_and_tts_audio_comes_back(voxray_server, speech16k, codec):
    client = await _invite(voxray_server, codec)
    try:
        # The client offered permessage-deflate (websockets' default); the ingress declines it.
        assert client.ws.response.headers.get("Sec-WebSocket-Extensions") is None
        c = make_codec(codec)
        pcm = resample(np.concatenate([np.zeros(4000, np.int16), speech16k]), 16000, c.sample_rate)
        frame = c.frame_bytes(20)
        silence = c.encode(np.zeros(c.sample_rate // 50, np.int16))
        await client.stream(c.encode(pcm), frame, pad=silence[:1])
        # Keep the line open with silence, as a phone would, until the result arrives.
        async def keep_alive():
            while True:
                await client.ws.send(silence)
                await asyncio.sleep(0.02)
        ka = asyncio.create_task(keep_alive())
        try:
            final = await client.wait_for("asrFinal", timeout=30)
            await client.wait_for("eou", timeout=5)
        finally:
            ka.cancel()
        assert wer(SENTENCE, final["text"]) <= 0.5, final["text"]
        order = [n for n in client.names() if n in ("answer", "speaking", "silence", "asrFinal", "eou")]
        assert order == ["answer", "speaking", "silence", "asrFinal", "eou"]

        n_before = len(client.events)
        await client.send({"command": "tts", "text": "Sure, a table for two at seven.", "playId": "r1"})
        end = await client.wait_for("trackEnd", timeout=30, after=n_before, playId="r1")
        await client.wait_for("trackStart", timeout=1, after=n_before, playId="r1")
        assert all(len(f) == frame for _, f in client.audio)
        out = c.decode(b"".join(f for _, f in client.audio))
        assert np.abs(out).max() > 3000, "TTS audio is silent"
        assert abs(end["duration"] / 1000 - len(client.audio) * 0.02) < 0.06
        keys = {e["key"] for e in client.events if e["event"] == "metrics"}
        assert {"ttfb.asr.whisper", "ttfb.tts.piper"} <= keys

        await client.send({"command": "hangup", "reason": "done"})
        hangup = await client.wait_for("hangup", timeout=10)
        assert hangup["reason"] == "done" and hangup["initiator"] == "agent"
        for key in ("startTime", "answerTime", "hangupTime"):
            assert hangup[key].endswith("+00:00")
        assert hangup["startTime"] <= hangup["answerTime"] <= hangup["hangupTime"]
        await asyncio.wait_for(client.closed.wait(), 5)
    finally:
        await client.close()


async def test_bad_input_gets_error_events_and_the_call_goes_on(voxray_server):
    client = await CallClient.connect(f"ws://{voxray_server}/call")
    try:
        # Before invite: audio and call commands are refused, the socket stays.
        await client.ws.send(b"\0" * 640)
        e = await client.wait_for("error")
        assert e["sender"] == "media" and e["code"] == 409
        await client.send({"command": "tts", "text": "too early"})
        e = await client.wait_for("error", after=1)
        assert e["code"] == 409 and "invite" in e["error"]
        await client.send({"command": "invite", "option": {"codec": "pcm"}})
        await client.wait_for("answer")

        bad = [
            ("{oops", 400, "malformed JSON"),
            (json.dumps({"command": "teleport"}), 404, "unknown command"),
            (json.dumps({"command": "tts", "text": 42}), 422, "text"),
            (json.dumps({"command": "invite"}), 409, "already set up"),
            (json.dumps({"command": "tts", "text": "x" * 300_000}), 413, "exceeds"),
        ]
        for text, code, fragment in bad:
            n = len(client.events)
            await client.send(text)
            e = await client.wait_for("error", after=n)
            assert e["code"] == code and fragment in e["error"], e
        n = len(client.events)
        await client.ws.send(b"\0" * 100_000)  # oversized binary frame
        e = await client.wait_for("error", after=n)
        assert e["code"] == 413
        n = len(client.events)
        await client.ws.send(b"\0" * 641)  # not whole 16-bit samples
        e = await client.wait_for("error", after=n)
        assert e["sender"] == "media"

        # The call still works after all of that.
        n = len(client.events)
        await client.send({"command": "tts", "text": "Still here.", "playId": "ok"})
        await client.wait_for("trackEnd", after=n, playId="ok", timeout=20)
        assert client.audio
    finally:
        await client.close()


async def test_call_list_and_kill(voxray_server):
    client = await _invite(voxray_server, call_id="kill-me", callee="agent-7")
    try:
        async with httpx.AsyncClient(base_url=f"http://{voxray_server}") as http:
            listed = (await http.get("/call/lists")).json()["calls"]
            mine = [c for c in listed if c["id"] == "kill-me"]
            assert mine and mine[0]["callee"] == "agent-7" and mine[0]["path"] == "/call"
            # active-call's documented shape, and its running code's route and shape.
            assert mine[0]["call_type"] == "websocket" and mine[0]["option"]["callee"] == "agent-7"
            assert mine[0]["created_at"]
            code = [c for c in (await http.get("/list")).json()["active_calls"] if c["id"] == "kill-me"]
            assert code and code[0]["callType"] == "websocket" and code[0]["option"]["callee"] == "agent-7"
            assert (await http.post("/call/kill/nope")).status_code == 404
            assert (await http.get("/kill/nope")).json() == {"status": "not_found", "id": "nope"}
            r = await http.post("/call/kill/kill-me")
            assert r.status_code == 200 and r.json() is True
            hangup = await client.wait_for("hangup", timeout=10)
            assert hangup["reason"] == "killed" and hangup["initiator"] == "system"
            await asyncio.wait_for(client.closed.wait(), 5)
            for _ in range(50):
                listed = (await http.get("/call/lists")).json()["calls"]
                if not any(c["id"] == "kill-me" for c in listed):
                    break
                await asyncio.sleep(0.1)
            assert not any(c["id"] == "kill-me" for c in listed)
    finally:
        await client.close()


async def test_duplicate_call_id_is_refused(voxray_server):
    first = await _invite(voxray_server, call_id="dup-1")
    try:
        second = await CallClient.connect(f"ws://{voxray_server}/call?id=dup-1")
        e = await second.wait_for("error")
        assert e["code"] == 409
        await asyncio.wait_for(second.closed.wait(), 5)
        # The first call is untouched.
        n = len(first.events)
        await first.send({"command": "tts", "text": "Fine.", "playId": "x"})
        await first.wait_for("trackEnd", after=n, timeout=20)
    finally:
        await first.close()


async def test_demo_agent_holds_the_whole_conversation(voxray_server, artifacts):
    """The reference agent: greets, echoes what it heard, hangs up on goodbye."""
    from voxray.agents import demo
    from voxray.speech import espeak_speech, write_wav

    rate = 16000
    caller = np.concatenate([
        np.zeros(rate // 2, np.int16), espeak_speech(SENTENCE, rate),
        np.zeros(rate * 5, np.int16), espeak_speech("Goodbye.", rate), np.zeros(rate * 2, np.int16),
    ])
    wav = artifacts / "demo_caller.wav"
    write_wav(wav, caller)
    lines: list[str] = []
    events = await demo.run(f"ws://{voxray_server}/call", caller_wav=str(wav),
                            out_wav=str(artifacts / "demo_agent_voice.wav"), print_fn=lines.append,
                            timeout_s=90)
    names = [e["event"] for e in events]
    finals = [e["text"] for e in events if e["event"] == "asrFinal"]
    assert names[0] == "answer" and names[-1] == "hangup"
    assert len(finals) >= 2 and wer(SENTENCE, finals[0]) <= 0.5, finals
    assert "bye" in finals[-1].lower()
    assert events[-1]["reason"] == "autohangup"
    assert any(line.startswith("agent  > You said:") for line in lines)
    assert names.count("trackEnd") == len(finals) + 1  # greeting + one reply per utterance


async def test_streaming_tts_then_barge_in_cuts_audio_over_the_socket(voxray_server, speech16k):
    client = await _invite(voxray_server, "pcm")
    try:
        text = ("Let me tell you about our opening hours, which are quite long: we open at nine in the "
                "morning, every day of the week, and close at six in the evening.")
        for word in text.split(" "):
            await client.send({"command": "tts", "text": word + " ", "streaming": True, "playId": "llm"})
            await asyncio.sleep(0.03)
        await client.send({"command": "tts", "text": "", "streaming": True, "endOfStream": True, "playId": "llm"})
        await client.wait_for("trackStart", timeout=20, playId="llm")
        await asyncio.sleep(1.0)
        # The caller talks over the agent, in real time.
        audio = np.concatenate([speech16k, np.zeros(16000, np.int16)]).tobytes()
        sender = asyncio.create_task(client.stream(audio, 640))
        cut = await client.wait_for("interruption", timeout=20, playId="llm")
        seen_cut = time.monotonic()
        await sender
        assert cut["current"] < cut["totalDuration"] and cut["subtitle"].startswith("Let me tell you")
        late = [t for t, _ in client.audio if t > seen_cut + 0.06]
        assert late == [], f"{len(late)} audio frames arrived after the interruption"
        end = await client.wait_for("trackEnd", playId="llm")
        assert end["duration"] == cut["current"]
        final = await client.wait_for("asrFinal", timeout=30)
        assert wer(SENTENCE, final["text"]) <= 0.5
    finally:
        await client.close()


async def test_play_refuses_files_outside_allowed_folders_and_call_goes_on(voxray_server):
    client = await _invite(voxray_server)
    try:
        await client.send({"command": "play", "url": "/etc/passwd"})
        e = await client.wait_for("error")
        assert e["code"] == 403 and "allowed" in e["error"]
        n = len(client.events)
        await client.send({"command": "play", "url": "gopher://example/x.wav"})
        e = await client.wait_for("error", after=n)
        assert e["code"] == 400 and "scheme" in e["error"]
        n = len(client.events)
        await client.send({"command": "tts", "text": "Still fine.", "playId": "ok"})
        await client.wait_for("trackEnd", after=n, playId="ok", timeout=20)
    finally:
        await client.close()
