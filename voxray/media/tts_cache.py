"""Synthesized prompts kept for replay: `tts` with a `cacheKey` plays without synthesis the
second time (active-call's TTS cache).

One cache per process (the ingress replica for `/call`, each UA worker for SIP and
WebRTC), shared by its calls, bounded in bytes, least recently used out first. Keys are
the agent's `cacheKey` plus everything that changes the audio (provider, voice, speed,
sample rate), so one key asked for in two voices is two entries. Without a `cacheKey` a
reply is not kept whole (an agent's replies rarely repeat word for word, its prompts do),
but its short pieces are (`media.tts_phrase_max_chars`): openers such as "Sure," or "One
moment." come back all the time, and a reply's first piece is what the caller waits for.
"""

from __future__ import annotations

import hashlib
import threading
from collections import OrderedDict
from dataclasses import dataclass

import numpy as np


def cache_key(agent_key: str, *, provider: str | None, speaker: str | None, speed: float,
              sample_rate: int, volume: int) -> str:
    """The entry for an agent's `cacheKey` with the settings that shape its audio."""
    return _digest(agent_key, provider or "", speaker or "", f"{speed:g}", str(sample_rate), str(volume))


def phrase_key(text: str, *, provider: str | None, speaker: str | None, speed: float, sample_rate: int) -> str:
    """The entry for a short piece of a reply, kept without the agent asking: its text in
    one voice, before the track's volume (applied as it plays)."""
    return _digest("phrase", text, provider or "", speaker or "", f"{speed:g}", str(sample_rate))


def _digest(*parts: str) -> str:
    return hashlib.sha256("\x1f".join(parts).encode()).hexdigest()


@dataclass(frozen=True)
class CachedAudio:
    pcm: np.ndarray  # int16 at the call's codec rate, read-only (shared by calls)
    provider: str  # who synthesized it (the agent's metrics name it)


class TtsCache:
    """Synthesized audio by key, at most `max_bytes` of PCM in all."""

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self._entries: OrderedDict[str, CachedAudio] = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()  # UA workers' sessions run on one loop, but cheap insurance
        self.hits = 0
        self.misses = 0

    def get(self, key: str) -> CachedAudio | None:
        with self._lock:
            entry = self._entries.get(key)
            if entry is None:
                self.misses += 1
                return None
            self._entries.move_to_end(key)
            self.hits += 1
            return entry

    def has(self, key: str) -> bool:
        """Whether `key` is kept (counted neither a hit nor a miss)."""
        with self._lock:
            return key in self._entries

    def put(self, key: str, pcm: np.ndarray, provider: str) -> bool:
        """Keep `pcm` under `key`; False when it alone exceeds the cache."""
        size = pcm.nbytes
        if size > self.max_bytes or size == 0:
            return False
        pcm = pcm.copy()
        pcm.setflags(write=False)  # handed to many tracks: nobody may change it
        with self._lock:
            old = self._entries.pop(key, None)
            if old is not None:
                self._bytes -= old.pcm.nbytes
            self._entries[key] = CachedAudio(pcm, provider)
            self._bytes += size
            while self._bytes > self.max_bytes:
                _, dropped = self._entries.popitem(last=False)
                self._bytes -= dropped.pcm.nbytes
        return True

    def __len__(self) -> int:
        return len(self._entries)

    @property
    def bytes(self) -> int:
        return self._bytes


_shared: TtsCache | None = None


def shared_cache(max_mb: float) -> TtsCache | None:
    """This process's cache (None when `media.tts_cache_mb` is 0)."""
    global _shared
    if max_mb <= 0:
        return None
    if _shared is None or _shared.max_bytes != int(max_mb * 1024 * 1024):
        _shared = TtsCache(int(max_mb * 1024 * 1024))
    return _shared
