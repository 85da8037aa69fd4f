"""The demo agent: the reference for agent authors.

A plain `websockets` client speaking the JSON protocol of PROTOCOL.md. It greets
the caller, says back what it heard, and hangs up when the caller says goodbye.
It never touches audio: on `/call` the same socket also carries the caller's
audio, which `--caller-wav` streams in (in real time, 20 ms frames) to stand in
for a phone.

Run: python -m voxray.agents.demo --url ws://127.0.0.1:8000/call --caller-wav caller.wav
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
import wave

import websockets

GREETING = "Hello! I am the voxray demo agent. Say something, and say goodbye to end the call."


def reply_for(text: str) -> tuple[str, bool]:
    """The agent's whole brain: (what to say, whether to hang up after it)."""
    words = text.lower()
    if "goodbye" in words or "good bye" in words or words.strip(" .!") == "bye":
        return "Goodbye! Thanks for calling.", True
    return f"You said: {text}", False


async def stream_wav(ws, path: str, started: asyncio.Event) -> None:
    """Stand-in for a phone: send a 16 kHz mono 16-bit WAV as 20 ms binary frames."""
    await started.wait()
    with wave.open(path, "rb") as w:
        if (w.getframerate(), w.getnchannels(), w.getsampwidth()) != (16000, 1, 2):
            raise SystemExit(f"{path}: need 16 kHz mono 16-bit PCM")
        frames = w.readframes(w.getnframes())
    frame_bytes = 640
    t0 = time.monotonic()
    for i in range(0, len(frames), frame_bytes):
        await ws.send(frames[i:i + frame_bytes].ljust(frame_bytes, b"\0"))
        delay = t0 + (i // frame_bytes + 1) * 0.02 - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
    # Then silence, as a line that stays open would carry.
    while True:
        await ws.send(b"\0" * frame_bytes)
        await asyncio.sleep(0.02)


async def run(url: str, caller_wav: str | None = None, out_wav: str | None = None,
              print_fn=print, timeout_s: float = 120.0) -> list[dict]:
    """Hold one call; return every event received (for tests and the demo)."""
    events: list[dict] = []
    audio_out = bytearray()
    greeted = asyncio.Event()
    async with websockets.connect(url, max_size=2**22) as ws:
        await ws.send(json.dumps({"command": "invite", "option": {
            "codec": "pcm", "caller": "demo-caller", "callee": "demo-agent",
        }}))
        streamer = asyncio.create_task(stream_wav(ws, caller_wav, greeted)) if caller_wav else None
        try:
            async with asyncio.timeout(timeout_s):
                async for message in ws:
                    if isinstance(message, bytes):
                        audio_out.extend(message)
                        continue
                    event = json.loads(message)
                    events.append(event)
                    name = event.get("event")
                    if name == "answer":
                        print_fn(f"agent  > {GREETING}")
                        await ws.send(json.dumps({"command": "tts", "text": GREETING, "playId": "greeting"}))
                    elif name == "trackEnd" and event.get("playId") == "greeting":
                        greeted.set()
                    elif name == "asrFinal":
                        print_fn(f"caller > {event['text']}")
                        text, last = reply_for(event["text"])
                        print_fn(f"agent  > {text}")
                        await ws.send(json.dumps({
                            "command": "tts", "text": text, "autoHangup": last,
                            "playId": f"reply-{event['index']}",
                        }))
                    elif name == "error":
                        print_fn(f"error  : {event.get('sender')}: {event.get('error')}")
                    elif name == "hangup":
                        print_fn(f"hangup : {event.get('reason')} by {event.get('initiator')}")
                        break
        finally:
            if streamer:
                streamer.cancel()
    if out_wav:
        with wave.open(out_wav, "wb") as w:
            w.setnchannels(1)
            w.setsampwidth(2)
            w.setframerate(16000)
            w.writeframes(bytes(audio_out))
    return events


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--url", default="ws://127.0.0.1:8000/call")
    p.add_argument("--caller-wav", help="16 kHz mono WAV streamed in as the caller's voice")
    p.add_argument("--out-wav", help="write the agent's voice (TTS audio received) here")
    args = p.parse_args(argv)
    asyncio.run(run(args.url, args.caller_wav, args.out_wav))


if __name__ == "__main__":
    main()
