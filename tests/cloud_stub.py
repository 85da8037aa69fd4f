"""A local stand-in for cloud speech APIs that speaks their real wire formats.

Behind the OpenAI-compatible and Deepgram endpoints sit the real local models,
so a test can check real text and real audio. `/fail/...` answers 500 and
`/hang/...` never answers in time, to exercise retries and fallback.
"""

from __future__ import annotations

import asyncio
import io
import socket
import threading
import time
import wave

import numpy as np
import uvicorn
from fastapi import FastAPI, File, Form, Request, UploadFile
from fastapi.responses import JSONResponse, StreamingResponse

from voxray.providers.piper_local import PiperLocal
from voxray.providers.whisper_local import WhisperLocal
from voxray.media.resample import resample


def build_app(whisper: WhisperLocal, piper: PiperLocal, seen: list[dict]) -> FastAPI:
    app = FastAPI()

    async def speak(text: str, rate: int):
        async for chunk in piper.synthesize(text):
            pcm = resample(np.frombuffer(chunk.pcm, dtype="<i2"), chunk.sample_rate, rate)
            yield pcm.astype("<i2").tobytes()

    @app.post("/{mode}/v1/audio/transcriptions")
    async def openai_transcribe(mode: str, request: Request, file: UploadFile = File(...),
                                model: str = Form(...), language: str | None = Form(None)):
        seen.append({"api": "openai-asr", "auth": request.headers.get("authorization"), "model": model})
        if mode == "fail":
            return JSONResponse({"error": {"message": "upstream exploded"}}, status_code=500)
        if mode == "hang":
            await asyncio.sleep(30)
        with wave.open(io.BytesIO(await file.read())) as w:
            pcm = np.frombuffer(w.readframes(w.getnframes()), dtype="<i2")
        return {"text": (await whisper.transcribe(pcm, language)).text}

    @app.post("/{mode}/v1/audio/speech")
    async def openai_speech(mode: str, request: Request):
        body = await request.json()
        seen.append({"api": "openai-tts", "auth": request.headers.get("authorization"), **body})
        if mode == "fail":
            return JSONResponse({"error": {"message": "no voice"}}, status_code=500)
        if mode == "hang":
            await asyncio.sleep(30)
        assert body["response_format"] == "pcm"
        return StreamingResponse(speak(body["input"], 24000), media_type="audio/pcm")

    @app.post("/{mode}/v1/listen")
    async def deepgram_listen(mode: str, request: Request):
        seen.append({"api": "deepgram-asr", "auth": request.headers.get("authorization"),
                     **dict(request.query_params)})
        if mode == "fail":
            return JSONResponse({"err_msg": "bad"}, status_code=500)
        assert request.query_params["encoding"] == "linear16"
        pcm = np.frombuffer(await request.body(), dtype="<i2")
        text = (await whisper.transcribe(pcm)).text
        return {"results": {"channels": [{"alternatives": [{"transcript": text, "confidence": 0.9}]}]}}

    @app.post("/{mode}/v1/speak")
    async def deepgram_speak(mode: str, request: Request):
        body = await request.json()
        seen.append({"api": "deepgram-tts", "auth": request.headers.get("authorization"),
                     **dict(request.query_params), **body})
        if mode == "fail":
            return JSONResponse({"err_msg": "bad"}, status_code=500)
        rate = int(request.query_params["sample_rate"])
        return StreamingResponse(speak(body["text"], rate), media_type="audio/l16")

    return app


class CloudStub:
    def __init__(self) -> None:
        self.whisper = WhisperLocal()
        self.piper = PiperLocal()
        self.whisper.load()
        self.piper.load()
        self.seen: list[dict] = []
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        config = uvicorn.Config(build_app(self.whisper, self.piper, self.seen), host="127.0.0.1",
                                port=self.port, log_level="warning")
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def url(self, mode: str = "ok") -> str:
        return f"http://127.0.0.1:{self.port}/{mode}"

    def __enter__(self) -> "CloudStub":
        self.thread.start()
        deadline = time.monotonic() + 20
        while not self.server.started:
            if time.monotonic() > deadline:
                raise RuntimeError("stub server did not start")
            time.sleep(0.05)
        return self

    def __exit__(self, *exc) -> None:
        self.server.should_exit = True
        self.thread.join(10)
