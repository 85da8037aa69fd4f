"""ASR batching across utterances: same text as one by one, fallback intact, batched on Serve."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest

from tests.test_models import wer
from voxray.deployments.asr_batch import MAX_BATCH, AsrScheduler, batch_provider, max_batch, transcribe_batch
from voxray.media.messages import AsrRequest, AsrResult
from voxray.providers.base import AsrProvider, CallCredentials, Transcript
from voxray.providers.fallback import AsrChain
from voxray.providers.whisper_local import WhisperLocal, batch_windows, looks_repeated, window_frames

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
async def test_concurrent_utterances_on_serve_go_side_by_side_on_the_cpu_workers(voxray_server, utterances):
    from ray import serve

    handle = serve.get_deployment_handle("AsrDeployment", "voxray")
    reqs = [_req(utterances[i % len(utterances)]) for i in range(6)]
    results = await asyncio.wait_for(asyncio.gather(*(handle.transcribe.remote(r) for r in reqs)), 120)
    for i, res in enumerate(results):
        assert wer(SENTENCES[i % len(SENTENCES)], res.text) <= 0.3, res.text
    # On the CPU a batch costs nearly the sum of its utterances: each goes alone, two workers
    # at a time, and the rest wait their turn in the replica's queue (finals first).
    assert [r.batch_size for r in results] == [1] * 6
    assert max(r.queued_s for r in results) > 0.0, [r.queued_s for r in results]


# -- bucketed encoder windows ------------------------------------------------------


def test_a_cpu_batch_splits_by_window_and_a_gpu_batch_is_one_call_at_its_longest():
    windows = [1000, 1500, 1000, 2000]
    assert batch_windows(windows, one_call=False) == {1000: [0, 2], 1500: [1], 2000: [3]}
    assert batch_windows(windows, one_call=True) == {2000: [0, 1, 2, 3]}
    assert batch_windows([], one_call=True) == {}


def test_windows_are_buckets_with_a_floor_and_headroom():
    assert window_frames(100, 5.0) == 1000  # 1 s of audio: the 10 s floor
    assert window_frames(940, 5.0) == 1000  # 9.4 s + 0.5 s headroom fits in 10 s
    assert window_frames(960, 5.0) == 1500  # 9.6 s does not
    assert window_frames(2800, 5.0) == 3000  # never past Whisper's 30 s
    assert window_frames(100, 30.0) == 3000  # the full window, faster-whisper's own way
    assert window_frames(100, 5.0, min_window_s=5.0) == 500


def test_a_phrase_said_over_and_over_is_caught():
    assert looks_repeated("Hello there. Hello there.")
    assert looks_repeated("Yes? Yes? Yes?")
    assert not looks_repeated("Hello there.")
    assert not looks_repeated("I want to cancel my subscription.")
    # What tiny.en said for a 4.5 s utterance in a 5 s window: twice and a bit.
    said = "I ordered a blue jacket last week but the package never arrived at my house."
    assert looks_repeated(f"{said} {said} I ordered")
    assert not looks_repeated(f"{said} I ordered it again.")
    assert not looks_repeated("No, no, I said the blue one, not the red one.")


async def test_bucketed_windows_hear_as_well_as_the_full_window():
    """Two voices, clean and with line noise, 1-10 s: the same word error rate, less compute."""
    from bench.asr_set import SENTENCES as LABELLED, labelled_set, wer as corpus_wer

    utts = labelled_set(LABELLED[::2])  # 8 sentences x 2 voices x clean/noisy = 32 utterances
    full, bucketed = WhisperLocal(window_bucket_s=30.0), WhisperLocal()
    full.load()
    bucketed.load()
    refs = [u.text for u in utts]
    full_out = [await full.transcribe(u.pcm) for u in utts]
    bucket_out = [await bucketed.transcribe(u.pcm) for u in utts]
    full_wer = corpus_wer(refs, [t.text for t in full_out])
    bucket_wer = corpus_wer(refs, [t.text for t in bucket_out])
    assert bucket_wer <= full_wer + 0.01, (bucket_wer, full_wer)
    assert bucket_wer < 0.15
    assert all(t.window_s == 30.0 for t in full_out)
    assert sum(t.window_s < 30.0 for t in bucket_out) >= len(utts) - 2  # redone ones use the full window
    assert sum(t.compute_s for t in bucket_out) < 0.6 * sum(t.compute_s for t in full_out)


# -- the replica's queue -----------------------------------------------------------


class Recorder:
    """Runs batches as a model would, slowly, and records what each held."""

    def __init__(self) -> None:
        self.batches: list[list[str]] = []

    async def run(self, reqs: list[AsrRequest]) -> list[AsrResult]:
        self.batches.append([f"{r.call_id}:{'p' if r.partial else 'f'}" for r in reqs])
        await asyncio.sleep(0.05)
        return [AsrResult(text=r.call_id, provider="whisper", batch_size=len(reqs)) for r in reqs]


async def test_finals_go_first_and_stale_partials_are_skipped():
    rec = Recorder()
    sched = AsrScheduler(rec.run, max_batch=2, gather_s=0.0)
    pcm = np.zeros(1600, np.int16)
    first = asyncio.create_task(sched.submit(_req(pcm)))  # runs alone: the model is idle
    await asyncio.sleep(0.01)
    # While it runs: a partial of call a, then a newer partial of a, a partial of b and a final of c.
    reqs = [AsrRequest(call_id=c, pcm=pcm.tobytes(), partial=p)
            for c, p in (("a", True), ("a", True), ("b", True), ("c", False))]
    tasks = [asyncio.create_task(sched.submit(r)) for r in reqs]
    await asyncio.sleep(0)
    results = await asyncio.gather(first, *tasks)
    # Finals alone, then partials one per model call.
    assert rec.batches == [["c:f"], ["c:f"], ["a:p"], ["b:p"]]
    assert results[1].skipped and not results[2].skipped and sched.skipped == 1


async def test_a_cancelled_request_is_never_decoded():
    rec = Recorder()
    sched = AsrScheduler(rec.run, gather_s=0.0)
    pcm = np.zeros(1600, np.int16)
    busy = asyncio.create_task(sched.submit(AsrRequest(call_id="x", pcm=pcm.tobytes())))
    await asyncio.sleep(0.01)
    doomed = asyncio.create_task(sched.submit(AsrRequest(call_id="y", pcm=pcm.tobytes())))
    await asyncio.sleep(0.01)
    doomed.cancel()
    await busy
    await asyncio.sleep(0.1)
    assert rec.batches == [["x:f"]]


async def test_a_closed_queue_leaves_no_task_behind_and_starts_again_when_used():
    rec = Recorder()
    sched = AsrScheduler(rec.run, gather_s=0.0)
    pcm = np.zeros(1600, np.int16).tobytes()
    await sched.submit(AsrRequest(call_id="x", pcm=pcm))
    worker = sched._worker
    await sched.aclose()
    assert worker.done() and sched._worker is None
    await asyncio.wait_for(sched.submit(AsrRequest(call_id="y", pcm=pcm)), 5)
    assert rec.batches == [["x:f"], ["y:f"]]
    await sched.aclose()


async def test_a_partial_that_waited_too_long_is_skipped():
    rec = Recorder()
    sched = AsrScheduler(rec.run, gather_s=0.0, partial_max_wait_s=0.03)
    pcm = np.zeros(1600, np.int16).tobytes()
    busy = asyncio.create_task(sched.submit(AsrRequest(call_id="x", pcm=pcm)))  # 50 ms of model time
    await asyncio.sleep(0.01)
    late = await asyncio.gather(busy, sched.submit(AsrRequest(call_id="y", pcm=pcm, partial=True)))
    assert late[1].skipped and rec.batches == [["x:f"]]


async def test_turn_ends_arriving_during_a_batch_start_their_own_at_once():
    """With two model workers, finals that arrive while a batch runs do not wait it out;
    partials wait for an idle model."""
    rec = Recorder()
    sched = AsrScheduler(rec.run, gather_s=0.0, concurrency=2)
    pcm = np.zeros(1600, np.int16).tobytes()
    t0 = asyncio.get_running_loop().time()
    first = asyncio.create_task(sched.submit(AsrRequest(call_id="a", pcm=pcm)))
    await asyncio.sleep(0.01)
    partial = asyncio.create_task(sched.submit(AsrRequest(call_id="p", pcm=pcm, partial=True)))
    later = [asyncio.create_task(sched.submit(AsrRequest(call_id=c, pcm=pcm))) for c in ("b", "c")]
    done_at = []
    for t in later:
        await t
        done_at.append(asyncio.get_running_loop().time() - t0)
    await asyncio.gather(first, partial)
    assert rec.batches[:2] == [["a:f"], ["b:f", "c:f"]] and rec.batches[2] == ["p:p"]
    assert max(done_at) < 0.09  # started at ~10 ms, not after a's 50 ms batch (~110 ms)
    one = AsrScheduler(Recorder().run, gather_s=0.0)  # one worker: the old queue
    assert one.concurrency == 1


async def test_partials_are_shed_while_the_model_is_busy_and_decoded_when_it_is_not():
    """Each partial costs a final's compute: past `partial_max_load` of the last window
    they are answered skipped (finals still run), and once the model has been idle they run again."""
    rec = Recorder()  # 50 ms per model call
    sched = AsrScheduler(rec.run, gather_s=0.0, partial_max_load=0.5, load_window_s=0.2)
    pcm = np.zeros(1600, np.int16).tobytes()
    assert sched.load() == 0.0
    idle = await sched.submit(AsrRequest(call_id="a", pcm=pcm, partial=True))
    assert not idle.skipped and rec.batches == [["a:p"]]
    for c in "bcd":  # 150 ms of finals back to back: the model is busy the whole window
        await sched.submit(AsrRequest(call_id=c, pcm=pcm))
    assert sched.load() > 0.5
    busy = await sched.submit(AsrRequest(call_id="e", pcm=pcm, partial=True))
    final = await sched.submit(AsrRequest(call_id="f", pcm=pcm))
    assert busy.skipped and not final.skipped and sched.shed == 1
    assert ["e:p"] not in rec.batches and rec.batches[-1] == ["f:f"]
    await asyncio.sleep(0.25)  # a whole window idle
    assert sched.load() < 0.1
    again = await sched.submit(AsrRequest(call_id="g", pcm=pcm, partial=True))
    assert not again.skipped and rec.batches[-1] == ["g:p"]


async def test_the_fifo_queue_never_sheds_partials():
    rec = Recorder()
    sched = AsrScheduler(rec.run, gather_s=0.0, prioritize=False, partial_max_load=0.01, load_window_s=0.2)
    pcm = np.zeros(1600, np.int16).tobytes()
    await sched.submit(AsrRequest(call_id="a", pcm=pcm))
    late = await sched.submit(AsrRequest(call_id="b", pcm=pcm, partial=True))
    assert not late.skipped and sched.shed == 0


def test_the_cpu_decodes_one_utterance_per_model_call_and_a_gpu_batches():
    from types import SimpleNamespace

    from voxray.config import ModelsConfig

    def chain(device: str):
        w = WhisperLocal()
        w.device = device  # what load() would have found
        return SimpleNamespace(providers={"whisper": w})

    assert max_batch(chain("cpu"), ModelsConfig()) == 1
    assert max_batch(chain("cuda"), ModelsConfig()) == MAX_BATCH
    assert max_batch(chain("cpu"), ModelsConfig(whisper_max_batch=4)) == 4
    assert max_batch(SimpleNamespace(providers={}), ModelsConfig()) == 1  # cloud providers only
