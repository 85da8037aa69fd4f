"""One call's media session: audio in -> VAD -> utterances -> ASR; tts -> paced audio out.

Transport-agnostic: a transport (the `/call` WebSocket, later SIP/RTP or WebRTC)
feeds encoded payloads in and receives events and encoded frames through a sink.
The models are reached through `ModelServices`, batched where it pays.
"""

from __future__ import annotations

import asyncio
import itertools
import random
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from voxray.deployments.messages import (
    AsrRequest, AsrResult, TtsAudio, TtsRequest, VadChunk, VadChunkResult,
)
from voxray.logs import get_logger
from voxray.protocol import events as ev
from voxray.protocol.commands import Tts
from voxray.protocol.options import CallOption
from voxray.ua_node.media.codecs import Codec, make_codec
from voxray.ua_node.media.playout import Playout, Track
from voxray.ua_node.media.resample import Resampler
from voxray.ua_node.media.vad_segmenter import (
    WINDOW, SegmenterConfig, SpeechEnded, SpeechStarted, VadSegmenter,
)

log = get_logger("voxray.media")


class ModelServices(Protocol):
    async def vad(self, chunk: VadChunk) -> VadChunkResult: ...
    async def transcribe(self, req: AsrRequest) -> AsrResult: ...
    def synthesize(self, req: TtsRequest) -> AsyncIterator[TtsAudio]: ...


class MediaSink(Protocol):
    async def emit(self, event: ev.EventBase) -> None: ...
    async def send_audio(self, payload: bytes) -> None: ...
    async def request_hangup(self, reason: str, initiator: str) -> None: ...


@dataclass(frozen=True)
class MediaConfig:
    ptime_ms: int = 20
    vad_chunk_windows: int = 2  # 64 ms of audio per VAD request per call
    end_silence_ms: int = 480
    asr_provider: str | None = None
    tts_provider: str | None = None


class MediaSession:
    def __init__(self, call_id: str, option: CallOption, services: ModelServices,
                 sink: MediaSink, config: MediaConfig | None = None) -> None:
        self.call_id = call_id
        self.option = option
        self.services = services
        self.sink = sink
        self.config = config or MediaConfig()
        self.codec_in: Codec = make_codec(option.codec)
        self.codec_out: Codec = make_codec(option.codec)
        self._to16k = Resampler(self.codec_in.sample_rate, 16000)
        vad = option.vad
        self.segmenter = VadSegmenter(SegmenterConfig(
            threshold=vad.voice_threshold if vad else 0.5,
            min_speech_ms=vad.min_speech_ms if vad else 96,
            end_silence_ms=(vad.silence_timeout if vad and vad.silence_timeout else self.config.end_silence_ms),
            speech_padding_ms=vad.speech_padding if vad else 250,
            silence_padding_ms=vad.silence_padding if vad else 100,
            max_utterance_ms=(vad.max_buffer_duration_secs * 1000 if vad else 50_000),
        ))
        self._pending16k = np.zeros(0, dtype=np.int16)
        self._vad_queue: asyncio.Queue[np.ndarray | None] = asyncio.Queue()
        self._vad_state: bytes | None = None
        self._vad_context: bytes | None = None
        self._asr_queue: asyncio.Queue[SpeechEnded | None] = asyncio.Queue()
        self._utterance_index = itertools.count()
        self._stream_epoch_ms: int | None = None  # wall clock of stream position 0
        self.playout = Playout()
        self._audio_ready = asyncio.Event()
        self._synth_tasks: dict[int, asyncio.Task] = {}
        self._ssrc = random.getrandbits(32)
        self._tasks: list[asyncio.Task] = []
        self.inbound_muted = False
        self.outbound_muted = False
        self.last_audio_in = time.monotonic()
        self.closed = False

    # -- lifecycle ---------------------------------------------------------------

    def start(self) -> None:
        self._tasks = [
            asyncio.create_task(self._vad_loop(), name=f"vad-{self.call_id}"),
            asyncio.create_task(self._asr_loop(), name=f"asr-{self.call_id}"),
            asyncio.create_task(self._playout_loop(), name=f"playout-{self.call_id}"),
        ]

    async def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        for t in list(self._synth_tasks.values()) + self._tasks:
            t.cancel()
        await asyncio.gather(*self._synth_tasks.values(), *self._tasks, return_exceptions=True)

    # -- audio in ----------------------------------------------------------------

    def feed(self, payload: bytes) -> None:
        """One encoded frame from the caller. Decoding is cheap; models run elsewhere."""
        pcm = self.codec_in.decode(payload)
        now = time.time()
        self.last_audio_in = time.monotonic()
        if self._stream_epoch_ms is None:
            self._stream_epoch_ms = int(now * 1000)
        if self.inbound_muted:
            pcm = np.zeros_like(pcm)
        pcm16 = self._to16k.process(pcm)
        self._pending16k = np.concatenate((self._pending16k, pcm16))
        chunk = WINDOW * self.config.vad_chunk_windows
        while self._pending16k.size >= chunk:
            self._vad_queue.put_nowait(self._pending16k[:chunk])
            self._pending16k = self._pending16k[chunk:]

    def _epoch(self, pos_ms: int) -> int:
        return (self._stream_epoch_ms or int(time.time() * 1000)) + pos_ms

    async def _vad_loop(self) -> None:
        while True:
            first = await self._vad_queue.get()
            if first is None:
                return
            # When the model falls behind, catch up with one larger request.
            parts = [first]
            while not self._vad_queue.empty() and len(parts) < 16:
                nxt = self._vad_queue.get_nowait()
                if nxt is None:
                    break
                parts.append(nxt)
            audio = np.concatenate(parts)
            try:
                res = await self.services.vad(VadChunk(
                    key=self.call_id, pcm=audio.astype("<i2").tobytes(),
                    state=self._vad_state, context=self._vad_context,
                ))
            except Exception as exc:
                log.warning("vad failed", extra={"error": repr(exc)})
                await self.sink.emit(ev.Error(sender="vad", error=f"vad failed: {exc}", code=503))
                continue
            self._vad_state, self._vad_context = res.state, res.context
            for i, prob in enumerate(res.probs):
                window = audio[i * WINDOW:(i + 1) * WINDOW]
                for event in self.segmenter.push(window, prob):
                    await self._on_segment(event)

    async def _on_segment(self, event: SpeechStarted | SpeechEnded) -> None:
        if isinstance(event, SpeechStarted):
            await self.sink.emit(ev.Speaking(track_id=self.call_id, start_time=self._epoch(event.start_ms)))
            return
        await self.sink.emit(ev.Silence(
            track_id=self.call_id, start_time=self._epoch(event.end_ms), duration=event.silence_ms,
        ))
        self._asr_queue.put_nowait(event)

    async def _asr_loop(self) -> None:
        # One utterance at a time per call keeps asrFinal indices in speaking order.
        while True:
            utt = await self._asr_queue.get()
            if utt is None:
                return
            asr = self.option.asr
            t0 = time.perf_counter()
            try:
                result = await self.services.transcribe(AsrRequest(
                    call_id=self.call_id, pcm=utt.audio.astype("<i2").tobytes(),
                    language=asr.language if asr else None,
                    provider=(asr.provider if asr and asr.provider else self.config.asr_provider),
                ))
            except Exception as exc:
                log.warning("asr failed", extra={"error": repr(exc)})
                await self.sink.emit(ev.Error(sender="asr", error=f"asr failed: {exc}", code=503))
                continue
            elapsed = int((time.perf_counter() - t0) * 1000)
            await self.sink.emit(ev.Metrics(
                key=f"ttfb.asr.{result.provider}", duration=elapsed,
                data={"audioMs": int(result.audio_s * 1000), "computeMs": int(result.compute_s * 1000)},
            ))
            text = result.text.strip()
            if not text:
                continue  # noise that passed VAD: nothing was said
            await self.sink.emit(ev.AsrFinal(
                track_id=self.call_id, index=next(self._utterance_index),
                start_time=self._epoch(utt.start_ms), end_time=self._epoch(utt.end_ms), text=text,
            ))
            await self.sink.emit(ev.Eou(track_id=self.call_id, completed=not utt.forced))

    # -- audio out ---------------------------------------------------------------

    async def tts(self, cmd: Tts) -> None:
        play_id = cmd.play_id or uuid.uuid4().hex[:12]
        current = self.playout.current
        if current is not None and cmd.play_id is not None and current.play_id != cmd.play_id:
            # A new playId interrupts what is playing; the same one queues behind it.
            await self.interrupt(graceful=False)
        track = Track(play_id=play_id, sample_rate=self.codec_out.sample_rate,
                      auto_hangup=cmd.auto_hangup, text=cmd.text)
        self.playout.enqueue(track)
        opt = cmd.option or self.option.tts
        req = TtsRequest(
            call_id=self.call_id, text=cmd.text, sample_rate=self.codec_out.sample_rate,
            speed=opt.speed if opt else 1.0,
            speaker=cmd.speaker or (opt.speaker if opt else None),
            provider=(opt.provider if opt and opt.provider else self.config.tts_provider),
        )
        task = asyncio.create_task(self._synthesize(track, req), name=f"tts-{play_id}")
        self._synth_tasks[id(track)] = task
        task.add_done_callback(lambda _t, k=id(track): self._synth_tasks.pop(k, None))

    async def _synthesize(self, track: Track, req: TtsRequest) -> None:
        t0 = time.perf_counter()
        first = True
        provider = req.provider or "tts"
        try:
            async for audio in self.services.synthesize(req):
                provider = audio.provider
                if first:
                    first = False
                    await self.sink.emit(ev.Metrics(
                        key=f"ttfb.tts.{audio.provider}",
                        duration=int((time.perf_counter() - t0) * 1000),
                        data={"playId": track.play_id},
                    ))
                track.feed(np.frombuffer(audio.pcm, dtype="<i2").astype(np.int16))
                self._audio_ready.set()
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            track.failed = str(exc)
            log.warning("tts failed", extra={"error": repr(exc), "provider": provider})
            await self.sink.emit(ev.Error(sender="tts", error=f"tts failed: {exc}", code=503))
        finally:
            track.finish_feeding()
            self._audio_ready.set()

    async def interrupt(self, graceful: bool = False) -> None:
        dropped = self.playout.drop_queued() if graceful else self.playout.drop_all()
        for track in dropped:
            task = self._synth_tasks.pop(id(track), None)
            if task:
                task.cancel()
            if track.started:
                await self.sink.emit(ev.Interruption(
                    play_id=track.play_id, current=track.ms(track.played),
                    total_duration=track.ms(track.fed), subtitle=track.text or None,
                ))
                await self._track_end(track)
        self._audio_ready.set()

    async def _track_end(self, track: Track) -> None:
        await self.sink.emit(ev.TrackEnd(
            track_id=self.call_id, play_id=track.play_id, duration=track.ms(track.played), ssrc=self._ssrc,
        ))

    def pause(self) -> None:
        self.playout.paused = True

    def resume(self) -> None:
        self.playout.paused = False
        self._audio_ready.set()

    async def _playout_loop(self) -> None:
        frame_samples = int(self.codec_out.sample_rate * self.config.ptime_ms / 1000)
        period = self.config.ptime_ms / 1000
        deadline: float | None = None
        while True:
            track = self.playout.current
            frame = None
            if track is not None and not self.playout.paused:
                frame = track.take(frame_samples)
            if frame is None:
                if track is not None and track.exhausted:
                    self.playout.pop_finished()
                    await self._track_end(track)
                    if track.auto_hangup:
                        await self.sink.request_hangup("autohangup", "server")
                    continue
                # Nothing to send yet: wait for audio and restart the clock after.
                deadline = None
                self._audio_ready.clear()
                await self._audio_ready.wait()
                continue
            if not track.started:
                track.started = True
                await self.sink.emit(ev.TrackStart(track_id=self.call_id, play_id=track.play_id))
            if not self.outbound_muted:
                await self.sink.send_audio(self.codec_out.encode(frame))
            # Absolute schedule: frames leave every ptime without drift.
            now = time.monotonic()
            deadline = now + period if deadline is None else deadline + period
            delay = deadline - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            elif delay < -0.2:
                deadline = time.monotonic()  # far behind (e.g. loop stall): do not burst
