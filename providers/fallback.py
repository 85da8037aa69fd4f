"""Choosing a provider per call, with retries and fallback to the next on error or timeout."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import httpx
import numpy as np

from voxray.logs import get_logger
from voxray.providers.base import CallCredentials, ProviderError, Transcript, TtsChunk

log = get_logger("voxray.providers")

# What counts as "this provider failed, try again or the next one".
FAILURES = (ProviderError, httpx.HTTPError, asyncio.TimeoutError, OSError, ValueError)


def _order(names: list[str], preferred: str | None, kind: str) -> list[str]:
    if preferred is None:
        return names
    if preferred not in names:
        raise ProviderError(f"unknown {kind} provider '{preferred}' (have: {', '.join(names)})")
    return [preferred] + [n for n in names if n != preferred]


class _Chain:
    """Providers in fallback order, each tried 1 + `retries` times."""

    kind = ""

    def __init__(self, providers: list, timeouts: dict[str, float | None], retries: int = 1) -> None:
        self.providers = {p.name: p for p in providers}
        self.names = [p.name for p in providers]
        self.timeouts = timeouts
        self.retries = retries

    def _attempts(self, preferred: str | None, creds: CallCredentials | None):
        """(name, provider, credentials, attempt) in the order to try them."""
        for name in _order(self.names, preferred, self.kind):
            # The agent's credentials belong to the provider it chose.
            call_creds = creds if name == (preferred or self.names[0]) else None
            for attempt in range(1 + self.retries):
                yield name, self.providers[name], call_creds, attempt

    async def _failed(self, name: str, attempt: int, exc: BaseException, failures: list[str]) -> None:
        failures.append(f"{name}: {type(exc).__name__}: {exc}"[:300])
        log.warning(f"{self.kind.lower()} provider failed",
                    extra={"provider": name, "attempt": attempt, "error": repr(exc)[:300]})
        await asyncio.sleep(0.05 * 2**attempt)

    def _exhausted(self, failures: list[str]) -> ProviderError:
        return ProviderError(f"every {self.kind} provider failed: " + "; ".join(failures))


class AsrChain(_Chain):
    kind = "ASR"

    async def transcribe(self, pcm16k: np.ndarray, language: str | None, preferred: str | None,
                         creds: CallCredentials | None) -> tuple[Transcript, str, list[str]]:
        failures: list[str] = []
        for name, provider, call_creds, attempt in self._attempts(preferred, creds):
            try:
                t = await asyncio.wait_for(provider.transcribe(pcm16k, language, call_creds),
                                           self.timeouts.get(name))
                return t, name, failures
            except FAILURES as exc:
                await self._failed(name, attempt, exc, failures)
        raise self._exhausted(failures)


class TtsChain(_Chain):
    kind = "TTS"

    async def synthesize(self, text: str, speed: float, speaker: str | None, preferred: str | None,
                         creds: CallCredentials | None, failures: list[str]) -> AsyncIterator[tuple[str, TtsChunk]]:
        """Fallback happens only before the first chunk: audio already played cannot be redone."""
        for name, provider, call_creds, attempt in self._attempts(preferred, creds):
            stream = provider.synthesize(text, speed=speed, speaker=speaker, creds=call_creds).__aiter__()
            try:
                first = await asyncio.wait_for(stream.__anext__(), self.timeouts.get(name))
            except StopAsyncIteration:
                return  # nothing to say
            except FAILURES as exc:
                await stream.aclose()
                await self._failed(name, attempt, exc, failures)
                continue
            yield name, first
            async for chunk in stream:
                yield name, chunk
            return
        raise self._exhausted(failures)
