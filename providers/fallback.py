"""Choosing a provider per call, with retries and fallback to the next on error or timeout."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import httpx
import numpy as np

from voxray.logs import get_logger
from voxray.providers.base import AsrProvider, CallCredentials, ProviderError, Transcript, TtsChunk, TtsProvider

log = get_logger("voxray.providers")

# What counts as "this provider failed, try again or the next one".
FAILURES = (ProviderError, httpx.HTTPError, asyncio.TimeoutError, OSError, ValueError)


def _order(names: list[str], preferred: str | None, kind: str) -> list[str]:
    if preferred is None:
        return names
    if preferred not in names:
        raise ProviderError(f"unknown {kind} provider '{preferred}' (have: {', '.join(names)})")
    return [preferred] + [n for n in names if n != preferred]


class AsrChain:
    def __init__(self, providers: list[AsrProvider], timeouts: dict[str, float | None], retries: int = 1) -> None:
        self.providers = {p.name: p for p in providers}
        self.names = [p.name for p in providers]
        self.timeouts = timeouts
        self.retries = retries

    async def transcribe(self, pcm16k: np.ndarray, language: str | None, preferred: str | None,
                         creds: CallCredentials | None) -> tuple[Transcript, str, list[str]]:
        failures: list[str] = []
        for name in _order(self.names, preferred, "ASR"):
            provider = self.providers[name]
            # The agent's credentials belong to the provider it chose.
            call_creds = creds if name == (preferred or self.names[0]) else None
            for attempt in range(1 + self.retries):
                try:
                    t = await asyncio.wait_for(provider.transcribe(pcm16k, language, call_creds),
                                               self.timeouts.get(name))
                    return t, name, failures
                except FAILURES as exc:
                    failures.append(f"{name}: {type(exc).__name__}: {exc}"[:300])
                    log.warning("asr provider failed", extra={"provider": name, "attempt": attempt,
                                                              "error": repr(exc)[:300]})
                    await asyncio.sleep(0.05 * 2**attempt)
        raise ProviderError("every ASR provider failed: " + "; ".join(failures))


class TtsChain:
    def __init__(self, providers: list[TtsProvider], timeouts: dict[str, float | None], retries: int = 1) -> None:
        self.providers = {p.name: p for p in providers}
        self.names = [p.name for p in providers]
        self.timeouts = timeouts
        self.retries = retries
        self.last_failures: list[str] = []

    async def synthesize(self, text: str, speed: float, speaker: str | None, preferred: str | None,
                         creds: CallCredentials | None, failures: list[str]) -> AsyncIterator[tuple[str, TtsChunk]]:
        """Fallback happens only before the first chunk: audio already played cannot be redone."""
        for name in _order(self.names, preferred, "TTS"):
            provider = self.providers[name]
            call_creds = creds if name == (preferred or self.names[0]) else None
            for attempt in range(1 + self.retries):
                stream = provider.synthesize(text, speed=speed, speaker=speaker, creds=call_creds).__aiter__()
                try:
                    first = await asyncio.wait_for(stream.__anext__(), self.timeouts.get(name))
                except StopAsyncIteration:
                    return  # nothing to say
                except FAILURES as exc:
                    failures.append(f"{name}: {type(exc).__name__}: {exc}"[:300])
                    log.warning("tts provider failed", extra={"provider": name, "attempt": attempt,
                                                              "error": repr(exc)[:300]})
                    await stream.aclose()
                    await asyncio.sleep(0.05 * 2**attempt)
                    continue
                yield name, first
                async for chunk in stream:
                    yield name, chunk
                return
        raise ProviderError("every TTS provider failed: " + "; ".join(failures))
