"""Cross-utterance ASR batching: which requests share one model call, and the fallback.

Only the local Whisper batches (one encoder pass over N padded windows); cloud
providers, agent credentials and over-long utterances take the per-request
fallback chain. Free of Ray so it is tested with the real model alone.
"""

from __future__ import annotations

import asyncio

import numpy as np

from voxray.media.messages import AsrRequest, AsrResult
from voxray.logs import get_logger
from voxray.providers.fallback import FAILURES, AsrChain
from voxray.providers.whisper_local import WhisperLocal

log = get_logger("voxray.asr")


def batch_provider(chain: AsrChain, req: AsrRequest) -> WhisperLocal | None:
    """The local Whisper that would serve `req` first, if the request may join a batch."""
    name = req.provider or chain.names[0]
    provider = chain.providers.get(name)
    if not isinstance(provider, WhisperLocal) or req.creds is not None:
        return None
    return provider if provider.batchable(np.frombuffer(req.pcm, dtype="<i2")) else None


async def transcribe_single(chain: AsrChain, req: AsrRequest, failures: list[str] | None = None) -> AsrResult:
    """One request through the fallback chain (retries, then the next provider)."""
    t, name, chain_failures = await chain.transcribe(
        np.frombuffer(req.pcm, dtype="<i2"), req.language, req.provider, req.creds)
    return AsrResult(text=t.text, provider=name, language=t.language, audio_s=t.audio_s,
                     compute_s=t.compute_s, failures=(failures or []) + chain_failures)


async def transcribe_batch(chain: AsrChain, reqs: list[AsrRequest]) -> list[AsrResult]:
    """All of `reqs` (each batchable on the same provider) in one model call.

    If the batched call fails, each request goes through the chain on its own, so a
    batch never fails more calls than the chain would have one by one.
    """
    provider = batch_provider(chain, reqs[0])
    assert provider is not None and all(batch_provider(chain, r) is provider for r in reqs)
    try:
        transcripts = await asyncio.wait_for(
            provider.transcribe_batch([np.frombuffer(r.pcm, dtype="<i2") for r in reqs],
                                      [r.language for r in reqs]),
            chain.timeouts.get(provider.name))
    except FAILURES as exc:
        note = f"{provider.name} batch: {type(exc).__name__}: {exc}"[:300]
        log.warning("batched asr failed; one by one", extra={"error": note, "batch": len(reqs)})
        return list(await asyncio.gather(*(transcribe_single(chain, r, [note]) for r in reqs)))
    return [AsrResult(text=t.text, provider=provider.name, language=t.language, audio_s=t.audio_s,
                      compute_s=t.compute_s, batch_size=len(reqs))
            for t in transcripts]
