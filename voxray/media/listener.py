"""The caller's half of a call: audio in -> VAD -> turns -> transcripts.

Each frame is decoded, resampled to 16 kHz (and denoised if asked), re-chunked for
Silero and sent to the VAD model, unless it is steady line noise between turns
(`vad_gate`); the segmenter turns probabilities into turns
(`speaking`, `silence`). When the caller pauses, the pause's audio is already what
the turn will hold, so it is transcribed at once (a *speculation*): its text says
how long the pause may last (`end_of_turn`), comes out as `asrDelta`, and becomes the
`asrFinal` the moment the turn ends; if the caller speaks again it is dropped. Each
turn's final is emitted in speaking order (`asrFinal`, `eou`); partials are decoded
while the caller speaks (`asrDelta`), the first turn is checked for an answering
machine, and caller speech over our own audio past the guards is a barge-in,
reported to the owner. Every model call goes through `ModelServices`.
"""

from __future__ import annotations

import asyncio
import collections
import itertools
import math
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

import numpy as np

from voxray.logs import bind_call, get_logger
from voxray.media import amd
from voxray.media.codecs import Codec, make_codec
from voxray.media.barge_in import BargeInRun, barge_in_threshold
from voxray.media.config import MediaConfig, MediaSink, fallback_metrics
from voxray.media.echo import EchoCanceller
from voxray.media.end_of_turn import EouBounds, decide
from voxray.media.messages import AsrRequest, AsrResult, CallCredentials, VadChunk
from voxray.media.playout import Track
from voxray.media.resample import Resampler
from voxray.media.services import ModelServices
from voxray.media.vad_gate import GateConfig, QuietGate, window_levels_db
from voxray.media.vad_segmenter import (
    WINDOW, SegmentEvent, SegmenterConfig, SpeechEnded, SpeechPaused, SpeechResumed,
    SpeechStarted, VadSegmenter,
)
from voxray.protocol import events as ev
from voxray.protocol.options import CallOption

log = get_logger("voxray.media")


def segmenter_config(option: CallOption, config: MediaConfig) -> SegmenterConfig:
    """The VAD's settings for a call, with active-call's meanings for what the agent set:
    `speechPadding` is the speech needed before it counts (`minSpeechMs` if both are set),
    `silencePadding` the silence that ends an utterance. Fields left unset keep voxray's
    defaults (96 ms of speech; the server's end-of-speech wait)."""
    vad = option.vad
    given = vad.model_fields_set if vad else set()
    min_speech = 96
    if vad is not None:
        use_padding = "speech_padding" in given and "min_speech_ms" not in given
        min_speech = max(32, vad.speech_padding) if use_padding else vad.min_speech_ms
    return SegmenterConfig(
        threshold=vad.voice_threshold if vad else 0.5,
        min_speech_ms=min_speech,
        end_silence_ms=vad.silence_padding if "silence_padding" in given else config.end_silence_ms,
        max_utterance_ms=(vad.max_buffer_duration_secs * 1000 if vad else 50_000),
    )


def eou_bounds(option: CallOption, config: MediaConfig, end_silence_ms: int) -> EouBounds | None:
    """Per-call end-of-turn waits; None: every turn ends after `end_silence_ms` of silence."""
    eou = option.eou
    if (eou and eou.type == "silence") or not config.speculative_asr:
        return None
    complete = eou.complete_ms if eou and eou.complete_ms is not None else config.eou_complete_ms
    incomplete = eou.timeout if eou and eou.timeout else config.eou_incomplete_ms
    incomplete = max(incomplete, end_silence_ms)
    return EouBounds(min(complete, end_silence_ms), end_silence_ms, incomplete)


@dataclass
class Speculation:
    """The transcript of a pause, started before anyone knows whether the turn ends there.

    If the caller says nothing more, it is the turn's final: the audio after the pause's
    first quiet window is silence, and is never decoded again.
    """

    index: int
    result: asyncio.Future[AsrResult | None] = field(default_factory=lambda: asyncio.get_running_loop().create_future())
    task: asyncio.Task | None = None
    verdict: str | None = None  # how its text read (end_of_turn), once it is in


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
        self.eou = eou_bounds(option, config, self.segmenter.config.end_silence_ms)
        self._spec: Speculation | None = None
        self._spec_tasks: set[asyncio.Task] = set()  # every speculation still running, the current one or not
        self._last_delta = ""
        self._pending16k = np.zeros(0, dtype=np.int16)
        self._frame16k = 0  # the caller's frame size in 16 kHz samples (0: no audio yet)
        self._vad_queue: asyncio.Queue[np.ndarray | None] = asyncio.Queue()
        self._vad_state: bytes | None = None
        self._vad_context: bytes | None = None
        self._gate = QuietGate(GateConfig(margin_db=config.vad_quiet_margin_db))
        self._skipped: np.ndarray | None = None  # the last chunk the gate kept from Silero
        self._asr_queue: asyncio.Queue[tuple[int, SpeechEnded, Speculation | None] | None] = asyncio.Queue()
        self._utterance_index = itertools.count()
        self._current_index = -1
        self._finalized_index = -1
        self._partial_task: asyncio.Task | None = None
        self._partial_at_ms = 0
        self._utt_start_ms = 0
        self._amd_done = not option.answer_machine_detection
        self._barge_in = BargeInRun()
        self._tasks: list[asyncio.Task] = []
        # `vad.silenceTimeout` (active-call's no-input timeout): where the quiet being timed
        # began, in ms of the caller's audio; None while the caller speaks.
        self._quiet_since: int | None = 0
        self.stream_epoch_ms: int | None = None  # wall clock of stream position 0; None: no audio yet
        self.muted = False
        self.last_audio_in = time.monotonic()
        self.tap: Callable[[np.ndarray, int], None] | None = None  # sees each frame heard (recording)
        self.echo: EchoCanceller | None = None  # the call's echo canceller (session.py sets it up)
        # (time.monotonic(), 16 kHz frame) the transport played, when it says so (UA nodes);
        # on /call the speaker feeds the canceller itself as it sends.
        self.played: collections.deque | None = None

    # -- lifecycle -------------------------------------------------------------------

    def start(self) -> None:
        with bind_call(self.call_id):  # tasks copy the context: their log lines carry the call id
            self._tasks = [asyncio.create_task(self._vad_loop(), name=f"vad-{self.call_id}"),
                           asyncio.create_task(self._asr_loop(), name=f"asr-{self.call_id}")]

    def pending_tasks(self) -> list[asyncio.Task]:
        return self._tasks + ([self._partial_task] if self._partial_task else []) + list(self._spec_tasks)

    def close(self) -> None:
        if self._denoiser is not None:
            self._denoiser.close()
        if self.echo is not None:
            self.echo.close()

    # -- audio in --------------------------------------------------------------------

    def feed(self, payload: bytes) -> None:
        """One encoded frame from the caller. Decoding is cheap; models run elsewhere."""
        pcm = self.codec.decode(payload)
        self.last_audio_in = time.monotonic()
        if self.stream_epoch_ms is None:
            self.stream_epoch_ms = int(time.time() * 1000)
        if self.muted:
            pcm = np.zeros_like(pcm)
        if self.tap is not None:  # the call's recorder
            self.tap(pcm, self.codec.sample_rate)
        pcm16 = self._to16k.process(pcm)
        if self.echo is not None:
            # Our own voice out first (before RNNoise, which is nonlinear): what the
            # transport played since the last frame is the canceller's reference.
            played = self.played
            while played:
                at, frame = played.popleft()
                self.echo.far_end(frame, at=at)
            pcm16 = self.echo.near_end(pcm16)
        if self._denoiser is not None:
            pcm16 = self._denoiser.process(pcm16)
        self._frame16k = pcm16.size or self._frame16k
        self._pending16k = np.concatenate((self._pending16k, pcm16))
        chunk = WINDOW * self.chunk_windows()
        while self._pending16k.size >= chunk:
            self._vad_queue.put_nowait(self._pending16k[:chunk])
            self._pending16k = self._pending16k[chunk:]

    def chunk_windows(self) -> int:
        """VAD windows per request now. While the caller speaks, each window goes alone: the
        pause's first quiet window starts the turn's transcript, and in a 96 ms chunk it
        waited up to 64 ms for the rest of the chunk. Between turns, the larger chunks
        keep the media plane cheap (a caller's onset needs 96 ms of speech anyway)."""
        speech = self.config.vad_speech_chunk_windows
        if speech and self.segmenter.speaking:
            return min(speech, self.config.vad_chunk_windows)
        return self.config.vad_chunk_windows

    def audio_due(self) -> float | None:
        """When (time.monotonic()) the caller's frame that completes the next VAD chunk should
        arrive, at the pace frames have come; None before any audio. Transports that read
        in batches (`/call` through Serve's proxy) read then, not on every frame."""
        if not self._frame16k:
            return None
        missing = WINDOW * self.chunk_windows() - self._pending16k.size
        return self.last_audio_in + math.ceil(missing / self._frame16k) * self._frame16k / 16000

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
            probs = await self._speech_probs(audio)
            if probs is None:
                continue
            for i, prob in enumerate(probs):
                window = audio[i * WINDOW:(i + 1) * WINDOW]
                for event in self.segmenter.push(window, prob):
                    await self._on_segment(event)
                await self._check_barge_in(prob)
                await self._check_no_input()
            self._maybe_partial()

    async def _speech_probs(self, audio: np.ndarray) -> list[float] | None:
        """Silero's score of each window of `audio`; None if the VAD call failed (reported)."""
        levels = window_levels_db(audio)
        if self._gate.skip(levels, in_turn=self.segmenter.speaking):
            # Steady line noise between turns: Silero's state and context stay as they were,
            # from a line like the one it last saw.
            self._skipped = audio
            return [0.0] * levels.size
        # A voice (or a noise) after skipped chunks: Silero hears the last of them first, so
        # that its state and context are the line's just before, as without the gate.
        lead, self._skipped = (self._skipped if self._gate.stale else None), None
        heard = audio if lead is None else np.concatenate((lead, audio))
        try:
            res = await self.services.vad(VadChunk(
                key=self.call_id, pcm=heard.astype("<i2").tobytes(),
                state=self._vad_state, context=self._vad_context,
            ))
        except Exception as exc:
            log.warning("vad failed", extra={"error": repr(exc)})
            await self.sink.emit(ev.Error(sender="vad", error=f"vad failed: {exc}", code=503))
            return None
        self._vad_state, self._vad_context = res.state, res.context
        probs = res.probs[len(res.probs) - levels.size:]
        self._gate.observe(levels, probs)
        return probs

    async def _check_no_input(self) -> None:
        """`silence` once the caller has said nothing for `vad.silenceTimeout` ms, and again
        every as long, as active-call does."""
        timeout = self.option.vad.silence_timeout if self.option.vad else None
        if not timeout or self._quiet_since is None:
            return
        now = self.segmenter.position_ms
        if now - self._quiet_since >= timeout:
            await self.sink.emit(ev.Silence(track_id=self.call_id, start_time=self._epoch(self._quiet_since),
                                            duration=now - self._quiet_since))
            self._quiet_since = now

    async def _on_segment(self, event: SegmentEvent) -> None:
        if isinstance(event, SpeechStarted):
            self._quiet_since = None
            self._current_index = next(self._utterance_index)
            self._utt_start_ms = event.start_ms
            self._partial_at_ms = 0
            self._last_delta = ""
            self._on_speech()
            await self.sink.emit(ev.Speaking(track_id=self.call_id, start_time=self._epoch(event.start_ms)))
        elif isinstance(event, SpeechPaused):
            self._speculate(event)
        elif isinstance(event, SpeechResumed):
            self._drop_speculation()
        else:
            # Queued before any await: a speculation's task may end a turn while the VAD
            # loop goes on, and the next turn must not take this one's index or place.
            index, spec, self._spec = self._current_index, self._spec, None
            if spec is not None and spec.index != index:
                self._cancel(spec)
                spec = None
            if self.transcribing:
                self._asr_queue.put_nowait((index, event, spec))
            self._quiet_since = event.end_ms
            await self.sink.emit(ev.Silence(
                track_id=self.call_id, start_time=self._epoch(event.end_ms), duration=event.silence_ms,
            ))

    # -- speculation: a pause's transcript, before the turn ends ----------------------

    @property
    def transcribing(self) -> bool:
        """False for a call whose agent asked for no transcription (asr provider "none")."""
        return not (self.option.asr is not None and self.option.asr.provider == "none")

    def _speculate(self, pause: SpeechPaused) -> None:
        if self.eou is None or not self.transcribing:
            return
        self._drop_speculation()
        spec = Speculation(index=self._current_index)
        spec.task = asyncio.create_task(self._run_speculation(spec, pause.audio), name=f"spec-{self.call_id}")
        self._spec_tasks.add(spec.task)
        spec.task.add_done_callback(self._spec_tasks.discard)
        # Cancelled before it ran, the task never resolves the result: a final waiting on it must not hang.
        spec.task.add_done_callback(lambda _: spec.result.done() or spec.result.set_result(None))
        self._spec = spec
        # Until its transcript says how the pause reads, the pause may last as long as any
        # (the `incomplete` bound): a loaded ASR answers late, and a caller who pauses
        # mid-sentence must not be cut at the usual wait meanwhile. What reads finished
        # still ends the turn the moment its transcript is in (as the final needs it anyway).
        self.segmenter.set_end_silence(self.eou.incomplete_ms)

    def _drop_speculation(self) -> None:
        if self._spec is not None:
            log.debug("speculation dropped: the caller went on", extra={"index": self._spec.index})
            self._cancel(self._spec)
            self._spec = None

    @staticmethod
    def _cancel(spec: Speculation) -> None:
        # Cancelling the handle call takes a queued request out of the ASR replica's queue.
        if spec.task is not None and not spec.result.done():
            spec.task.cancel()

    async def _run_speculation(self, spec: Speculation, audio: np.ndarray) -> None:
        result: AsrResult | None = None
        t0 = time.perf_counter()
        try:
            result = await self.services.transcribe(self._asr_request(audio))
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            log.info("speculative asr failed; the turn's end decodes again", extra={"error": repr(exc)})
        finally:
            if not spec.result.done():
                spec.result.set_result(result)
        if result is None:
            if self._spec is spec:  # nothing to read the pause by: the usual end
                for event in self.segmenter.release_end_silence():
                    await self._on_segment(event)
            return
        # Where the speculation's time went (round trip, the replica's queue, the model), for the debug log.
        timing = {"asr_ms": int((time.perf_counter() - t0) * 1000), "queued_ms": int(result.queued_s * 1000),
                  "compute_ms": int(result.compute_s * 1000), "silence_ms": self.segmenter.silence_ms}
        if self._spec is not spec:
            log.debug("speculation after the turn's end", extra=timing)
            return  # the turn already ended (the final takes the result) or the caller went on
        text = result.text.strip()
        decision = decide(text, self.eou)
        spec.verdict = decision.verdict
        log.debug("end of turn", extra={"verdict": decision.verdict, "wait_ms": decision.wait_ms, **timing})
        if text:
            await self._delta(spec.index, text)
        if self._spec is spec:
            # "unknown" keeps the usual end (end_silence_ms of silence, as without speculation).
            events = (self.segmenter.release_end_silence() if decision.verdict == "unknown"
                      else self.segmenter.set_end_silence(decision.wait_ms))
            for event in events:
                await self._on_segment(event)

    # -- barge-in --------------------------------------------------------------------

    async def _check_barge_in(self, prob: float) -> None:
        """Caller speech over our audio stops it, past the false-trigger guards."""
        b = self.option.barge_in
        track = self._playing()
        if not (b.enabled and track is not None):
            self._barge_in.reset()
            return
        # The echo guard asks for more confidence while our own voice may leak back; with
        # the canceller on there is no echo left to guard against (unless the agent asks).
        guard = b.echo_guard if self.echo is None or "echo_guard" in b.model_fields_set else 0.0
        speech = prob >= barge_in_threshold(self.segmenter.config.threshold, guard)
        since_start = (time.monotonic() - track.started_at) * 1000
        if self._barge_in.step(speech, since_start, b.min_speech_ms, b.ignore_ms):
            log.info("barge-in", extra={"play_id": track.play_id, "played_ms": track.ms(track.played)})
            await self._on_barge_in()

    # -- transcripts -----------------------------------------------------------------

    def _asr_request(self, pcm: np.ndarray, partial: bool = False) -> AsrRequest:
        asr = self.option.asr
        return AsrRequest(
            call_id=self.call_id, pcm=pcm.astype("<i2").tobytes(), partial=partial,
            language=asr.language if asr else None,
            provider=(asr.provider if asr and asr.provider else self.config.asr_provider),
            creds=CallCredentials(endpoint=asr.endpoint, secret_key=asr.secret_key,
                                  model=asr.model_type) if asr else None,
        )

    def _maybe_partial(self) -> None:
        interval = self.option.asr.partial_interval_ms if self.option.asr else 1000
        if not interval or not self.transcribing or not self.segmenter.speaking or self._spec is not None:
            return  # a pause's speculation is already transcribing all there is
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
            result = await self.services.transcribe(self._asr_request(audio, partial=True))
        except Exception as exc:
            log.info("partial asr failed", extra={"error": repr(exc)})
            return
        if not result.skipped and result.text.strip():
            await self._delta(index, result.text.strip())

    async def _delta(self, index: int, text: str) -> None:
        # Never after its final, never the same text twice.
        if index > self._finalized_index and index == self._current_index and text != self._last_delta:
            self._last_delta = text
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
            index, utt, spec = item
            t0 = time.perf_counter()
            result = await spec.result if spec is not None else None
            try:
                if result is None:  # no speculation, or it failed: the final decodes now
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
            await self._final(index, utt, text, spec)

    async def _final(self, index: int, utt: SpeechEnded, text: str, spec: Speculation | None) -> None:
        start, end = self._epoch(utt.start_ms), self._epoch(utt.end_ms)
        await self.sink.emit(ev.AsrFinal(track_id=self.call_id, index=index,
                                         start_time=start, end_time=end, text=text))
        if utt.forced:
            reason = "maxLength"
        else:  # a turn that ended before its speculation was read waited the usual time
            reason = (spec.verdict if spec else None) or ("unknown" if self.eou else "silence")
        await self.sink.emit(ev.Eou(track_id=self.call_id, completed=not utt.forced, reason=reason,
                                    silence_ms=utt.silence_ms))
        if not self._amd_done:
            self._amd_done = True
            verdict = amd.classify(utt.end_ms - utt.start_ms, text)
            log.info("amd", extra={"machine": verdict.machine, "reason": verdict.reason})
            if verdict.machine:
                await self.sink.emit(ev.AnswerMachineDetection(
                    track_id=self.call_id, start_time=start, end_time=end, text=text))
