"""One call's media session: audio in -> VAD -> utterances -> ASR; tts/play -> paced audio out.

Transport-agnostic: a transport (the `/call` WebSocket, SIP/RTP, WebRTC) feeds
encoded payloads in and receives events and encoded frames through a sink. The
models are reached through `ModelServices`, batched where it pays.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import itertools
import random
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np

from voxray.media.messages import (
    CallCredentials,
    AsrRequest, AsrResult, TtsAudio, TtsRequest, VadChunk, VadChunkResult,
)
from voxray.logs import bind_call, get_logger
from voxray.protocol import events as ev
from voxray.protocol.commands import Background, Play, Tts
from voxray.protocol.errors import ProtocolError
from voxray.protocol.options import CallOption
from voxray.media import amd
from voxray.media.audio_source import AudioSourcePolicy, load_audio
from voxray.media.codecs import Codec, make_codec
from voxray.media.playout import Playout, Track
from voxray.media.resample import Resampler, resample
from voxray.media.services import ModelServices
from voxray.media.text_chunker import TextChunker
from voxray.media.vad_segmenter import (
    WINDOW, WINDOW_MS, SegmenterConfig, SpeechEnded, SpeechStarted, VadSegmenter,
)

log = get_logger("voxray.media")


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
    play_dirs: tuple[str, ...] = ()  # folders `play` may read files from
    play_cache_dir: str | None = None
    play_allow_private_urls: bool = False


@dataclass
class TrackFeed:
    """Text waiting to be spoken on one track, and the task that speaks it."""

    track: Track
    streaming: bool
    created: float = field(default_factory=time.perf_counter)
    chunker: TextChunker = field(default_factory=TextChunker)
    pieces: asyncio.Queue = field(default_factory=asyncio.Queue)
    open: bool = True
    task: asyncio.Task | None = None

    def push(self, text: str) -> None:
        self.track.text = (self.track.text + text) if self.streaming else text
        for piece in (self.chunker.push(text) if self.streaming else [text]):
            self.pieces.put_nowait(piece)

    def close(self) -> None:
        if self.open:
            self.open = False
            for piece in self.chunker.flush() if self.streaming else []:
                self.pieces.put_nowait(piece)
            self.pieces.put_nowait(None)


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
        self._denoiser = None
        if option.denoise:
            from voxray.media.denoise import Denoiser

            self._denoiser = Denoiser()
        vad = option.vad
        self._vad_threshold = vad.voice_threshold if vad else 0.5
        self.segmenter = VadSegmenter(SegmenterConfig(
            threshold=self._vad_threshold,
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
        self._asr_queue: asyncio.Queue[tuple[int, SpeechEnded] | None] = asyncio.Queue()
        self._utterance_index = itertools.count()
        self._current_index = -1
        self._finalized_index = -1
        self._partial_task: asyncio.Task | None = None
        self._partial_at_ms = 0
        self._utt_start_ms = 0
        self._amd_done = not option.answer_machine_detection
        self._stream_epoch_ms: int | None = None  # wall clock of stream position 0
        self.playout = Playout()
        self._audio_ready = asyncio.Event()
        self._feeds: dict[int, TrackFeed] = {}
        self._bargein_run_ms = 0.0
        self._wait_input: asyncio.Task | None = None
        self._bg: np.ndarray | None = None  # background music at the codec rate
        self._bg_pos = 0
        self._bg_cmd: Background | None = None
        self._ssrc = random.getrandbits(32)
        self._tasks: list[asyncio.Task] = []
        self._play_policy = AudioSourcePolicy(list(self.config.play_dirs), self.config.play_cache_dir,
                                              self.config.play_allow_private_urls)
        self.inbound_muted = False
        self.outbound_muted = False
        self.last_audio_in = time.monotonic()
        self.closed = False

    # -- lifecycle ---------------------------------------------------------------

    def start(self) -> None:
        # Tasks copy the context: every log line they write carries the call id.
        with bind_call(self.call_id):
            self._tasks = [
                asyncio.create_task(self._vad_loop(), name=f"vad-{self.call_id}"),
                asyncio.create_task(self._asr_loop(), name=f"asr-{self.call_id}"),
                asyncio.create_task(self._playout_loop(), name=f"playout-{self.call_id}"),
            ]

    async def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        pending = [f.task for f in self._feeds.values() if f.task] + self._tasks
        pending += [t for t in (self._partial_task, self._wait_input) if t]
        for t in pending:
            t.cancel()
        await asyncio.gather(*pending, return_exceptions=True)
        if self._denoiser is not None:
            self._denoiser.close()

    # -- audio in ----------------------------------------------------------------

    def feed(self, payload: bytes) -> None:
        """One encoded frame from the caller. Decoding is cheap; models run elsewhere."""
        pcm = self.codec_in.decode(payload)
        self.last_audio_in = time.monotonic()
        if self._stream_epoch_ms is None:
            self._stream_epoch_ms = int(time.time() * 1000)
        if self.inbound_muted:
            pcm = np.zeros_like(pcm)
        pcm16 = self._to16k.process(pcm)
        if self._denoiser is not None:
            pcm16 = self._denoiser.process(pcm16)
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
                await self._check_barge_in(prob)
            self._maybe_partial()

    async def _on_segment(self, event: SpeechStarted | SpeechEnded) -> None:
        if isinstance(event, SpeechStarted):
            self._current_index = next(self._utterance_index)
            self._utt_start_ms = event.start_ms
            self._partial_at_ms = 0
            if self._wait_input:
                self._wait_input.cancel()
            await self.sink.emit(ev.Speaking(track_id=self.call_id, start_time=self._epoch(event.start_ms)))
            return
        await self.sink.emit(ev.Silence(
            track_id=self.call_id, start_time=self._epoch(event.end_ms), duration=event.silence_ms,
        ))
        self._asr_queue.put_nowait((self._current_index, event))

    # -- barge-in ------------------------------------------------------------------

    async def _check_barge_in(self, prob: float) -> None:
        """Caller speech over our audio stops it, past the false-trigger guards."""
        b = self.option.barge_in
        track = self.playout.current
        playing = track is not None and track.started and not self.playout.paused
        if not (b.enabled and playing):
            self._bargein_run_ms = 0.0
            return
        # The echo guard asks for more confidence while our own voice may leak back.
        if prob >= min(self._vad_threshold + b.echo_guard, 0.95):
            self._bargein_run_ms += WINDOW_MS
        else:
            self._bargein_run_ms = 0.0
        since_start = (time.monotonic() - track.started_at) * 1000
        if self._bargein_run_ms >= b.min_speech_ms and since_start >= b.ignore_ms:
            self._bargein_run_ms = 0.0
            log.info("barge-in", extra={"play_id": track.play_id, "played_ms": track.ms(track.played)})
            await self.interrupt(graceful=False)

    # -- transcripts -----------------------------------------------------------------

    def _asr_request(self, pcm: np.ndarray) -> AsrRequest:
        asr = self.option.asr
        return AsrRequest(
            call_id=self.call_id, pcm=pcm.astype("<i2").tobytes(),
            language=asr.language if asr else None,
            provider=(asr.provider if asr and asr.provider else self.config.asr_provider),
            creds=CallCredentials(endpoint=asr.endpoint, secret_key=asr.secret_key,
                                  model=asr.model_type) if asr else None,
        )

    def _maybe_partial(self) -> None:
        interval = self.option.asr.partial_interval_ms if self.option.asr else 1000
        if not interval or not self.segmenter.speaking:
            return
        if self._partial_task is not None and not self._partial_task.done():
            return  # one partial decode at a time: skip rather than queue
        now_ms = self.segmenter.utterance_ms
        if now_ms - self._partial_at_ms < interval:
            return
        self._partial_at_ms = now_ms
        index, audio = self._current_index, self.segmenter.snapshot()
        self._partial_task = asyncio.create_task(self._partial(index, audio))

    async def _partial(self, index: int, audio: np.ndarray) -> None:
        try:
            result = await self.services.transcribe(self._asr_request(audio))
        except Exception as exc:
            log.info("partial asr failed", extra={"error": repr(exc)})
            return
        text = result.text.strip()
        if text and index > self._finalized_index:  # never after its final
            await self.sink.emit(ev.AsrDelta(
                track_id=self.call_id, index=index, text=text,
                start_time=self._epoch(self._utt_start_ms), end_time=int(time.time() * 1000),
            ))

    async def _asr_loop(self) -> None:
        # One utterance at a time per call keeps asrFinal indices in speaking order.
        while True:
            item = await self._asr_queue.get()
            if item is None:
                return
            index, utt = item
            t0 = time.perf_counter()
            try:
                result = await self.services.transcribe(self._asr_request(utt.audio))
            except Exception as exc:
                log.warning("asr failed", extra={"error": repr(exc)})
                await self.sink.emit(ev.Error(sender="asr", error=f"asr failed: {exc}", code=503))
                continue
            self._finalized_index = index
            elapsed = int((time.perf_counter() - t0) * 1000)
            if result.failures:
                await self._report_fallback("asr", result.provider, result.failures)
            await self.sink.emit(ev.Metrics(
                key=f"ttfb.asr.{result.provider}", duration=elapsed,
                data={"audioMs": int(result.audio_s * 1000), "computeMs": int(result.compute_s * 1000)},
            ))
            text = result.text.strip()
            if not text:
                continue  # noise that passed VAD: nothing was said
            start, end = self._epoch(utt.start_ms), self._epoch(utt.end_ms)
            await self.sink.emit(ev.AsrFinal(track_id=self.call_id, index=index,
                                             start_time=start, end_time=end, text=text))
            await self.sink.emit(ev.Eou(track_id=self.call_id, completed=not utt.forced))
            if not self._amd_done:
                self._amd_done = True
                verdict = amd.classify(utt.end_ms - utt.start_ms, text)
                log.info("amd", extra={"machine": verdict.machine, "reason": verdict.reason})
                if verdict.machine:
                    await self.sink.emit(ev.AnswerMachineDetection(
                        track_id=self.call_id, start_time=start, end_time=end, text=text))

    # -- audio out ---------------------------------------------------------------

    def _open_stream(self, play_id: str | None) -> TrackFeed | None:
        for feed in self._feeds.values():
            if feed.streaming and feed.open and (play_id is None or feed.track.play_id == play_id):
                return feed
        return None

    async def _prepare_track(self, play_id: str | None) -> None:
        current = self.playout.current
        if current is not None and play_id is not None and current.play_id != play_id:
            # A new playId interrupts what is playing; the same one queues behind it.
            await self.interrupt(graceful=False)
        if self._wait_input:
            self._wait_input.cancel()

    async def tts(self, cmd: Tts) -> None:
        if cmd.base64:
            await self._play_pcm(cmd)
            return
        if cmd.streaming:
            feed = self._open_stream(cmd.play_id)
            if feed is not None:
                feed.push(cmd.text)
                if cmd.end_of_stream:
                    feed.close()
                return
        await self._prepare_track(cmd.play_id)
        track = Track(play_id=cmd.play_id or uuid.uuid4().hex[:12], sample_rate=self.codec_out.sample_rate,
                      auto_hangup=cmd.auto_hangup, wait_input_timeout=cmd.wait_input_timeout)
        feed = TrackFeed(track, streaming=cmd.streaming)
        feed.push(cmd.text)
        if not cmd.streaming or cmd.end_of_stream:
            feed.close()
        self.playout.enqueue(track)
        self._feeds[id(track)] = feed
        feed.task = asyncio.create_task(self._speak(feed, cmd), name=f"tts-{track.play_id}")

    async def play(self, cmd: Play) -> None:
        await self._prepare_track(cmd.play_id)
        track = Track(play_id=cmd.play_id or uuid.uuid4().hex[:12], sample_rate=self.codec_out.sample_rate,
                      auto_hangup=cmd.auto_hangup, wait_input_timeout=cmd.wait_input_timeout)
        # Load before queueing so a bad URL is an error for the command, not a silent track.
        pcm = await load_audio(cmd.url, self.codec_out.sample_rate, self._play_policy)
        track.feed(pcm)
        track.finish_feeding()
        self.playout.enqueue(track)
        self._audio_ready.set()

    async def _play_pcm(self, cmd: Tts) -> None:
        """`tts` with `base64`: the agent brings its own 16 kHz PCM."""
        try:
            raw = base64.b64decode(cmd.text, validate=True)
        except (binascii.Error, ValueError):
            raise ProtocolError("tts base64: text is not valid base64", 422) from None
        if len(raw) % 2:
            raise ProtocolError("tts base64: PCM must hold whole 16-bit samples", 422)
        await self._prepare_track(cmd.play_id)
        track = Track(play_id=cmd.play_id or uuid.uuid4().hex[:12], sample_rate=self.codec_out.sample_rate,
                      auto_hangup=cmd.auto_hangup, wait_input_timeout=cmd.wait_input_timeout)
        pcm = np.frombuffer(raw, dtype="<i2").astype(np.int16)
        track.feed(resample(pcm, 16000, self.codec_out.sample_rate))
        track.finish_feeding()
        self.playout.enqueue(track)
        self._audio_ready.set()

    async def _speak(self, feed: TrackFeed, cmd: Tts) -> None:
        track = feed.track
        opt = cmd.option or self.option.tts
        first = True
        try:
            while True:
                piece = await feed.pieces.get()
                if piece is None:
                    return
                req = TtsRequest(
                    call_id=self.call_id, text=piece, sample_rate=self.codec_out.sample_rate,
                    speed=opt.speed if opt else 1.0,
                    speaker=cmd.speaker or (opt.speaker if opt else None),
                    provider=(opt.provider if opt and opt.provider else self.config.tts_provider),
                    creds=CallCredentials(endpoint=opt.endpoint, secret_key=opt.secret_key,
                                          model=(opt.extra or {}).get("model")) if opt else None,
                )
                try:
                    async for audio in self.services.synthesize(req):
                        if audio.failures:
                            await self._report_fallback("tts", audio.provider, audio.failures)
                        if first:
                            first = False
                            # From the command (first token when streaming) to first audio.
                            await self.sink.emit(ev.Metrics(
                                key=f"ttfb.tts.{audio.provider}",
                                duration=int((time.perf_counter() - feed.created) * 1000),
                                data={"playId": track.play_id, "streaming": feed.streaming},
                            ))
                        track.feed(np.frombuffer(audio.pcm, dtype="<i2").astype(np.int16))
                        self._audio_ready.set()
                except asyncio.CancelledError:
                    raise
                except Exception as exc:
                    track.failed = str(exc)
                    log.warning("tts failed", extra={"error": repr(exc), "play_id": track.play_id})
                    await self.sink.emit(ev.Error(sender="tts", error=f"tts failed: {exc}", code=503))
        finally:
            feed.open = False
            track.finish_feeding()
            self._audio_ready.set()

    async def _report_fallback(self, kind: str, used: str, failures: list[str]) -> None:
        """Tell the agent a provider failed and which one served instead."""
        await self.sink.emit(ev.Metrics(key=f"fallback.{kind}", duration=0,
                                        data={"provider": used, "failures": failures}))

    async def interrupt(self, graceful: bool = False) -> None:
        dropped = self.playout.drop_queued() if graceful else self.playout.drop_all()
        if not graceful:
            clear = getattr(self.sink, "clear_audio", None)
            if clear is not None:
                clear()
        for track in dropped:
            feed = self._feeds.pop(id(track), None)
            if feed and feed.task:
                feed.task.cancel()
            if track.started:
                words = track.text.split()
                current, total = track.ms(track.played), max(track.ms(track.fed), 1)
                await self.sink.emit(ev.Interruption(
                    play_id=track.play_id, current=current, total_duration=total,
                    subtitle=track.text or None,
                    position=min(len(words), round(len(words) * current / total)) if words else None,
                ))
                await self._track_end(track)
        self._audio_ready.set()

    async def _track_end(self, track: Track) -> None:
        self._feeds.pop(id(track), None)
        await self.sink.emit(ev.TrackEnd(
            track_id=self.call_id, play_id=track.play_id, duration=track.ms(track.played), ssrc=self._ssrc,
        ))

    def _arm_wait_input(self, seconds: float) -> None:
        async def wait() -> None:
            started = int(time.time() * 1000)
            await asyncio.sleep(seconds)
            await self.sink.emit(ev.Silence(track_id=self.call_id, start_time=started,
                                            duration=int(seconds * 1000)))

        if self._wait_input:
            self._wait_input.cancel()
        self._wait_input = asyncio.create_task(wait(), name=f"wait-input-{self.call_id}")

    async def background(self, cmd: Background) -> None:
        if not cmd.url:
            self._bg, self._bg_cmd = None, None
            return
        pcm = await load_audio(cmd.url, self.codec_out.sample_rate, self._play_policy)
        self._bg, self._bg_pos, self._bg_cmd = pcm, 0, cmd
        self._audio_ready.set()

    def _background_frame(self, n: int, ducked: bool) -> np.ndarray | None:
        bg, cmd = self._bg, self._bg_cmd
        if bg is None or cmd is None:
            return None
        if self._bg_pos >= bg.size:
            if not cmd.loop:
                self._bg, self._bg_cmd = None, None
                return None
            self._bg_pos = 0
        out = np.zeros(n, dtype=np.float32)
        filled = 0
        while filled < n:
            k = min(n - filled, bg.size - self._bg_pos)
            out[filled:filled + k] = bg[self._bg_pos:self._bg_pos + k]
            filled += k
            self._bg_pos += k
            if self._bg_pos >= bg.size:
                if not cmd.loop:
                    break
                self._bg_pos = 0
        return out * (cmd.volume * (cmd.duck if ducked else 1.0))

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
            if frame is None and track is not None and track.exhausted:
                self.playout.pop_finished()
                await self._track_end(track)
                if track.auto_hangup:
                    await self.sink.request_hangup("autohangup", "server")
                elif track.wait_input_timeout:
                    self._arm_wait_input(track.wait_input_timeout)
                continue
            # Music under the call ducks while the agent or the caller speaks.
            bg = self._background_frame(frame_samples, ducked=frame is not None or self.segmenter.speaking)
            if frame is None and bg is None:
                # Nothing to send yet: wait for audio and restart the clock after.
                deadline = None
                self._audio_ready.clear()
                await self._audio_ready.wait()
                continue
            if frame is not None and not track.started:
                track.started = True
                track.started_at = time.monotonic()
                await self.sink.emit(ev.TrackStart(track_id=self.call_id, play_id=track.play_id))
            if bg is not None:
                mixed = bg if frame is None else frame.astype(np.float32) + bg
                frame = np.clip(np.rint(mixed), -32768, 32767).astype(np.int16)
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

