"""One call's media session: a `Listener` (the caller's audio, turns, transcripts) and a
`Speaker` (what the caller hears), wired together for barge-in, ducking and
wait-input. Transports feed it encoded frames and take encoded frames from its sink;
agents' commands reach it through `voxray.media.commands.apply_command`.
"""

from __future__ import annotations

import asyncio
import collections

from voxray.media.config import MediaConfig, MediaSink
from voxray.logs import bind_call, get_logger
from voxray.media.echo import EchoCanceller, EchoConfig
from voxray.media.listener import Listener
from voxray.media.recorder import CallRecorder, Recording, open_recorder
from voxray.media.services import ModelServices
from voxray.media.speaker import Speaker
from voxray.media.vad_segmenter import VadSegmenter
from voxray.protocol.commands import Background, Play, Tts
from voxray.protocol import events as ev
from voxray.protocol.errors import ProtocolError
from voxray.protocol.options import CallOption, RecorderOption

__all__ = ["MediaSession"]
log = get_logger("voxray.media")


def echo_canceller(config: MediaConfig, option: CallOption) -> EchoCanceller | None:
    """The call's echo canceller: on where the server says (`media.echo_cancel`), unless the
    agent turns it off for the call (`option.echoCancel`, ext)."""
    wanted = option.echo_cancel if option.echo_cancel is not None else config.echo_cancel
    if not wanted:
        return None
    return EchoCanceller(EchoConfig(delay_ms=config.echo_delay_ms))


class MediaSession:
    def __init__(self, call_id: str, option: CallOption, services: ModelServices,
                 sink: MediaSink, config: MediaConfig | None = None,
                 played: collections.deque | None = None) -> None:
        """played: where the transport logs (time, 16 kHz frame) as it plays them (UA nodes);
        None: the audio is played as the speaker sends it (/call)."""
        self.call_id = call_id
        self.option = option
        self.config = config or MediaConfig()
        self.speaker = Speaker(call_id, option, services, sink, self.config,
                               caller_speaking=lambda: self.listener.segmenter.speaking)
        self.listener = Listener(call_id, option, services, sink, self.config,
                                 playing=self.speaker.playing,
                                 on_barge_in=lambda: self.speaker.interrupt(graceful=False),
                                 on_speech=self.speaker.cancel_wait_input)
        self.closed = False
        self._ambiance: asyncio.Task | None = None
        self.echo = echo_canceller(self.config, option)
        if self.echo is not None:
            self.listener.echo = self.echo
            if played is not None:
                self.listener.played = played
            else:
                self.speaker.echo = self.echo
        self.recorder: CallRecorder | None = None
        self.recording: Recording | None = None  # where the recording went, once closed
        self.start_recording(option.recorder)

    def start_recording(self, option: RecorderOption | None) -> None:
        """Record both sides from now on (the call's option, or SIP's `ringing`/`accept`).
        A bad file name or format is the agent's error (ProtocolError)."""
        if self.recorder is not None or option is None or not option.recorder_file:
            return
        with bind_call(self.call_id):
            self.recorder = open_recorder(self.config.recordings_dir, option, self.call_id)
        if self.recorder is not None:
            self.listener.tap = self.recorder.heard
            self.speaker.tap = self.recorder.sent

    # -- lifecycle -------------------------------------------------------------------

    def start(self) -> None:
        self.listener.start()
        self.speaker.start()
        amb = self.option.ambiance
        if amb is not None and amb.enabled and amb.path:
            # active-call's ambiance is voxray's background music, started with the call.
            cmd = Background(url=amb.path, volume=amb.normal_level, transition=amb.transition_speed,
                             duck=min(1.0, amb.duck_level / amb.normal_level) if amb.normal_level else 0.0)
            self._ambiance = asyncio.get_running_loop().create_task(self._start_ambiance(cmd))

    async def _start_ambiance(self, cmd: Background) -> None:
        try:
            await self.speaker.background(cmd)
        except Exception as exc:  # a bad path is the agent's error; the call goes on without it
            with bind_call(self.call_id):
                log.warning("ambiance not started", extra={"error": repr(exc)})
            code = exc.code if isinstance(exc, ProtocolError) else 400
            await self.speaker.sink.emit(ev.Error(sender="media", code=code,
                                                  error=f"option.ambiance.path: {getattr(exc, 'message', exc)}"))

    async def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        pending = self.listener.pending_tasks() + self.speaker.pending_tasks() + (
            [self._ambiance] if self._ambiance is not None else [])
        for t in pending:
            t.cancel()
        await asyncio.gather(*pending, return_exceptions=True)
        self.listener.close()
        if self.recorder is not None:
            self.listener.tap = self.speaker.tap = None
            with bind_call(self.call_id):
                try:
                    self.recording = await self.recorder.close()
                    log.info("recording written", extra={"file": self.recording.path,
                                                         "duration_ms": self.recording.duration_ms})
                except OSError as exc:  # a full disk must not fail the hangup
                    log.warning("recording failed", extra={"error": repr(exc), "file": str(self.recorder.path)})

    # -- the caller ------------------------------------------------------------------

    def feed(self, payload: bytes) -> None:
        """One encoded frame from the caller."""
        self.listener.feed(payload)

    def audio_due(self) -> float | None:
        """When (time.monotonic()) the caller's frame completing the next VAD chunk should arrive."""
        return self.listener.audio_due()

    @property
    def segmenter(self) -> VadSegmenter:
        return self.listener.segmenter

    @property
    def last_audio_in(self) -> float:
        return self.listener.last_audio_in

    @property
    def audio_started(self) -> bool:
        """Whether any caller audio has arrived."""
        return self.listener.stream_epoch_ms is not None

    # -- the agent -------------------------------------------------------------------

    async def tts(self, cmd: Tts) -> None:
        await self.speaker.tts(cmd)

    async def play(self, cmd: Play) -> None:
        await self.speaker.play(cmd)

    async def background(self, cmd: Background) -> None:
        await self.speaker.background(cmd)

    async def interrupt(self, graceful: bool = False) -> None:
        await self.speaker.interrupt(graceful)

    def pause(self) -> None:
        self.speaker.pause()

    def resume(self) -> None:
        self.speaker.resume()
