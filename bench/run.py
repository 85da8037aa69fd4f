"""voxray's bench: end-to-end calls, VAD and ASR throughput, Ray hop overhead.

One command prints every table: the VAD throughput comparison (bench/vad_throughput.py),
ASR compute and WER with full vs bucketed Whisper windows (bench/asr_windows.py), the
end-to-end table below, and the per-hop Ray overhead (bench/ray_hops.py) measured
inside the same running app.

Old and new behaviour side by side: the end-to-end levels and the media-plane CPU
(bench/media_plane.py) run twice in one Ray, first with the app deployed as voxray
behaved before "fast turns" (`OLD`: full 30 s Whisper windows, a first-come-first-served
ASR queue, a fixed end-of-speech silence wait and no speculative transcript, the whole
reply text synthesized at once, VAD through the VAD deployment in 64 ms chunks with one
socket read per frame, permessage-deflate accepted on the agent's socket), then redeployed with
today's defaults.

End-to-end latency and CPU for voxray's `/call` WebSocket:

Starts an embedded Ray with the voxray Serve app on a free loopback port, then,
for each concurrency level, holds N simultaneous calls that each speak one
sentence in real time and measure:

- asrFinal latency: end of speech (the frame carrying the last speech sample was
  sent) -> the `asrFinal` event arrives. It includes the server's end-of-speech
  silence wait (`media.end_silence_ms`), which is part of what a caller feels.
- first-TTS-audio latency: the same end of speech -> the first binary frame of the
  reply that the client asks for as soon as `asrFinal` arrives.
- CPU of the Ray processes (all descendants of this process) per concurrent call.
- memory per call: peak RSS of the Ray processes during the level minus their RSS
  before it, per concurrent call.
- dropped: utterances that did not get asrFinal and reply audio in time (must be 0;
  the timeouts grow by PER_CALL_SLACK_S per call, since 64 calls on 2 cores run far
  slower than real time). Levels from ONE_ROUND_FROM calls up run a single round.
  Below that, 8 rounds: 8 calls x 8 = 64 turns, so that p95 sits between the 60th and
  61st of them (with 2 rounds, 16 turns, it was in effect the slowest one of the level).

Run: .venv/bin/python bench/run.py [--calls 1,8,32,64] [--rounds 8] [--quick] [--plot PATH]
     [--pause-ms 600]  (the caller pauses mid-sentence: turns must hold, finals whole)
Prints a table; the same results go to bench/results/latest.json, and a plot of latency
and CPU per call against concurrent calls to bench/latency_cpu.png (bench/plot.py).
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import os
import platform
import random
import sys
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import psutil
import websockets

SENTENCE = "I would like to book a table for two people tonight at seven."
# With --pause-ms the caller stops mid-sentence, where people do ("I would like to ...
# book a table"): the pause's speculative transcript reads unfinished and is dropped
# when the caller goes on; a fixed silence wait cuts the turn there instead.
PAUSED_AT = ("I would like to", "book a table for two people tonight at seven.")
# The reply opens as agents' replies do, with a short phrase heard before (kept by the
# TTS: `media.tts_phrase_max_chars`), and goes on with words new to every turn.
REPLY = "Sure, a table for two at seven, booking {n}."
_replies = itertools.count(1)
RATE = 16000
FRAME_BYTES = 640  # 20 ms of 16-bit mono PCM at 16 kHz
FRAME_SAMPLES = FRAME_BYTES // 2
FRAME_S = 0.02
LEAD_S = 0.3
TRAIL_S = 0.5  # silence inside the WAV; endless silence frames follow it anyway
# Piper ends its audio with ~0.1-0.2 s of near-silence; speech "ends" at the last
# sample louder than -40 dBFS so that tail does not flatter the latencies.
SPEECH_END_THRESHOLD = 328

INVITE_OPTION: dict = {"codec": "pcm"}  # what each call asks for (partials at their default interval)
STAGGER_S = 0.3
CONNECT_TIMEOUT_S = 10.0
ANSWER_TIMEOUT_S = 10.0
ASR_TIMEOUT_S = 20.0  # after end of speech
TTS_TIMEOUT_S = 20.0  # after the tts command
HANGUP_TIMEOUT_S = 30.0
# Every stage's timeout grows by this per concurrent call: on 2 cores, 64 calls'
# utterances queue for the one ASR replica; slow is measured, only failure is a drop.
PER_CALL_SLACK_S = 3.0
# Levels this large run one round: each round of 64 calls is minutes of queued ASR on 2 cores.
ONE_ROUND_FROM = 32
RSS_SAMPLE_S = 1.0
IDLE_S = 5.0  # how long Ray's idle CPU is sampled before the levels
DEPLOY_TIMEOUT_S = 420.0
HOPS_BOUND_S = 600.0  # the hop measurement's share of the watchdog's budget

RESULTS = Path(__file__).resolve().parent / "results" / "latest.json"

# The settings that bring back the behaviour before "fast turns" (each is a real,
# documented setting; the defaults are the new behaviour).
OLD_MEDIA_PLANE = {"vad_in_process": False, "vad_batch_window_ms": 0, "ws_receive_max_wait_ms": 0,
                   "vad_chunk_windows": 2, "vad_speech_chunk_windows": 0, "vad_quiet_margin_db": 0.0}
OLD = {
    "models": {"whisper_bucket_s": 30.0, "whisper_queue": "fifo", "tts_slots": 0, "tts_later_idle": False,
               "whisper_workers": 1, "whisper_threads": 2, "piper_threads": 0, "whisper_max_batch": 8,
               "partial_max_load": 1.0},
    "media": {"speculative_asr": False, "tts_first_clause": False, "tts_phrase_max_chars": 0, "ws_compression": True,
              **OLD_MEDIA_PLANE},
}
BEHAVIOURS = ("old", "new")


def behaviour_config(base, behaviour: str):
    """`base` (a VoxrayConfig) as the given behaviour deploys it."""
    if behaviour == "new":
        return base
    update = {section: getattr(base, section).model_copy(update=fields) for section, fields in OLD.items()}
    return base.model_copy(update=update)


# -- caller audio -----------------------------------------------------------------


@dataclass(frozen=True)
class CallerAudio:
    pcm: bytes  # 16 kHz mono int16 LE: lead silence + speech + trailing silence
    eos_sample: int  # index of the last speech sample within `pcm`
    speech_s: float
    trimmed_tail_ms: float  # Piper's near-silent tail not counted as speech
    pause_ms: int = 0  # a mid-sentence pause (PAUSED_AT), 0: none

    @property
    def eos_frame(self) -> int:
        return self.eos_sample // FRAME_SAMPLES

    @property
    def n_frames(self) -> int:
        return -(-len(self.pcm) // FRAME_BYTES)


def loud_samples(pcm: np.ndarray) -> np.ndarray:
    """Indices of the samples louder than -40 dBFS (what counts as speech, not Piper's fade)."""
    return np.nonzero(np.abs(pcm.astype(np.int32)) > SPEECH_END_THRESHOLD)[0]


def make_caller_audio(pause_ms: int = 0) -> CallerAudio:
    """Synthesize the sentence once; every call of every level streams the same bytes.

    With `pause_ms` its two halves (PAUSED_AT) are synthesized apart and joined by that much
    silence, each trimmed of Piper's near-silent edges so that the pause is what it says.
    """
    from voxray.speech import piper_speech

    if pause_ms:
        halves = []
        for text in PAUSED_AT:
            part = piper_speech(text, RATE)
            loud = loud_samples(part)
            halves.append(part[loud[0]:loud[-1] + 1] if loud.size else part)
        speech = np.concatenate((halves[0], np.zeros(int(pause_ms * RATE / 1000), np.int16), halves[1]))
    else:
        speech = piper_speech(SENTENCE, RATE)
    loud = loud_samples(speech)
    last = int(loud[-1]) if loud.size else speech.size - 1
    lead = np.zeros(int(LEAD_S * RATE), np.int16)
    trail = np.zeros(int(TRAIL_S * RATE), np.int16)
    pcm = np.concatenate((lead, speech, trail)).astype("<i2").tobytes()
    return CallerAudio(pcm=pcm, eos_sample=lead.size + last, speech_s=speech.size / RATE,
                       trimmed_tail_ms=(speech.size - 1 - last) * 1000 / RATE, pause_ms=pause_ms)


# -- one call ---------------------------------------------------------------------


@dataclass
class RoundResult:
    ok: bool = False
    asr_ms: float | None = None
    tts_ms: float | None = None
    transcript: str | None = None
    failure: str | None = None  # why the utterance counts as dropped
    hangup_ok: bool = False
    early_finals: int = 0  # asrFinal before end of speech (utterance split by VAD)
    errors: list[str] = field(default_factory=list)  # server `error` events
    # The server's own `metrics` events, to split the latencies into their parts.
    server_asr_ms: float | None = None  # ASR request round trip, queueing included
    asr_compute_ms: float | None = None  # Whisper alone
    server_tts_ms: float | None = None  # tts command -> first synthesized chunk
    reply_gap_ms: float | None = None  # with --hear-replies: the reply's audio missing in mid-reply


def level_slack_s(calls: int) -> float:
    """What every stage's timeout grows by at a level of `calls` concurrent calls."""
    return PER_CALL_SLACK_S * (calls - 1)


class Replies:
    """--hear-replies: the callers hear each reply to its end (trackEnd) before hanging up,
    and a pause in its audio longer than GAP_MS counts as a gap (its playout ran dry)."""

    whole = False
    GAP_MS = 100.0  # frames leave every 20 ms; an ingress busy for 100 ms is not a dry playout


class Timeouts:
    """Per-stage timeouts of the level being run (they grow with its call count)."""

    slack_s = 0.0

    @classmethod
    def for_level(cls, calls: int) -> None:
        cls.slack_s = level_slack_s(calls)


def note(event: dict, result: RoundResult) -> None:
    """Keep what the side events say: server errors and the server's metrics."""
    name = event.get("event")
    if name == "error":
        result.errors.append(f"{event.get('sender')}: {event.get('error')}")
    elif name == "metrics":
        key = str(event.get("key", ""))
        if key.startswith("ttfb.asr."):
            result.server_asr_ms = event.get("duration")
            result.asr_compute_ms = (event.get("data") or {}).get("computeMs")
        elif key.startswith("ttfb.tts."):
            result.server_tts_ms = event.get("duration")


class Dropped(Exception):
    """The utterance failed at some stage; the message says which."""


async def stream_caller(ws, audio: CallerAudio, eos: asyncio.Future) -> None:
    """Send the WAV as 20 ms frames on an absolute clock, then silence until cancelled.

    `eos` gets the monotonic time right after the frame holding the last speech
    sample went out: the caller's end of speech as the server can first see it.
    """
    silence = b"\0" * FRAME_BYTES
    t0 = time.monotonic()
    n = 0
    try:
        while True:
            i = n * FRAME_BYTES
            frame = audio.pcm[i:i + FRAME_BYTES].ljust(FRAME_BYTES, b"\0") if i < len(audio.pcm) else silence
            await ws.send(frame)
            if n == audio.eos_frame and not eos.done():
                eos.set_result(time.monotonic())
            n += 1
            delay = t0 + n * FRAME_S - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
    except websockets.ConnectionClosed:
        return  # the server hung up: nothing left to stream to


async def next_message(ws, deadline: float, what: str) -> str | bytes:
    left = deadline - time.monotonic()
    if left <= 0:
        raise Dropped(f"no {what} in time")
    try:
        return await asyncio.wait_for(ws.recv(), left)
    except asyncio.TimeoutError:
        raise Dropped(f"no {what} in time") from None
    except websockets.ConnectionClosed as exc:
        raise Dropped(f"socket closed waiting for {what} ({exc.rcvd.code if exc.rcvd else 'no close frame'})") from None


async def wait_event(ws, name: str, deadline: float, result: RoundResult, on_audio=None) -> dict:
    """Read until the event `name`; other events are skipped, and binary frames too (each
    one calls `on_audio()` first, if given)."""
    while True:
        msg = await next_message(ws, deadline, name)
        if isinstance(msg, bytes):
            if on_audio is not None:
                on_audio()
            continue
        event = json.loads(msg)
        note(event, result)
        if event.get("event") == name:
            return event


async def wait_final_after_eos(ws, eos: asyncio.Future, audio: CallerAudio, result: RoundResult) -> dict:
    """The first asrFinal that arrives once the whole sentence has been sent."""
    deadline = time.monotonic() + audio.eos_frame * FRAME_S + ASR_TIMEOUT_S + Timeouts.slack_s
    while True:
        event = await wait_event(ws, "asrFinal", deadline, result)
        if eos.done():
            return event
        result.early_finals += 1  # the VAD cut the sentence: wait for the rest


async def first_audio(ws, deadline: float, result: RoundResult) -> float:
    while True:
        msg = await next_message(ws, deadline, "TTS audio")
        if isinstance(msg, bytes):
            return time.monotonic()
        note(json.loads(msg), result)


@dataclass
class ReplyGaps:
    """A reply's audio that came late: each pause between frames past Replies.GAP_MS."""

    last: float  # when the frame before arrived
    ms: float = 0.0

    def frame(self) -> None:
        now = time.monotonic()
        if (now - self.last) * 1000 > Replies.GAP_MS:
            self.ms += (now - self.last - FRAME_S) * 1000
        self.last = now


async def hang_up(ws, result: RoundResult) -> None:
    """Ask for the hangup and wait (bounded) for the server to confirm it."""
    try:
        await ws.send(json.dumps({"command": "hangup"}))
        await wait_event(ws, "hangup", time.monotonic() + HANGUP_TIMEOUT_S + Timeouts.slack_s, result)
        result.hangup_ok = True
    except (Dropped, websockets.ConnectionClosed) as exc:
        result.errors.append(f"hangup: {exc}")


async def one_round(url: str, audio: CallerAudio) -> RoundResult:
    """One whole call: invite, speak, get asrFinal, ask for a reply, hear it, hang up."""
    result = RoundResult()
    try:
        async with websockets.connect(url, max_size=2**22, open_timeout=CONNECT_TIMEOUT_S + Timeouts.slack_s,
                                      close_timeout=CONNECT_TIMEOUT_S) as ws:
            await ws.send(json.dumps({"command": "invite", "option": INVITE_OPTION}))
            await wait_event(ws, "answer", time.monotonic() + ANSWER_TIMEOUT_S + Timeouts.slack_s, result)
            eos: asyncio.Future[float] = asyncio.get_running_loop().create_future()
            streamer = asyncio.create_task(stream_caller(ws, audio, eos))
            try:
                final = await wait_final_after_eos(ws, eos, audio, result)
                t_final = time.monotonic()
                await ws.send(json.dumps({"command": "tts", "text": REPLY.format(n=next(_replies)), "playId": "r1"}))
                t_audio = await first_audio(ws, time.monotonic() + TTS_TIMEOUT_S + Timeouts.slack_s, result)
                if Replies.whole:  # hear it to its end
                    gaps = ReplyGaps(last=t_audio)
                    await wait_event(ws, "trackEnd", time.monotonic() + TTS_TIMEOUT_S + Timeouts.slack_s, result,
                                     on_audio=gaps.frame)
                    result.reply_gap_ms = gaps.ms
                t_eos = eos.result()
                result.asr_ms = (t_final - t_eos) * 1000
                result.tts_ms = (t_audio - t_eos) * 1000
                result.transcript = final.get("text")
                result.ok = True
                await hang_up(ws, result)
            finally:
                streamer.cancel()
                await asyncio.gather(streamer, return_exceptions=True)
    except Dropped as exc:
        result.failure = str(exc)
    except (OSError, asyncio.TimeoutError, websockets.WebSocketException) as exc:
        result.failure = f"socket: {exc!r}"
    return result


def round_bound_s(audio: CallerAudio, slack_s: float | None = None) -> float:
    """The most one round can take given every stage's own timeout (plus slack; default:
    the level being run)."""
    slack_s = Timeouts.slack_s if slack_s is None else slack_s
    return (STAGGER_S + CONNECT_TIMEOUT_S + ANSWER_TIMEOUT_S + audio.eos_frame * FRAME_S
            + ASR_TIMEOUT_S + TTS_TIMEOUT_S + HANGUP_TIMEOUT_S + 5.0 * slack_s + 5.0)


async def one_call(url: str, audio: CallerAudio, rounds: int, rng: random.Random) -> list[RoundResult]:
    """One concurrent caller: `rounds` calls back to back, each after a random stagger."""
    results = []
    for _ in range(rounds):
        await asyncio.sleep(rng.uniform(0, STAGGER_S))
        try:
            async with asyncio.timeout(round_bound_s(audio)):
                results.append(await one_round(url, audio))
        except TimeoutError:
            results.append(RoundResult(failure="round exceeded its time bound"))
    return results


# -- CPU of the Ray processes -------------------------------------------------------


def ray_cpu_seconds() -> dict[tuple[int, float], float]:
    """user+sys CPU seconds of every Ray process, keyed by (pid, create time).

    An embedded Ray is a tree under this driver process (gcs_server, raylet, the
    dashboard, and every worker/replica the raylet forks), so its descendants are
    exactly the cluster and nothing else running on the machine. This process
    (the bench clients plus the Ray driver) is left out on purpose.
    """
    out = {}
    for p in psutil.Process().children(recursive=True):
        try:
            with p.oneshot():
                t = p.cpu_times()
                out[(p.pid, p.create_time())] = t.user + t.system
        except psutil.Error:
            continue  # exited between listing and reading
    return out


def ray_rss_bytes() -> int:
    """Resident memory of every Ray process (the same tree as ray_cpu_seconds)."""
    total = 0
    for p in psutil.Process().children(recursive=True):
        try:
            total += p.memory_info().rss
        except psutil.Error:
            continue
    return total


async def peak_rss(stop: asyncio.Event) -> int:
    """Highest Ray RSS seen until `stop` (sampled off the event loop: psutil reads /proc)."""
    peak = 0
    while not stop.is_set():
        peak = max(peak, await asyncio.to_thread(ray_rss_bytes))
        try:
            await asyncio.wait_for(stop.wait(), RSS_SAMPLE_S)
        except asyncio.TimeoutError:
            pass
    return peak


def machine_busy_seconds() -> float:
    """CPU seconds spent by everything on the machine (all cores)."""
    t = psutil.cpu_times()
    return t.user + t.nice + t.system + t.irq + t.softirq + getattr(t, "steal", 0.0)


def own_cpu_seconds() -> float:
    t = psutil.Process().cpu_times()
    return t.user + t.system


def cpu_delta(before: dict[tuple[int, float], float], after: dict[tuple[int, float], float]) -> float:
    # A process born during the level counts in full; one that died is lost (rare: workers are long-lived).
    return sum(v - before.get(k, 0.0) for k, v in after.items())


# -- levels -------------------------------------------------------------------------


@dataclass
class LevelResult:
    behaviour: str
    calls: int
    rounds: int
    utterances: int
    dropped: int
    asr_p50_ms: float | None
    asr_p95_ms: float | None
    tts_p50_ms: float | None
    tts_p95_ms: float | None
    cpu_pct_per_call: float
    mem_mb_per_call: float  # peak Ray RSS during the level minus RSS before it, per call
    ray_rss_mb: float  # Ray RSS before the level
    ray_cpu_s: float
    wall_s: float
    ray_processes: int
    other_cpu_pct: float  # load from outside the bench and its Ray (other jobs skew latencies)
    server_asr_p50_ms: float | None
    asr_compute_p50_ms: float | None
    server_tts_p50_ms: float | None
    hangup_failures: int
    early_finals: int
    failures: list[str]
    errors: list[str]
    asr_ms: list[float]
    tts_ms: list[float]
    transcripts: list[str]
    whole: int = 0  # finals holding every word of the sentence (none cut off at a pause)
    asr_decodes: int | None = None  # turn-end decodes (speculations included) the ASR replicas ran
    asr_partials: int | None = None  # partial decodes they ran (skipped ones not counted)
    reply_gaps_ms: list[float] | None = None  # with --hear-replies: each reply's late audio


def pct(values: list[float], q: float) -> float | None:
    return float(np.percentile(values, q)) if values else None


async def run_level(url: str, audio: CallerAudio, calls: int, rounds: int, seed: int,
                    behaviour: str = "new") -> LevelResult:
    rng = random.Random(seed)
    Timeouts.for_level(calls)
    rss0 = await asyncio.to_thread(ray_rss_bytes)
    stop = asyncio.Event()
    sampler = asyncio.create_task(peak_rss(stop))
    before, busy0, own0 = ray_cpu_seconds(), machine_busy_seconds(), own_cpu_seconds()
    since = log_stamp()
    t0 = time.monotonic()
    per_call = await asyncio.gather(*(one_call(url, audio, rounds, random.Random(rng.random()))
                                      for _ in range(calls)))
    wall = time.monotonic() - t0
    stop.set()
    rss_peak = await sampler
    after, busy1, own1 = ray_cpu_seconds(), machine_busy_seconds(), own_cpu_seconds()
    cpu_s = cpu_delta(before, after)
    other_s = max(0.0, (busy1 - busy0) - cpu_s - (own1 - own0))
    rs = [r for call in per_call for r in call]
    ok = [r for r in rs if r.ok]
    await asyncio.sleep(0.5)  # the replicas' last log lines reach their files
    decodes = await asyncio.to_thread(asr_decodes_since, since)
    from bench.asr_set import words
    asr = [r.asr_ms for r in ok]
    tts = [r.tts_ms for r in ok]
    return LevelResult(
        behaviour=behaviour, calls=calls, rounds=rounds, utterances=len(rs), dropped=len(rs) - len(ok),
        asr_p50_ms=pct(asr, 50), asr_p95_ms=pct(asr, 95), tts_p50_ms=pct(tts, 50), tts_p95_ms=pct(tts, 95),
        cpu_pct_per_call=cpu_s / wall / calls * 100,
        mem_mb_per_call=max(0, rss_peak - rss0) / calls / 2**20, ray_rss_mb=rss0 / 2**20, ray_cpu_s=cpu_s,
        wall_s=wall, ray_processes=len(after),
        other_cpu_pct=other_s / wall * 100,
        server_asr_p50_ms=pct([r.server_asr_ms for r in ok if r.server_asr_ms is not None], 50),
        asr_compute_p50_ms=pct([r.asr_compute_ms for r in ok if r.asr_compute_ms is not None], 50),
        server_tts_p50_ms=pct([r.server_tts_ms for r in ok if r.server_tts_ms is not None], 50),
        hangup_failures=sum(not r.hangup_ok for r in ok), early_finals=sum(r.early_finals for r in rs),
        failures=[r.failure for r in rs if r.failure], errors=[e for r in rs for e in r.errors],
        asr_ms=asr, tts_ms=tts, transcripts=[r.transcript for r in ok],
        whole=sum(words(r.transcript or "") == words(SENTENCE) for r in ok),
        asr_decodes=decodes[0] if decodes else None, asr_partials=decodes[1] if decodes else None,
        reply_gaps_ms=[r.reply_gap_ms for r in ok] if Replies.whole else None,
    )


def log_stamp() -> str:
    """Now, as voxray's log lines stamp their time ("ts", UTC)."""
    now = time.time()
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(now)) + f".{int(now % 1 * 1000):03d}Z"


def asr_decodes_since(since: str) -> tuple[int, int] | None:
    """(turn-end decodes, partial decodes) the ASR replicas logged since `since`, from this
    Ray's worker logs (a decode logs "transcribed"; a request cancelled in the queue, a
    speculation the caller talked over, logs nothing); None where the logs are not found."""
    try:
        import ray

        logs = Path(ray._private.worker.global_worker.node.get_logs_dir_path())
    except Exception:
        return None
    finals = partials = 0
    for path in logs.glob("worker-*.err"):
        try:
            text = path.read_text(errors="replace")
        except OSError:
            continue
        for line in text.splitlines():
            if '"msg": "transcribed"' not in line:
                continue
            try:
                rec = json.loads(line)
            except ValueError:
                continue
            if rec.get("ts", "") >= since:
                partials += bool(rec.get("partial"))
                finals += not rec.get("partial")
    return finals, partials


# -- server -------------------------------------------------------------------------


def free_port() -> int:
    """The app's port: free now, bound once Ray is up (by HAProxy or Serve's proxy), so
    taken outside the ephemeral range the new Ray's own connections draw from."""
    from voxray.cluster.ingress_proxy import free_listen_port

    return free_listen_port()


def variant_names(p: argparse.ArgumentParser, text: str, known) -> list[str]:
    """A bench's `--variants` as names in order; argparse's error for any not in `known`."""
    names = [v for v in text.split(",") if v]
    unknown = set(names) - set(known)
    if unknown:
        p.error(f"unknown variants {sorted(unknown)}")
    return names


def refuse_other_cluster() -> None:
    """The bench always runs on an embedded Ray of its own (start_ray starts a new local
    instance even beside other Ray clusters on this machine); a RAY_ADDRESS in the
    environment would make it join that cluster instead and measure someone else's."""
    os.environ.pop("RAY_ADDRESS", None)


def start_server(config) -> None:
    """Embedded Ray + the voxray app; the deploy is bounded in time."""
    from voxray.cluster.local import deploy
    from voxray.cluster.ray_start import eprint, start_ray

    start_ray(num_cpus=None, log=eprint, ingress_proxy=config.serve.proxy)
    failed: list[BaseException] = []

    def run() -> None:
        try:
            deploy(config, log=eprint)
        except BaseException as exc:
            failed.append(exc)

    worker = threading.Thread(target=run, daemon=True, name="deploy")
    worker.start()
    worker.join(DEPLOY_TIMEOUT_S)
    if worker.is_alive():
        raise RuntimeError(f"deploy did not finish within {DEPLOY_TIMEOUT_S:.0f}s")
    if failed:
        raise failed[0]


def arm_watchdog(limit_s: float) -> threading.Timer:
    """Last resort if something hangs past every per-stage timeout: leave anyway."""
    def fire() -> None:
        print(f"bench: still running after {limit_s:.0f}s; giving up", file=sys.stderr, flush=True)
        try:
            from voxray.cluster.local import shutdown
            shutdown()
        finally:
            os._exit(3)

    timer = threading.Timer(limit_s, fire)
    timer.daemon = True
    timer.start()
    return timer


# -- report -------------------------------------------------------------------------


def fmt(v: float | None) -> str:
    return "-" if v is None else f"{v:.0f}"


def table(levels: list[LevelResult]) -> str:
    head = (f"{'behaviour':<9} {'calls':>5} {'utts':>5} {'dropped':>7} {'asr p50':>8} {'asr p95':>8} "
            f"{'tts p50':>8} {'tts p95':>8} {'cpu%/call':>9} {'MB/call':>7}")
    lines = [head, "-" * len(head)]
    for lv in sorted(levels, key=lambda lv: (lv.calls, BEHAVIOURS.index(lv.behaviour))):
        lines.append(f"{lv.behaviour:<9} {lv.calls:>5} {lv.utterances:>5} {lv.dropped:>7} {fmt(lv.asr_p50_ms):>8} "
                     f"{fmt(lv.asr_p95_ms):>8} {fmt(lv.tts_p50_ms):>8} {fmt(lv.tts_p95_ms):>8} "
                     f"{lv.cpu_pct_per_call:>9.1f} {lv.mem_mb_per_call:>7.1f}")
    return "\n".join(lines)


def report(levels: list[LevelResult], audio: CallerAudio, end_silence_ms: int, idle_cpu_pct: float) -> str:
    sample = next((t for lv in levels for t in lv.transcripts if t), None)
    notes = [
        f"voxray bench: {psutil.cpu_count()} CPUs, Python {platform.python_version()}, "
        f"speech {audio.speech_s:.2f} s (Piper); old: a fixed {end_silence_ms} ms end-of-speech wait, "
        "new: read from the pause's transcript (200-1200 ms)",
        "latencies in ms from end of speech (last speech frame sent): asr = asrFinal arrives, "
        "tts = first reply audio frame arrives; cpu = all Ray processes, % of one core per concurrent call; "
        "MB/call = peak Ray RSS growth per concurrent call",
        "",
        table(levels),
        "",
        f'sample asrFinal: "{sample}"' if sample else "sample asrFinal: (none: every utterance dropped)",
        f'spoken:          "{SENTENCE}"' + (f" (with a {audio.pause_ms} ms pause after \"{PAUSED_AT[0]}\")"
                                                   if audio.pause_ms else ""),
        f"Ray idle (no calls): {idle_cpu_pct:.1f}% of one core, included in cpu%/call; "
        f"Ray RSS before the levels {levels[0].ray_rss_mb:.0f} MB" if levels else "",
    ]
    for lv in levels:
        extra = [f"server p50: asr request {fmt(lv.server_asr_p50_ms)} ms (whisper {fmt(lv.asr_compute_p50_ms)}), "
                 f"tts to first chunk {fmt(lv.server_tts_p50_ms)} ms"]
        if lv.other_cpu_pct > 10:
            extra.append(f"WARNING: other processes used {lv.other_cpu_pct:.0f}% of a core meanwhile")
        if lv.hangup_failures:
            extra.append(f"{lv.hangup_failures} hangups unconfirmed")
        if lv.early_finals:
            extra.append(f"{lv.early_finals} asrFinal before end of speech (split utterance)")
        if audio.pause_ms:
            extra.append(f"{lv.whole} of {lv.utterances} finals held the whole sentence")
        if lv.reply_gaps_ms is not None:
            gaps = [g for g in lv.reply_gaps_ms if g > 0]
            extra.append(f"replies heard whole: {len(gaps)} of {len(lv.reply_gaps_ms)} with a gap"
                         + (f" (longest {max(gaps):.0f} ms, p50 {pct(gaps, 50):.0f})" if gaps else ""))
        if lv.asr_decodes is not None:
            extra.append(f"ASR ran {lv.asr_decodes} turn-end decodes ({lv.asr_decodes / max(1, lv.utterances):.2f} "
                         f"a turn) and {lv.asr_partials} partials")
        if lv.failures:
            extra.append("dropped: " + "; ".join(sorted(set(lv.failures))))
        if lv.errors:
            extra.append("server errors: " + "; ".join(sorted(set(lv.errors))[:5]))
        notes.append(f"[{lv.behaviour}, {lv.calls} calls] " + " | ".join(extra))
    return "\n".join(notes)


def write_json(levels: list[LevelResult], audio: CallerAudio, args: argparse.Namespace, port: int,
               idle_cpu_pct: float, extra: dict | None = None) -> None:
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    doc = {
        "when": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "machine": {"cpus": psutil.cpu_count(), "platform": platform.platform(),
                    "python": platform.python_version()},
        "settings": {"calls": args.calls, "rounds": args.rounds, "port": port, "sentence": SENTENCE,
                     "reply": REPLY, "speech_s": audio.speech_s, "eos_sample": audio.eos_sample,
                     "trimmed_tail_ms": audio.trimmed_tail_ms, "pause_ms": audio.pause_ms, "stagger_s": STAGGER_S,
                     "asr_timeout_s": ASR_TIMEOUT_S, "tts_timeout_s": TTS_TIMEOUT_S},
        "ray_idle_cpu_pct": idle_cpu_pct,
        "levels": [asdict(lv) for lv in levels],
        **(extra or {}),
    }
    RESULTS.write_text(json.dumps(doc, indent=2) + "\n")


# -- main ---------------------------------------------------------------------------


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--calls", default="1,8,32", help="concurrency levels, comma-separated (default 1,8,32)")
    p.add_argument("--behaviours", default="old,new", help="old, new or both (default old,new)")
    p.add_argument("--rounds", type=int, default=8,
                   help=f"utterances per call per level below {ONE_ROUND_FROM} calls (default 8)")
    p.add_argument("--quick", action="store_true",
                   help="levels 1,2 with one round; short VAD/ASR/hop runs (under ~3 minutes)")
    p.add_argument("--no-pipecat", action="store_true", help="leave out the pipecat VAD comparison")
    p.add_argument("--calls-only", action="store_true", help="only the end-to-end levels (no model or hop tables)")
    p.add_argument("--media-calls", default="16,32",
                   help="media-plane CPU levels (noise, no ASR), comma-separated; empty: none (default 16,32)")
    p.add_argument("--media-seconds", type=float, default=20.0, help="media-plane window per level (default 20)")
    p.add_argument("--config", default=None,
                   help="TOML/JSON config the levels deploy (default: voxray's defaults), e.g. replica counts")
    p.add_argument("--seed", type=int, default=1, help="seed of the call-start stagger")
    p.add_argument("--pause-ms", type=int, default=0,
                   help=f"the caller pauses this long after \"{PAUSED_AT[0]}\" (a mid-sentence pause; default 0: none)")
    p.add_argument("--hear-replies", action="store_true",
                   help="callers hear each reply to its end before hanging up (default: they hang up at its first "
                        "sound) and the bench counts the gaps in its audio")
    p.add_argument("--plot", default=str(RESULTS.parent.parent / "latency_cpu.png"),
                   help="PNG of latency and CPU per call against concurrent calls (bench/plot.py); "
                        "empty: none (default bench/latency_cpu.png)")
    args = p.parse_args(argv)
    args.calls = [1, 2] if args.quick else [int(c) for c in args.calls.split(",") if c.strip()]
    args.behaviours = [b for b in BEHAVIOURS if b in args.behaviours.split(",")]
    args.media_calls = [] if args.calls_only else (
        [16] if args.quick else [int(c) for c in args.media_calls.split(",") if c.strip()])
    if args.quick:
        args.media_seconds = 6.0
    if not args.behaviours:
        p.error(f"--behaviours takes {', '.join(BEHAVIOURS)}")
    if args.quick:
        args.rounds = 1
    if not args.calls or min(args.calls) < 1 or args.rounds < 1:
        p.error("--calls needs positive integers and --rounds at least 1")
    return args


async def idle_ray_cpu_pct(seconds: float) -> float:
    """Ray's own background CPU with no call up (controller, proxy, dashboard, health checks).

    It is part of every level's cpu%/call; this baseline lets a reader take it out.
    """
    before, t0 = ray_cpu_seconds(), time.monotonic()
    await asyncio.sleep(seconds)
    return cpu_delta(before, ray_cpu_seconds()) / (time.monotonic() - t0) * 100


async def measure(url: str, audio: CallerAudio, args: argparse.Namespace,
                  behaviour: str) -> tuple[list[LevelResult], float]:
    # One unmeasured call first: the first request to each model pays one-off warm-up costs.
    warm = await one_round(url, audio)
    print(f"bench: warm-up call {'ok' if warm.ok else 'failed: ' + str(warm.failure)}", file=sys.stderr, flush=True)
    idle = await idle_ray_cpu_pct(IDLE_S)
    levels = []
    for i, n in enumerate(args.calls):
        rounds = 1 if n >= ONE_ROUND_FROM else args.rounds
        print(f"bench: {behaviour}: {n} concurrent call(s) x {rounds} round(s)", file=sys.stderr, flush=True)
        levels.append(await run_level(url, audio, n, rounds, seed=args.seed + i, behaviour=behaviour))
    return levels, idle


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run as a script: find `bench`
    from bench import asr_windows, media_plane, plot, ray_hops, vad_throughput
    from voxray.cluster.local import shutdown
    from voxray.cluster.ray_start import eprint
    from voxray.config import VoxrayConfig

    if args.plot:
        plot.check_backend()  # fail now, not after minutes of levels
    refuse_other_cluster()
    # Model-only benches first, in this process and before Ray is up, so nothing else runs beside them.
    vad = None if args.calls_only else vad_throughput.run(64, quick=args.quick, pipecat=not args.no_pipecat,
                                                          log=eprint)
    asr = [] if args.calls_only else asr_windows.run(quick=args.quick, log=eprint)
    Replies.whole = args.hear_replies
    audio = make_caller_audio(args.pause_ms)
    config = VoxrayConfig.load(args.config) if args.config else VoxrayConfig()
    config.serve.host = "127.0.0.1"  # loopback only, whatever the environment says
    config.serve.port = free_port()
    # The levels measure the pipeline past saturation (32, 64 calls on 2 cores): admission
    # control would turn those calls away, which bench/soak.py shows instead.
    config.admission.asr_latency_s = None
    url = f"ws://127.0.0.1:{config.serve.port}/call"
    budget = HOPS_BOUND_S + len(args.behaviours) * (DEPLOY_TIMEOUT_S + 60 + IDLE_S + sum(
        round_bound_s(audio, level_slack_s(n)) * args.rounds for n in [1] + args.calls) + sum(
        args.media_seconds + 120 for _ in args.media_calls))
    watchdog = arm_watchdog(budget)
    levels: list[LevelResult] = []
    plane: list[tuple[str, object]] = []
    try:
        for behaviour in args.behaviours:
            print(f"bench: deploying the {behaviour} behaviour", file=sys.stderr, flush=True)
            start_server(behaviour_config(config, behaviour))
            found, idle = asyncio.run(measure(url, audio, args, behaviour))
            levels += found
            for n in args.media_calls:
                print(f"bench: {behaviour}: media plane, {n} calls", file=sys.stderr, flush=True)
                plane.append((behaviour, asyncio.run(media_plane.measure_media_plane(
                    url, n, args.media_seconds, idle_pct=idle))))
        hops = None
        if not args.calls_only:
            print("bench: Ray hop overhead", file=sys.stderr, flush=True)
            hops = asyncio.run(ray_hops.measure(config.serve.app_name, *((30, 5) if args.quick else (200, 20)),
                                                log=eprint))
    finally:
        shutdown()
        watchdog.cancel()
    if vad is not None:
        print("== VAD throughput (one core each; CPU time) ==")
        print(vad_throughput.table(vad))
        print()
    if asr:
        print("== ASR windows: Whisper tiny.en, full 30 s vs bucketed, labelled utterances ==")
        print(asr_windows.table(asr))
        print()
    print("== End to end: N concurrent /call calls ==")
    print(report(levels, audio, config.media.end_silence_ms, idle))
    if plane:
        print()
        print("== /call media plane without ASR: line noise, VAD on; % of one core per call (Ray processes) ==")
        print(media_plane.table(sorted(plane, key=lambda r: (r[1].calls, BEHAVIOURS.index(r[0])))))
    if hops is not None:
        print()
        print("== Ray overhead per hop on the audio path (ms; sequential calls) ==")
        print(ray_hops.table(hops), flush=True)
    extra = {"asr": [asdict(r) | {"ms_per_utt": r.ms_per_utt, "utt_per_core_s": r.utt_per_core_s} for r in asr]}
    if vad is not None:
        extra |= {"vad": [asdict(r) | {"rtf": r.rtf, "streams_per_core": r.streams_per_core} for r in vad.results],
                  "vad_ratios": {"batch_vs_single": vad.batch_vs_single, "batch_vs_pipecat": vad.batch_vs_pipecat}}
    if hops is not None:
        extra["hops"] = [asdict(h) for h in hops.hops]
    extra["media_plane"] = [{"behaviour": b, **asdict(r)} for b, r in plane]
    write_json(levels, audio, args, config.serve.port, idle, extra=extra)
    print(f"(results: {RESULTS})", flush=True)
    if args.plot and levels:
        print(f"(plot: {plot.write_plot([asdict(lv) for lv in levels], args.plot)})", flush=True)


if __name__ == "__main__":
    main()
