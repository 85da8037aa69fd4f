"""ASR batching across utterances: same text as one by one, fallback intact, batched on Serve."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest

from tests.test_models import wer
from voxray.deployments.asr_batch import batch_provider, transcribe_batch
from voxray.media.messages import AsrRequest
from voxray.providers.base import AsrProvider, CallCredentials, Transcript
from voxray.providers.fallback import AsrChain
from voxray.providers.whisper_local import WhisperLocal

SENTENCES = [
    "Hello, I need help with my account.",
    "Please transfer me to the billing department.",
    "The weather is nice today.",
    "I want to cancel my subscription.",
]


@pytest.fixture(scope="module")
def utterances() -> list[np.ndarray]:
    from voxray.speech import piper_speech

    pad = np.zeros(3200, np.int16)  # 200 ms around each, as the segmenter sends
    return [np.concatenate((pad, piper_speech(s), pad)) for s in SENTENCES]


@pytest.fixture(scope="module")
def whisper() -> WhisperLocal:
    w = WhisperLocal()
    w.load()
    return w


class EchoAsr(AsrProvider):
    """A stand-in for a cloud provider: answers with a fixed text."""

    name = "echo"

    def load(self) -> None: ...

    async def transcribe(self, pcm16k, language=None, creds=None) -> Transcript:
        return Transcript(text="echo", audio_s=pcm16k.size / 16000)


def _req(pcm: np.ndarray, **kw) -> AsrRequest:
    return AsrRequest(call_id="c", pcm=pcm.astype("<i2").tobytes(), **kw)


async def test_batch_gives_the_same_text_as_one_by_one(whisper, utterances):
    one_by_one = [(await whisper.transcribe(u)).text for u in utterances]
    # Different lengths in one batch, and silence among them.
    batch = await whisper.transcribe_batch(utterances + [np.zeros(16000, np.int16)])
    assert len(batch) == len(utterances) + 1
    for ref, single, batched in zip(SENTENCES, one_by_one, batch, strict=False):
        assert wer(single, batched.text) <= 0.15, (single, batched.text)
        assert wer(ref, batched.text) <= 0.3, (ref, batched.text)
        assert batched.audio_s == pytest.approx(utterances[SENTENCES.index(ref)].size / 16000)
    assert len(batch[-1].text.split()) <= 2  # silence: nothing, or a stray word at most


def test_only_local_whisper_requests_without_credentials_batch(whisper, utterances):
    chain = AsrChain([whisper, EchoAsr()], {})
    assert batch_provider(chain, _req(utterances[0])) is whisper
    assert batch_provider(chain, _req(utterances[0], provider="echo")) is None
    assert batch_provider(chain, _req(utterances[0], creds=CallCredentials(secret_key="k"))) is None
    assert batch_provider(chain, _req(np.zeros(16000 * 31, np.int16))) is None  # past one window
    assert batch_provider(AsrChain([EchoAsr(), whisper], {}), _req(utterances[0])) is None


async def test_a_failed_batch_falls_back_request_by_request(whisper, utterances, monkeypatch):
    async def broken(*_a, **_kw):
        raise ValueError("batch broke")

    monkeypatch.setattr(whisper, "transcribe_batch", broken)
    monkeypatch.setattr(whisper, "transcribe", broken)  # the retry fails too: the next provider answers
    chain = AsrChain([whisper, EchoAsr()], {}, retries=0)
    results = await transcribe_batch(chain, [_req(u) for u in utterances[:2]])
    assert [r.text for r in results] == ["echo", "echo"]
    assert all(r.provider == "echo" for r in results)
    assert all(any("whisper batch: ValueError" in f for f in r.failures) for r in results)


@pytest.mark.e2e
async def test_concurrent_utterances_share_a_model_call_on_serve(voxray_server, utterances):
    from ray import serve

    handle = serve.get_deployment_handle("AsrDeployment", "voxray")
    reqs = [_req(utterances[i % len(utterances)]) for i in range(6)]
    results = await asyncio.wait_for(asyncio.gather(*(handle.transcribe.remote(r) for r in reqs)), 120)
    for i, res in enumerate(results):
        assert wer(SENTENCES[i % len(SENTENCES)], res.text) <= 0.3, res.text
    # The first request may leave alone; the rest queue behind it and go together.
    assert max(r.batch_size for r in results) > 1, [r.batch_size for r in results]
