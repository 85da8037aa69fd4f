"""Cloud providers over their real wire formats (local stub), and fallback between providers."""

from __future__ import annotations

import time

import numpy as np
import pytest

from tests.cloud_stub import CloudStub
from tests.conftest import SENTENCE
from tests.test_media_session import Recorder, _feed
from tests.test_models import wer
from voxray.media.messages import AsrRequest, TtsRequest
from voxray.deployments.services import LocalModelServices
from voxray.protocol.commands import Tts
from voxray.protocol.options import CallOption, SynthesisOption, TranscriptionOption
from voxray.providers.base import CallCredentials, ProviderError
from voxray.providers.catalog import ProviderSpec, ProvidersConfig
from voxray.media.resample import resample
from voxray.media.session import MediaSession


@pytest.fixture(scope="module")
def stub(monkeypatch_module):
    monkeypatch_module.setenv("STUB_KEY", "sk-test-123")
    with CloudStub() as s:
        yield s


@pytest.fixture(scope="module")
def monkeypatch_module():
    mp = pytest.MonkeyPatch()
    yield mp
    mp.undo()


def spec(name, kind, url, **kw) -> ProviderSpec:
    return ProviderSpec(name=name, kind=kind, endpoint=url, api_key_env="STUB_KEY", timeout_s=kw.pop("timeout_s", 10),
                        **kw)


@pytest.fixture(scope="module")
def services(stub) -> LocalModelServices:
    return LocalModelServices(ProvidersConfig(
        asr=[spec("broken", "openai", stub.url("fail")), spec("slow", "openai", stub.url("hang"), timeout_s=0.5),
             spec("openai", "openai", stub.url()), spec("deepgram", "deepgram", stub.url()),
             ProviderSpec(name="whisper", kind="whisper")],
        tts=[spec("broken", "deepgram", stub.url("fail")), spec("openai", "openai", stub.url()),
             spec("deepgram", "deepgram", stub.url()), ProviderSpec(name="piper", kind="piper")],
        retries=1,
    ))


@pytest.mark.parametrize("provider", ["openai", "deepgram"])
async def test_cloud_asr_speaks_the_real_wire_format(services, stub, speech16k, provider):
    stub.seen.clear()
    r = await services.transcribe(AsrRequest(call_id="c", pcm=speech16k.tobytes(), provider=provider))
    assert r.provider == provider and r.failures == []
    assert wer(SENTENCE, r.text) <= 0.5, r.text
    auth = stub.seen[-1]["auth"]
    assert auth == ("Bearer sk-test-123" if provider == "openai" else "Token sk-test-123")


async def test_per_call_credentials_reach_the_chosen_provider(services, stub, speech16k):
    stub.seen.clear()
    creds = CallCredentials(secret_key="per-call-key", model="whisper-large")
    r = await services.transcribe(AsrRequest(call_id="c", pcm=speech16k.tobytes(), provider="openai", creds=creds))
    assert r.provider == "openai"
    assert stub.seen[-1]["auth"] == "Bearer per-call-key" and stub.seen[-1]["model"] == "whisper-large"


@pytest.mark.parametrize("provider, rate", [("openai", 8000), ("deepgram", 16000)])
async def test_cloud_tts_streams_audio_whisper_understands(services, provider, rate):
    text = "The weather is sunny today."
    chunks = [a async for a in services.synthesize(TtsRequest(call_id="c", text=text, sample_rate=rate,
                                                              provider=provider))]
    assert chunks and {c.provider for c in chunks} == {provider}
    pcm = np.concatenate([np.frombuffer(c.pcm, dtype="<i2") for c in chunks])
    heard = await services.asr_chain.providers["whisper"].transcribe(resample(pcm, rate, 16000))
    assert wer(text, heard.text) <= 0.3, heard.text


async def test_asr_falls_back_on_error_and_timeout(services, stub, speech16k):
    stub.seen.clear()
    t0 = time.monotonic()
    r = await services.transcribe(AsrRequest(call_id="c", pcm=speech16k.tobytes()))  # config order
    elapsed = time.monotonic() - t0
    assert r.provider == "openai"
    assert [f.split(":")[0] for f in r.failures] == ["broken", "broken", "slow", "slow"]  # one retry each
    assert "500" in r.failures[0] and "TimeoutError" in r.failures[2]
    assert elapsed < 5  # the hanging provider cost its timeout, not 30 s
    assert wer(SENTENCE, r.text) <= 0.5


async def test_tts_falls_back_before_the_first_chunk(services):
    chunks = [a async for a in services.synthesize(TtsRequest(call_id="c", text="Hello there.",
                                                              sample_rate=16000, provider="broken"))]
    assert chunks[0].provider == "openai" and len(chunks[0].failures) == 2
    assert all(c.failures == [] for c in chunks[1:])


async def test_unknown_provider_is_refused(services, speech16k):
    with pytest.raises(ProviderError, match="unknown ASR provider 'nope'"):
        await services.transcribe(AsrRequest(call_id="c", pcm=speech16k.tobytes(), provider="nope"))


async def test_call_sees_provider_metrics_and_fallback(services, speech16k):
    rec = Recorder()
    s = MediaSession("prov-call", CallOption(asr=TranscriptionOption(provider="broken"),
                                             tts=SynthesisOption(provider="deepgram")), services, rec)
    s.start()
    try:
        _feed(s, np.concatenate([np.zeros(8000, np.int16), speech16k, np.zeros(16000, np.int16)]), "pcm")
        final = (await rec.wait("asrFinal", timeout=30))[0]
        assert wer(SENTENCE, final.text) <= 0.5
        metrics = {e.key: e for e in rec.events if e.event == "metrics"}
        fallback = metrics["fallback.asr"].data
        assert fallback["provider"] == "openai"  # broken (500) and slow (timeout) were skipped
        assert [f.split(":")[0] for f in fallback["failures"]] == ["broken", "broken", "slow", "slow"]
        assert "ttfb.asr.openai" in metrics
        await s.tts(Tts(text="Okay.", play_id="t"))
        await rec.wait("trackEnd", timeout=20)
        assert "ttfb.tts.deepgram" in {e.key for e in rec.events if e.event == "metrics"}
    finally:
        await s.close()
