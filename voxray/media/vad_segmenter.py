"""Turns per-window speech probabilities into utterances. Pure logic, no I/O.

Fed one VAD window (512 samples at 16 kHz = 32 ms) at a time with its probability,
it reports speech onset (after `min_speech_ms` of speech, so clicks do not count) and
speech end (after `end_silence_ms` below the lower threshold), and hands back the
utterance audio with `speech_padding_ms` of pre-roll and `silence_padding_ms` of
trailing audio, which is what ASR wants.
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


SegmentEvent = SpeechStarted | SpeechEnded


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
        self._silent_windows = 0

    @property
    def speaking(self) -> bool:
        return self._speaking

    @property
    def utterance_ms(self) -> int:
        """Length of the utterance in progress (0 when not speaking)."""
        return int(len(self._utt) * WINDOW_MS) if self._speaking else 0

    def snapshot(self) -> np.ndarray:
        """The utterance so far, for partial transcripts."""
        return np.concatenate(self._utt) if self._speaking and self._utt else np.zeros(0, np.int16)

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
                    self._silent_windows = 0
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
        if prob < self._neg_threshold:
            self._silent_windows += 1
        elif prob >= c.threshold:
            self._silent_windows = 0
        silence_ms = self._silent_windows * WINDOW_MS
        too_long = (len(self._utt) * WINDOW_MS) >= c.max_utterance_ms
        if silence_ms >= c.end_silence_ms or too_long:
            events.append(self._finish(index, forced=too_long and silence_ms < c.end_silence_ms))
        return events

    def _finish(self, index: int, forced: bool) -> SpeechEnded:
        c = self.config
        silent = self._silent_windows
        end_window = index + 1 - silent
        keep_tail = min(silent, round(c.silence_padding_ms / WINDOW_MS))
        windows = self._utt[: len(self._utt) - silent + keep_tail]
        audio = np.concatenate(windows) if windows else np.zeros(0, np.int16)
        event = SpeechEnded(
            start_ms=self._ms(self._start_window),
            end_ms=self._ms(end_window),
            silence_ms=self._ms(silent),
            audio=audio,
            forced=forced,
        )
        # Trailing silence seeds the next utterance's pre-roll.
        self._pre.extend(self._utt[len(self._utt) - silent:])
        self._speaking = False
        self._utt = []
        self._silent_windows = 0
        return event

    def flush(self) -> SpeechEnded | None:
        """End of stream: close an utterance in progress."""
        if not self._speaking:
            return None
        return self._finish(self._pos - 1, forced=True)
