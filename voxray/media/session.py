"""One call's media session: a `Listener` (the caller's audio, turns, transcripts) and a
`Speaker` (what the caller hears), wired together for barge-in, ducking and
wait-input. Transports feed it encoded frames and take encoded frames from its sink;
agents' commands reach it through `voxray.media.commands.apply_command`.
"""

from __future__ import annotations

import asyncio

from voxray.media.config import MediaConfig, MediaSink
from voxray.media.listener import Listener
from voxray.media.services import ModelServices
from voxray.media.speaker import Speaker
from voxray.media.vad_segmenter import VadSegmenter
from voxray.protocol.commands import Background, Play, Tts
from voxray.protocol.options import CallOption

__all__ = ["MediaSession"]


class MediaSession:
    def __init__(self, call_id: str, option: CallOption, services: ModelServices,
                 sink: MediaSink, config: MediaConfig | None = None) -> None:
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

    # -- lifecycle -------------------------------------------------------------------

    def start(self) -> None:
        self.listener.start()
        self.speaker.start()

    async def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        pending = self.listener.pending_tasks() + self.speaker.pending_tasks()
        for t in pending:
            t.cancel()
        await asyncio.gather(*pending, return_exceptions=True)
        self.listener.close()

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
