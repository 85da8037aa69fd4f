"""Turns per-window speech probabilities into utterances. Pure logic, no I/O.

Fed one VAD window (512 samples at 16 kHz = 32 ms) at a time with its probability,
it reports speech onset (after `min_speech_ms` of speech, so clicks do not count) and
speech end (after `end_silence_ms` below the lower threshold), and hands back the
utterance audio with `speech_padding_ms` of pre-roll and `silence_padding_ms` of
trailing audio, which is what ASR wants.

Between the two it reports a pause (`SpeechPaused`) at the first window below the
onset threshold (`pause_ms`): the utterance so far, speech and Silero's ~100 ms of
release included, is what the caller said if they say nothing more, so its transcript
can be started early; `SpeechResumed` (a window back above the threshold) says that
audio is void. How long the pause may last before the turn ends can be set for each
pause (`set_end_silence`, `release_end_silence`), e.g. from that transcript; unless set,
the turn ends after `end_silence_ms` of silence (below the lower threshold).
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

import numpy as np

SAMPLE_RATE = 16000
WINDOW = 512
WINDOW_MS = WINDOW * 1000 / SAMPLE_RATE  # 32 ms


@dataclass(frozen=True)
class SegmenterConfig:
    threshold: float = 0.5
    min_speech_ms: int = 96
    end_silence_ms: int = 480
    speech_padding_ms: int = 250
    silence_padding_ms: int = 100
    max_utterance_ms: int = 50_000
    pause_ms: int = 32  # quiet (below `threshold`) this long is a pause


@dataclass(frozen=True)
class SpeechStarted:
    start_ms: int  # stream position of the first speech window


@dataclass(frozen=True)
class SpeechEnded:
    start_ms: int  # stream position of the utterance's first speech window
    end_ms: int  # stream position where speech stopped (silence began)
    silence_ms: int  # silence observed before the end was declared
    audio: np.ndarray  # int16 @ 16 kHz, padded
    forced: bool = False  # ended by the length cap, not by silence


@dataclass(frozen=True)
class SpeechPaused:
    start_ms: int  # the utterance's first speech window
    end_ms: int  # where speech stopped (the first quiet window)
    audio: np.ndarray  # the utterance so far: all the caller said if the pause holds


@dataclass(frozen=True)
class SpeechResumed:
    at_ms: int  # the caller spoke again before the turn ended: the pause's audio is void


SegmentEvent = SpeechStarted | SpeechPaused | SpeechResumed | SpeechEnded


class VadSegmenter:
    def __init__(self, config: SegmenterConfig | None = None) -> None:
        self.config = config or SegmenterConfig()
        c = self.config
        self._neg_threshold = max(c.threshold - 0.15, 0.01)
        self._pre = deque(maxlen=max(1, round(c.speech_padding_ms / WINDOW_MS)))
        self._candidate: list[np.ndarray] = []
        self._utt: list[np.ndarray] = []
        self._speaking = False
        self._pos = 0  # windows seen
        self._start_window = 0
        self._silent_windows = 0  # trailing windows below the lower threshold (the classic end)
        self._quiet_windows = 0  # trailing windows below the onset threshold (the pause)
        self._paused = False
        self._pause_wait_ms: int | None = None  # set for this pause: it ends the turn once this long

    @property
    def speaking(self) -> bool:
        return self._speaking

    @property
    def position_ms(self) -> int:
        """How much audio the segmenter has seen."""
        return int(self._pos * WINDOW_MS)

    @property
    def utterance_ms(self) -> int:
        """Length of the utterance in progress (0 when not speaking)."""
        return int(len(self._utt) * WINDOW_MS) if self._speaking else 0

    def snapshot(self) -> np.ndarray:
        """The utterance so far, for partial transcripts."""
        return np.concatenate(self._utt) if self._speaking and self._utt else np.zeros(0, np.int16)

    @property
    def silence_ms(self) -> int:
        """How long the caller has been quiet (the pause so far; 0 while speaking)."""
        return int(self._quiet_windows * WINDOW_MS)

    def set_end_silence(self, ms: int) -> list[SegmentEvent]:
        """End the turn once this pause lasts `ms` (instead of `end_silence_ms` of silence).

        Holds until the caller speaks again. Returns the end at once if the pause is
        already that long.
        """
        return self._end_pause_after(ms)

    def release_end_silence(self) -> list[SegmentEvent]:
        """Back to the usual end for this pause (`end_silence_ms` of silence) after a wait set
        with `set_end_silence`. Returns the end at once if the pause is already that long."""
        return self._end_pause_after(None)

    def _end_pause_after(self, wait_ms: int | None) -> list[SegmentEvent]:
        if not (self._speaking and self._paused):
            return []
        self._pause_wait_ms = wait_ms
        return [self._finish(self._pos - 1, forced=False)] if self._turn_over() else []

    def _turn_over(self) -> bool:
        if self._pause_wait_ms is not None:
            return self.silence_ms >= self._pause_wait_ms
        return self._silent_windows * WINDOW_MS >= self.config.end_silence_ms

    def _ms(self, window_index: int) -> int:
        return int(window_index * WINDOW_MS)

    def push(self, window: np.ndarray, prob: float) -> list[SegmentEvent]:
        """Feed one window and its speech probability; return what happened."""
        c = self.config
        events: list[SegmentEvent] = []
        index = self._pos
        self._pos += 1
        if not self._speaking:
            if prob >= c.threshold:
                if not self._candidate:
                    self._start_window = index
                self._candidate.append(window)
                if len(self._candidate) * WINDOW_MS >= c.min_speech_ms:
                    self._speaking = True
                    self._silent_windows = self._quiet_windows = 0
                    self._utt = list(self._pre) + self._candidate
                    self._pre.clear()
                    self._candidate = []
                    events.append(SpeechStarted(self._ms(self._start_window)))
            elif prob < self._neg_threshold or not self._candidate:
                # The onset did not hold: its windows become pre-roll.
                self._pre.extend(self._candidate)
                self._candidate = []
                self._pre.append(window)
            else:
                self._candidate.append(window)
            return events

        self._utt.append(window)
        if prob >= c.threshold:
            self._silent_windows = self._quiet_windows = 0
            if self._paused:
                self._paused, self._pause_wait_ms = False, None
                events.append(SpeechResumed(self._ms(index)))
        else:
            self._quiet_windows += 1
            if prob < self._neg_threshold:
                self._silent_windows += 1
        too_long = (len(self._utt) * WINDOW_MS) >= c.max_utterance_ms
        if self._turn_over() or too_long:
            events.append(self._finish(index, forced=not self._turn_over()))
        elif not self._paused and self._quiet_windows * WINDOW_MS >= max(c.pause_ms, WINDOW_MS):
            self._paused = True
            events.append(SpeechPaused(self._ms(self._start_window), self._ms(index + 1 - self._quiet_windows),
                                       np.concatenate(self._utt)))
        return events

    @property
    def _tail_windows(self) -> int:
        return round(self.config.silence_padding_ms / WINDOW_MS)

    def _audio(self) -> np.ndarray:
        """The utterance as it ends now: speech plus at most the tail padding of its silence."""
        keep = len(self._utt) - self._silent_windows + min(self._silent_windows, self._tail_windows)
        windows = self._utt[:keep]
        return np.concatenate(windows) if windows else np.zeros(0, np.int16)

    def _finish(self, index: int, forced: bool) -> SpeechEnded:
        silent = self._silent_windows
        # A wait set for the pause counts from its first quiet window; the classic one from the silence.
        gap = self._quiet_windows if self._pause_wait_ms is not None else silent
        event = SpeechEnded(
            start_ms=self._ms(self._start_window),
            end_ms=self._ms(index + 1 - gap),
            silence_ms=self._ms(gap),
            audio=self._audio(),
            forced=forced,
        )
        # Trailing silence seeds the next utterance's pre-roll.
        self._pre.extend(self._utt[len(self._utt) - silent:])
        self._speaking = False
        self._utt = []
        self._silent_windows = self._quiet_windows = 0
        self._paused, self._pause_wait_ms = False, None
        return event

    def flush(self) -> SpeechEnded | None:
        """End of stream: close an utterance in progress."""
        if not self._speaking:
            return None
        return self._finish(self._pos - 1, forced=True)
