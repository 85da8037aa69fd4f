"""The caller's half of a call: audio in -> VAD -> turns -> transcripts.

Each frame is decoded, resampled to 16 kHz (and denoised if asked), re-chunked for
Silero and sent to the VAD model; the segmenter turns probabilities into turns
(`speaking`, `silence`); each turn is transcribed (`asrFinal`, `eou`, one at a time
so indices follow speaking order), partials are decoded while the caller speaks
(`asrDelta`), the first turn is checked for an answering machine, and caller speech
over our own audio past the guards is a barge-in, reported to the owner. Every
model call goes through `ModelServices`.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import Awaitable, Callable

import numpy as np

from voxray.logs import bind_call, get_logger
from voxray.media import amd
from voxray.media.codecs import Codec, make_codec
from voxray.media.config import MediaConfig, MediaSink, fallback_metrics
from voxray.media.messages import AsrRequest, CallCredentials, VadChunk
from voxray.media.playout import Track
from voxray.media.resample import Resampler
from voxray.media.services import ModelServices
from voxray.media.vad_segmenter import (
    WINDOW, WINDOW_MS, SegmenterConfig, SpeechEnded, SpeechStarted, VadSegmenter,
)
from voxray.protocol import events as ev
from voxray.protocol.options import CallOption

log = get_logger("voxray.media")


def segmenter_config(option: CallOption, config: MediaConfig) -> SegmenterConfig:
    vad = option.vad
    return SegmenterConfig(
        threshold=vad.voice_threshold if vad else 0.5,
        min_speech_ms=vad.min_speech_ms if vad else 96,
        end_silence_ms=(vad.silence_timeout if vad and vad.silence_timeout else config.end_silence_ms),
        speech_padding_ms=vad.speech_padding if vad else 250,
        silence_padding_ms=vad.silence_padding if vad else 100,
        max_utterance_ms=(vad.max_buffer_duration_secs * 1000 if vad else 50_000),
    )


class Listener:
    def __init__(self, call_id: str, option: CallOption, services: ModelServices, sink: MediaSink,
                 config: MediaConfig, *, playing: Callable[[], Track | None],
                 on_barge_in: Callable[[], Awaitable[None]], on_speech: Callable[[], None]) -> None:
        self.call_id = call_id
        self.option = option
        self.services = services
        self.sink = sink
        self.config = config
        self._playing = playing  # the track the caller hears now, if any (for barge-in)
        self._on_barge_in = on_barge_in
        self._on_speech = on_speech  # the caller started a turn
        self.codec: Codec = make_codec(option.codec)
        self._to16k = Resampler(self.codec.sample_rate, 16000)
        self._denoiser = None
        if option.denoise:
            from voxray.media.denoise import Denoiser

            self._denoiser = Denoiser()
        self.segmenter = VadSegmenter(segmenter_config(option, config))
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
        self._bargein_run_ms = 0.0
        self._tasks: list[asyncio.Task] = []
        self.stream_epoch_ms: int | None = None  # wall clock of stream position 0; None: no audio yet
        self.muted = False
        self.last_audio_in = time.monotonic()

    # -- lifecycle -------------------------------------------------------------------

    def start(self) -> None:
        with bind_call(self.call_id):  # tasks copy the context: their log lines carry the call id
            self._tasks = [asyncio.create_task(self._vad_loop(), name=f"vad-{self.call_id}"),
                           asyncio.create_task(self._asr_loop(), name=f"asr-{self.call_id}")]

    def pending_tasks(self) -> list[asyncio.Task]:
        return self._tasks + ([self._partial_task] if self._partial_task else [])

    def close(self) -> None:
        if self._denoiser is not None:
            self._denoiser.close()

    # -- audio in --------------------------------------------------------------------

    def feed(self, payload: bytes) -> None:
        """One encoded frame from the caller. Decoding is cheap; models run elsewhere."""
        pcm = self.codec.decode(payload)
        self.last_audio_in = time.monotonic()
        if self.stream_epoch_ms is None:
            self.stream_epoch_ms = int(time.time() * 1000)
        if self.muted:
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
        return (self.stream_epoch_ms or int(time.time() * 1000)) + pos_ms

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
            self._on_speech()
            await self.sink.emit(ev.Speaking(track_id=self.call_id, start_time=self._epoch(event.start_ms)))
            return
        await self.sink.emit(ev.Silence(
            track_id=self.call_id, start_time=self._epoch(event.end_ms), duration=event.silence_ms,
        ))
        self._asr_queue.put_nowait((self._current_index, event))

    # -- barge-in --------------------------------------------------------------------

    async def _check_barge_in(self, prob: float) -> None:
        """Caller speech over our audio stops it, past the false-trigger guards."""
        b = self.option.barge_in
        track = self._playing()
        if not (b.enabled and track is not None):
            self._bargein_run_ms = 0.0
            return
        # The echo guard asks for more confidence while our own voice may leak back.
        if prob >= min(self.segmenter.config.threshold + b.echo_guard, 0.95):
            self._bargein_run_ms += WINDOW_MS
        else:
            self._bargein_run_ms = 0.0
        since_start = (time.monotonic() - track.started_at) * 1000
        if self._bargein_run_ms >= b.min_speech_ms and since_start >= b.ignore_ms:
            self._bargein_run_ms = 0.0
            log.info("barge-in", extra={"play_id": track.play_id, "played_ms": track.ms(track.played)})
            await self._on_barge_in()

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
                await self.sink.emit(fallback_metrics("asr", result.provider, result.failures))
            await self.sink.emit(ev.Metrics(
                key=f"ttfb.asr.{result.provider}", duration=elapsed,
                data={"audioMs": int(result.audio_s * 1000), "computeMs": int(result.compute_s * 1000)},
            ))
            text = result.text.strip()
            if not text:
                continue  # noise that passed VAD: nothing was said
            await self._final(index, utt, text)

    async def _final(self, index: int, utt: SpeechEnded, text: str) -> None:
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
