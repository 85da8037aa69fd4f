"""The agent's half of a call: what the caller hears, paced in real time.

`tts` (whole or streamed token by token, spoken clause by clause), `play` (a file or
URL through the play policy), `tts` with `base64` (the agent's own PCM), a looped
`background` under it all (ducked while anyone speaks), `interrupt`, `pause` and
`resume`, `waitInputTimeout` and `autoHangup`. One frame leaves every ptime on an
absolute clock; `trackStart`, `trackEnd` and `interruption` report each track.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import random
import time
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import aclosing
from dataclasses import dataclass, field

import numpy as np

from voxray.logs import bind_call, get_logger
from voxray.media.audio_source import AudioSourcePolicy, load_audio
from voxray.media.codecs import Codec, make_codec
from voxray.media.config import MediaConfig, MediaSink, fallback_metrics
from voxray.media.echo import EchoCanceller
from voxray.media.messages import CallCredentials, TtsRequest
from voxray.media.mixer import LoopedAudio
from voxray.media.playout import Playout, Track
from voxray.media.resample import resample
from voxray.media.services import ModelServices
from voxray.media.text_chunker import TextChunker, split_first_clause
from voxray.media.tts_cache import TtsCache, cache_key, phrase_key, shared_cache
from voxray.protocol import events as ev
from voxray.protocol.commands import Background, Play, Tts
from voxray.protocol.errors import ProtocolError
from voxray.protocol.options import CallOption, SynthesisOption

log = get_logger("voxray.media")


@dataclass
class TrackFeed:
    """Text waiting to be spoken on one track, and the task that speaks it."""

    track: Track
    streaming: bool
    created: float = field(default_factory=time.perf_counter)
    first_clause: bool = True  # a whole text's first clause is synthesized on its own
    chunker: TextChunker = field(default_factory=TextChunker)
    pieces: asyncio.Queue = field(default_factory=asyncio.Queue)
    open: bool = True
    task: asyncio.Task | None = None

    def push(self, text: str) -> None:
        self.track.text = (self.track.text + text) if self.streaming else text
        if self.streaming:
            pieces = self.chunker.push(text)
        else:
            pieces = split_first_clause(text) if self.first_clause else [text]
        for piece in pieces:
            self.pieces.put_nowait(piece)

    def close(self) -> None:
        if self.open:
            self.open = False
            for piece in self.chunker.flush() if self.streaming else []:
                self.pieces.put_nowait(piece)
            self.pieces.put_nowait(None)


class Speaker:
    def __init__(self, call_id: str, option: CallOption, services: ModelServices, sink: MediaSink,
                 config: MediaConfig, *, caller_speaking: Callable[[], bool]) -> None:
        self.call_id = call_id
        self.option = option
        self.services = services
        self.sink = sink
        self.config = config
        self._caller_speaking = caller_speaking  # background music ducks under the caller too
        self.codec: Codec = make_codec(option.codec)
        self.playout = Playout()
        self._audio_ready = asyncio.Event()
        self._feeds: dict[int, TrackFeed] = {}
        self._wait_input: asyncio.Task | None = None
        self._bg: LoopedAudio | None = None  # background music at the codec rate
        self._bg_cmd: Background | None = None
        self._bg_level: float | None = None  # the music's gain now (it glides with `transition`)
        self._ssrc = random.getrandbits(32)
        self._tasks: list[asyncio.Task] = []
        self.play_policy = AudioSourcePolicy.of(config)
        self.tts_cache: TtsCache | None = shared_cache(config.tts_cache_mb)
        self.muted = False
        self.tap: Callable[[np.ndarray, int], None] | None = None  # sees each frame sent (recording)
        self.echo: EchoCanceller | None = None  # fed here when the transport does not say when it played

    # -- lifecycle -------------------------------------------------------------------

    def start(self) -> None:
        with bind_call(self.call_id):
            self._tasks = [asyncio.create_task(self._playout_loop(), name=f"playout-{self.call_id}")]

    def pending_tasks(self) -> list[asyncio.Task]:
        return [f.task for f in self._feeds.values() if f.task] + self._tasks + (
            [self._wait_input] if self._wait_input else [])

    def playing(self) -> Track | None:
        """The track the caller hears now (started, not paused), if any."""
        track = self.playout.current
        return track if track is not None and track.started and not self.playout.paused else None

    def cancel_wait_input(self) -> None:
        if self._wait_input:
            self._wait_input.cancel()

    # -- commands --------------------------------------------------------------------

    def _new_track(self, play_id: str | None, auto_hangup: bool, wait_input_timeout: float | None) -> Track:
        return Track(play_id=play_id or uuid.uuid4().hex[:12], sample_rate=self.codec.sample_rate,
                     auto_hangup=auto_hangup, wait_input_timeout=wait_input_timeout)

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
        self.cancel_wait_input()

    def _enqueue_ready(self, track: Track, pcm: np.ndarray) -> None:
        track.feed(pcm)
        track.finish_feeding()
        self.playout.enqueue(track)
        self._audio_ready.set()

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
        track = self._new_track(cmd.play_id, cmd.auto_hangup, cmd.wait_input_timeout)
        key = None if cmd.streaming else self._cache_key(cmd)
        cached = self.tts_cache.get(key) if key and self.tts_cache is not None else None
        if cached is not None:
            track.text = cmd.text
            self._enqueue_ready(track, cached.pcm)
            await self.sink.emit(ev.Metrics(key=f"completed.tts.{cached.provider}", duration=0,
                                            data={"playId": track.play_id, "cached": True,
                                                  "length": int(cached.pcm.nbytes)}))
            return
        feed = TrackFeed(track, streaming=cmd.streaming, first_clause=self.config.tts_first_clause,
                         chunker=TextChunker(ready=lambda clause: self._phrase_kept(clause, cmd)))
        feed.push(cmd.text)
        if not cmd.streaming or cmd.end_of_stream:
            feed.close()
        self.playout.enqueue(track)
        self._feeds[id(track)] = feed
        feed.task = asyncio.create_task(self._speak(feed, cmd, key), name=f"tts-{track.play_id}")

    def _synthesis_option(self, cmd: Tts) -> SynthesisOption | None:
        return cmd.option or self.option.tts

    def _cache_key(self, cmd: Tts) -> str | None:
        opt = self._synthesis_option(cmd)
        agent_key = cmd.cache_key or (opt.cache_key if opt else None)
        if not agent_key:
            return None
        req = self._tts_request("", cmd)
        return cache_key(agent_key, provider=req.provider, speaker=req.speaker, speed=req.speed,
                         sample_rate=req.sample_rate, volume=opt.volume if opt else 5)

    async def play(self, cmd: Play) -> None:
        # active-call: a clip without a playId is known by its URL, so another clip replaces it.
        play_id = cmd.play_id or cmd.url
        await self._prepare_track(play_id)
        track = self._new_track(play_id, cmd.auto_hangup, cmd.wait_input_timeout)
        # Load before queueing so a bad URL is an error for the command, not a silent track.
        self._enqueue_ready(track, await load_audio(cmd.url, self.codec.sample_rate, self.play_policy))

    async def _play_pcm(self, cmd: Tts) -> None:
        """`tts` with `base64`: the agent brings its own 16 kHz PCM."""
        try:
            raw = base64.b64decode(cmd.text, validate=True)
        except (binascii.Error, ValueError):
            raise ProtocolError("tts base64: text is not valid base64", 422) from None
        if len(raw) % 2:
            raise ProtocolError("tts base64: PCM must hold whole 16-bit samples", 422)
        pcm = np.frombuffer(raw, dtype="<i2").astype(np.int16)
        await self.play_pcm(pcm, 16000, cmd.play_id, cmd.auto_hangup, cmd.wait_input_timeout)

    async def play_pcm(self, pcm: np.ndarray, rate: int, play_id: str | None = None, auto_hangup: bool = False,
                       wait_input_timeout: float | None = None) -> None:
        """Decoded audio as a track (the agent's own PCM, SIP's ringtone)."""
        await self._prepare_track(play_id)
        track = self._new_track(play_id, auto_hangup, wait_input_timeout)
        self._enqueue_ready(track, resample(pcm, rate, self.codec.sample_rate))

    def _tts_request(self, piece: str, cmd: Tts) -> TtsRequest:
        opt = self._synthesis_option(cmd)
        return TtsRequest(
            call_id=self.call_id, text=piece, sample_rate=self.codec.sample_rate,
            speed=opt.speed if opt else 1.0,
            speaker=cmd.speaker or (opt.speaker if opt else None),
            provider=(opt.provider if opt and opt.provider else self.config.tts_provider),
            creds=CallCredentials(endpoint=opt.endpoint, secret_key=opt.secret_key,
                                  model=(opt.extra or {}).get("model")) if opt else None,
        )

    async def _speak(self, feed: TrackFeed, cmd: Tts, key: str | None = None) -> None:
        track = feed.track
        first = True
        opt = self._synthesis_option(cmd)
        gain = (opt.volume if opt else 5) / 5
        kept: list[np.ndarray] | None = [] if key and self.tts_cache is not None else None
        provider = None
        try:
            while True:
                piece = await feed.pieces.get()
                if piece is None:
                    if kept and provider and not track.failed:
                        self.tts_cache.put(key, np.concatenate(kept), provider)
                    if provider is not None:
                        await self.sink.emit(ev.Metrics(
                            key=f"completed.tts.{provider}",
                            duration=int((time.perf_counter() - feed.created) * 1000),
                            data={"playId": track.play_id, "cached": False, "length": track.fed * 2}))
                    return
                try:
                    async with aclosing(self._piece_audio(piece, cmd, first)) as audio_of_piece:
                        async for pcm, provider, cached in audio_of_piece:
                            if first:
                                first = False
                                # From the command (first token when streaming) to first audio.
                                await self.sink.emit(ev.Metrics(
                                    key=f"ttfb.tts.{provider}",
                                    duration=int((time.perf_counter() - feed.created) * 1000),
                                    data={"playId": track.play_id, "streaming": feed.streaming, "cached": cached},
                                ))
                            if gain != 1.0:  # SynthesisOption.volume: 5 is the voice as synthesized
                                pcm = np.clip(np.rint(pcm * np.float32(gain)), -32768, 32767).astype(np.int16)
                            if kept is not None:
                                kept.append(pcm)
                            track.feed(pcm)
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

    async def _piece_audio(self, piece: str, cmd: Tts, first: bool) -> AsyncIterator[tuple[np.ndarray, str, bool]]:
        """One piece's audio as it comes, with who made it and whether it was kept: a short
        phrase said before in the same voice replays from the process's cache, anything
        else is synthesized (and a short phrase kept for next time)."""
        req = self._tts_request(piece, cmd).model_copy(update={"first_piece": first})
        key = self._phrase_key(req)
        cached = self.tts_cache.get(key) if key else None
        if cached is not None:
            yield cached.pcm, cached.provider, True
            return
        kept: list[np.ndarray] = []
        failed = False
        provider = None
        async with aclosing(self.services.synthesize(req)) as stream:
            async for audio in stream:
                if audio.failures:
                    failed = True  # another provider's voice: not what the key names
                    await self.sink.emit(fallback_metrics("tts", audio.provider, audio.failures))
                provider = audio.provider
                pcm = np.frombuffer(audio.pcm, dtype="<i2").astype(np.int16)
                if key:
                    kept.append(pcm)  # a short piece is whole in a chunk or two: kept, then played
                else:
                    yield pcm, audio.provider, False
        if kept:  # only a keyed piece gathers its chunks
            # Kept before the caller hears it: a caller who hangs up at its first sound (or an
            # interrupt) must not leave the next call to synthesize it again.
            pcm = np.concatenate(kept)
            if not failed:
                self.tts_cache.put(key, pcm, provider)
            yield pcm, provider, False

    def _phrase_kept(self, text: str, cmd: Tts) -> bool:
        """Whether `text` would replay from the cache now (a streamed reply's opener)."""
        key = self._phrase_key(self._tts_request(text, cmd))  # None without a cache
        return key is not None and self.tts_cache.has(key)

    def _phrase_key(self, req: TtsRequest) -> str | None:
        """The cache entry of a short piece (an opener like "Sure,"), or None: too long to
        repeat often, no cache, or synthesized on the agent's own account or endpoint."""
        limit = self.config.tts_phrase_max_chars
        text = req.text.strip()
        if not (limit and self.tts_cache is not None and text and len(text) <= limit):
            return None
        if req.creds is not None and (req.creds.secret_key or req.creds.endpoint):
            return None
        return phrase_key(text, provider=req.provider, speaker=req.speaker, speed=req.speed,
                          sample_rate=req.sample_rate)

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

    async def background(self, cmd: Background) -> None:
        if not cmd.url:
            self._bg, self._bg_cmd = None, None
            return
        pcm = await load_audio(cmd.url, self.codec.sample_rate, self.play_policy)
        self._bg, self._bg_cmd, self._bg_level = LoopedAudio(pcm, loop=cmd.loop), cmd, None
        self._audio_ready.set()

    def pause(self) -> None:
        self.playout.paused = True

    def resume(self) -> None:
        self.playout.paused = False
        self._audio_ready.set()

    # -- the clock -------------------------------------------------------------------

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

        self.cancel_wait_input()
        self._wait_input = asyncio.create_task(wait(), name=f"wait-input-{self.call_id}")

    def _background_frame(self, n: int, ducked: bool) -> np.ndarray | None:
        bg, cmd = self._bg, self._bg_cmd
        if bg is None or cmd is None:
            return None
        target = cmd.volume * (cmd.duck if ducked else 1.0)
        if cmd.transition is None or self._bg_level is None:
            self._bg_level = target
        else:  # glide toward the new level, one step per frame
            step = cmd.transition
            self._bg_level = min(target, self._bg_level + step) if self._bg_level < target \
                else max(target, self._bg_level - step)
        frame = bg.take(n, self._bg_level)
        if frame is None:  # a clip that does not loop is over
            self._bg, self._bg_cmd = None, None
        return frame

    async def _playout_loop(self) -> None:
        frame_samples = int(self.codec.sample_rate * self.config.ptime_ms / 1000)
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
            bg = self._background_frame(frame_samples, ducked=frame is not None or self._caller_speaking())
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
            if not self.muted:
                if self.tap is not None:  # the call's recorder
                    self.tap(frame, self.codec.sample_rate)
                if self.echo is not None:
                    # The canceller's reference, on the playout clock: the caller plays frames
                    # in order at their pace, so a frame this loop sent late still sounds on time.
                    self.echo.far_end(frame, sample_rate=self.codec.sample_rate,
                                      at=deadline if deadline is not None else time.monotonic())
                await self.sink.send_audio(self.codec.encode(frame))
            # Absolute schedule: frames leave every ptime without drift.
            now = time.monotonic()
            deadline = now + period if deadline is None else deadline + period
            delay = deadline - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            elif delay < -0.2:
                deadline = time.monotonic()  # far behind (e.g. loop stall): do not burst
