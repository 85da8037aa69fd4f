"""Local ASR with faster-whisper (CTranslate2), one utterance or a batch of them.

Whisper was trained on 30 s windows, and `WhisperModel.transcribe` pads every
utterance to one: for the 2-5 s a caller says, most of the encoder's work is on
padding. CTranslate2's encoder takes shorter windows, so utterances are padded up to
a *bucket* (multiples of 5 s by default, at least 10 s) instead: the encoder's cost
falls 4-7x (its attention is quadratic in the window) and the words stay the same.
Windows too short for the audio make small models repeat themselves (tiny.en says
"Yes. Yes. Yes. ..." for a 1 s "Yes." in a 5 s window, never in a 10 s one), which is
why there is a floor and headroom, why a decode may not run past what the audio could
hold, and why every result passes faster-whisper's own repetition test (compression
ratio), its confidence test and a repeated-phrase test; one that fails is decoded again
with the full 30 s window and faster-whisper's temperature fallback.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass

import numpy as np

from voxray.logs import get_logger
from voxray.providers.base import AsrProvider, CallCredentials, ProviderError, Transcript
from voxray.providers.device import pick_device, replica_cuda
from voxray.providers.model_paths import check_whisper_dir, whisper_model_path

log = get_logger("voxray.providers.whisper")

SR = 16000
FRAMES_PER_S = 100  # Whisper's mel hop is 10 ms
FULL_WINDOW_S = 30.0
# Whisper's encoder sees at most a 30 s window: longer audio cannot share a batch
# row and goes through the sequential path (which seeks window by window).
MAX_BATCH_AUDIO_S = FULL_WINDOW_S
DEFAULT_BUCKET_S = 5.0
# Measured on tiny.en with bench/asr_set.py: 1-2 s utterances repeat themselves in
# 5 s windows, none did in 10 s ones, and a 10 s window costs ~15 ms more than 5 s.
DEFAULT_MIN_WINDOW_S = 10.0
# A window must hold at least this much padding past the audio: tiny.en repeats
# itself when the window ends right where the speech ends.
MIN_HEADROOM_S = 0.5
# Nobody says more than ~6 tokens a second; a decode that goes on is repeating itself.
MAX_TOKENS_PER_S = 10
MIN_MAX_TOKENS = 24
# faster-whisper's own thresholds: a greedy decode that looks degenerate is redone by
# transcribe() with its temperature fallback; a likely non-speech window gives "".
COMPRESSION_RATIO_THRESHOLD = 2.4
LOG_PROB_THRESHOLD = -1.0
NO_SPEECH_THRESHOLD = 0.6


def window_frames(audio_frames: int, bucket_s: float, min_window_s: float = DEFAULT_MIN_WINDOW_S) -> int:
    """The encoder window for `audio_frames` of features: the next bucket with headroom, at most 30 s."""
    full = int(FULL_WINDOW_S * FRAMES_PER_S)
    if bucket_s >= FULL_WINDOW_S:
        return full
    bucket = int(bucket_s * FRAMES_PER_S)
    need = max(audio_frames + int(MIN_HEADROOM_S * FRAMES_PER_S), int(min_window_s * FRAMES_PER_S))
    return min(full, -(-need // bucket) * bucket)


def looks_repeated(text: str) -> bool:
    """The text is one phrase said over again: whole ("Hello there. Hello there."), or with
    the last time cut short where the decode stopped ("... at my house. I ordered a blue
    jacket ... at my house. I ordered": tiny.en in a window that ends near the speech)."""
    words = [w.strip(".,?!;:").lower() for w in text.split()]
    n = len(words)
    # The words repeat with period p at least twice over: whole copies for any phrase, or
    # for one of three words or more, a last copy cut short.
    return any((p >= 3 or n % p == 0) and all(words[i] == words[i - p] for i in range(p, n))
               for p in range(1, n // 2 + 1))


def batch_windows(windows: list[int], one_call: bool) -> dict[int, list[int]]:
    """Which utterances share a model call, by window (frames -> indices).

    On the CPU each window size goes in its own call: a call costs about the sum of its
    rows, so a short utterance padded to a long one's window would cost more. On a GPU a
    call of 8 full windows costs less than two or three calls of smaller ones (H100,
    tiny.en: 8 ms an utterance in batches of 8 full windows, 10 ms bucketed), so a batch
    is one call at its longest window (longer windows never make a small model repeat
    itself; shorter ones do)."""
    if one_call and windows:
        return {max(windows): list(range(len(windows)))}
    groups: dict[int, list[int]] = {}
    for i, frames in enumerate(windows):
        groups.setdefault(frames, []).append(i)
    return groups


@dataclass(frozen=True)
class Decoded:
    text: str | None  # None: degenerate, decode again with the full window
    language: str | None
    window_s: float


class WhisperLocal(AsrProvider):
    name = "whisper"

    def __init__(self, model_path: str | None = None, compute_type: str = "auto",
                 cpu_threads: int = 2, beam_size: int = 1, window_bucket_s: float = DEFAULT_BUCKET_S,
                 min_window_s: float = DEFAULT_MIN_WINDOW_S, device: str = "auto",
                 gpu_ids: list | None = None, workers: int = 1) -> None:
        if not 1.0 <= window_bucket_s <= FULL_WINDOW_S or not 1.0 <= min_window_s <= FULL_WINDOW_S:
            raise ValueError(f"whisper windows must be within 1..{FULL_WINDOW_S:.0f} s")
        self.model_path = model_path or whisper_model_path()
        # What was asked for ("auto" etc.); load() sets device/compute_type to what it loaded with.
        self.requested_device = device
        self.requested_compute_type = compute_type
        self.gpu_ids = gpu_ids  # the GPUs Ray gave the replica (None outside Ray): none, no CUDA
        self.device: str | None = None
        self.compute_type: str | None = None
        self.cpu_threads = cpu_threads
        self.beam_size = beam_size
        self.window_bucket_s = window_bucket_s
        self.min_window_s = min_window_s
        self.redone = 0  # results that failed the repetition/confidence test and went again
        self._model = None
        # CTranslate2 runs one transcription per worker; queue the rest here rather than
        # in its own queue (where a cancelled request would still be decoded).
        self.workers = workers
        self._lock = asyncio.Semaphore(workers)

    def load(self) -> None:
        import ctranslate2
        from faster_whisper import WhisperModel

        path = check_whisper_dir(self.model_path)
        cuda, probe = replica_cuda(ctranslate2.get_cuda_device_count(), self.gpu_ids,
                                   "ctranslate2.get_cuda_device_count() found none")
        device, compute_type = pick_device(self.requested_device, self.requested_compute_type, cuda, probe=probe)
        try:
            self._model = WhisperModel(path, device=device, compute_type=compute_type, cpu_threads=self.cpu_threads,
                                       num_workers=self.workers)
        except (RuntimeError, ValueError) as exc:
            # "auto" saw a CUDA device that would not load the model (no cuBLAS, an old
            # driver): the CPU still serves. An explicit "cuda" fails here, loudly.
            if self.requested_device != "auto" or device == "cpu":
                raise
            log.warning("whisper could not load on cuda, loading on the cpu",
                        extra={"model": path, "compute_type": compute_type, "error": repr(exc)[:300]})
            device, compute_type = pick_device("auto", self.requested_compute_type, 0)
            self._model = WhisperModel(path, device=device, compute_type=compute_type, cpu_threads=self.cpu_threads,
                                       num_workers=self.workers)
        self.device, self.compute_type = device, compute_type

    def describe(self) -> dict:
        """Where the loaded model runs, for the deployment's log: device, the compute type
        asked of CTranslate2 and the one it runs (int8 runs as int8_float32 on a CPU)."""
        running = getattr(getattr(self._model, "model", None), "compute_type", None)
        return {"model": self.model_path, "device": self.device, "compute_type": self.compute_type,
                "running_compute_type": running}

    def _language(self, language: str | None) -> str | None:
        # An English-only model (tiny.en) knows no other language.
        return language if self._model.model.is_multilingual else "en"

    def _run(self, audio: np.ndarray, language: str | None) -> tuple[str, str | None]:
        """faster-whisper's own path: full 30 s windows, seeking, temperature fallback."""
        segments, info = self._model.transcribe(
            audio, language=language, beam_size=self.beam_size,
            vad_filter=False, condition_on_previous_text=False,
            without_timestamps=True,
        )
        text = " ".join(s.text.strip() for s in segments).strip()
        return text, info.language

    @staticmethod
    def batchable(pcm16k: np.ndarray) -> bool:
        return pcm16k.size <= MAX_BATCH_AUDIO_S * SR

    async def transcribe(self, pcm16k: np.ndarray, language: str | None = None,
                         creds: CallCredentials | None = None) -> Transcript:
        if self._model is None:
            raise ProviderError("whisper model not loaded")
        if self.batchable(pcm16k):
            return (await self.transcribe_batch([pcm16k], [language]))[0]
        audio = pcm16k.astype(np.float32) / 32768.0
        async with self._lock:
            t0 = time.perf_counter()
            text, lang = await asyncio.to_thread(self._run, audio, self._language(language))
            compute = time.perf_counter() - t0
        return Transcript(text=text, language=lang, audio_s=audio.size / SR, compute_s=compute,
                          window_s=FULL_WINDOW_S)

    async def transcribe_batch(self, pcm16k: list[np.ndarray],
                               languages: list[str | None] | None = None) -> list[Transcript]:
        """Many utterances: one encoder pass and one batched decode per window size on the
        CPU, per batch on CUDA (`batch_windows`).

        Utterances that share a model call are rows of one matrix. `compute_s` of each
        result is the whole batch's time (what the caller waited for the model).
        """
        if self._model is None:
            raise ProviderError("whisper model not loaded")
        if not pcm16k:
            return []
        if not all(self.batchable(p) for p in pcm16k):
            raise ValueError(f"utterances over {MAX_BATCH_AUDIO_S:.0f} s cannot be batched")
        audios = [p.astype(np.float32) / 32768.0 for p in pcm16k]
        langs = [self._language(lang) for lang in (languages or [None] * len(audios))]
        async with self._lock:
            t0 = time.perf_counter()
            decoded = await asyncio.to_thread(self._run_buckets, audios, langs)
            texts = [d.text for d in decoded]
            found = [d.language for d in decoded]
            windows = [d.window_s for d in decoded]
            # The rare degenerate greedy decode goes again through transcribe()'s fallback.
            for i, text in enumerate(texts):
                if text is None:
                    self.redone += 1
                    texts[i], found[i] = await asyncio.to_thread(self._run, audios[i], langs[i])
                    windows[i] = FULL_WINDOW_S
            compute = time.perf_counter() - t0
        return [Transcript(text=t, language=lang, audio_s=a.size / SR, compute_s=compute, window_s=w)
                for t, lang, a, w in zip(texts, found, audios, windows, strict=True)]

    def _run_buckets(self, audios: list[np.ndarray], languages: list[str | None]) -> list[Decoded]:
        fe = self._model.feature_extractor
        features = [fe(a)[:, :fe.nb_max_frames] for a in audios]
        groups = batch_windows([window_frames(f.shape[-1], self.window_bucket_s, self.min_window_s)
                                for f in features], one_call=self.device == "cuda")
        out: list[Decoded | None] = [None] * len(audios)
        for frames, idx in groups.items():
            longest_s = max(features[i].shape[-1] for i in idx) / FRAMES_PER_S
            max_tokens = MIN_MAX_TOKENS + int(MAX_TOKENS_PER_S * longest_s)
            texts, langs = self._run_batch([features[i] for i in idx], [languages[i] for i in idx], frames,
                                           max_tokens)
            for i, text, lang in zip(idx, texts, langs, strict=True):
                out[i] = Decoded(text, lang, frames / FRAMES_PER_S)
        return out  # type: ignore[return-value]

    def _run_batch(self, features: list[np.ndarray], languages: list[str | None],
                   frames: int, max_tokens: int) -> tuple[list[str | None], list[str | None]]:
        """Greedy decode of every window at temperature 0, as transcribe() starts.

        Returns the texts (None where the decode should be redone with the full window
        and the temperature fallback) and each audio's language.
        """
        from faster_whisper.audio import pad_or_trim
        from faster_whisper.tokenizer import Tokenizer
        from faster_whisper.transcribe import get_compression_ratio, get_suppressed_tokens

        m = self._model
        full = int(FULL_WINDOW_S * FRAMES_PER_S)
        encoded = m.encode(np.stack([pad_or_trim(f, frames) for f in features]))
        multilingual = m.model.is_multilingual
        if multilingual and any(lang is None for lang in languages):
            detected = m.model.detect_language(encoded)
            languages = [lang or det[0][0][2:-2] for lang, det in zip(languages, detected, strict=True)]
        tokenizers = {lang: Tokenizer(m.hf_tokenizer, multilingual, task="transcribe", language=lang)
                      for lang in set(languages)}
        prompts = [m.get_prompt(tokenizers[lang], previous_tokens=[], without_timestamps=True)
                   for lang in languages]
        # Every tokenizer shares the special tokens that are suppressed.
        suppress = get_suppressed_tokens(next(iter(tokenizers.values())), [-1])
        results = m.model.generate(
            encoded, prompts, beam_size=self.beam_size, max_length=min(m.max_length, max_tokens),
            return_scores=True, return_no_speech_prob=True, suppress_blank=True,
            suppress_tokens=list(suppress), sampling_temperature=0.0,
        )
        texts: list[str | None] = []
        for res, lang in zip(results, languages, strict=True):
            tokens = res.sequences_ids[0]
            avg_logprob = res.scores[0] * len(tokens) / (len(tokens) + 1)
            text = tokenizers[lang].decode(tokens).strip()
            if res.no_speech_prob > NO_SPEECH_THRESHOLD and avg_logprob < LOG_PROB_THRESHOLD:
                texts.append("")  # transcribe() drops such a window as silence
            elif (get_compression_ratio(text) > COMPRESSION_RATIO_THRESHOLD or avg_logprob < LOG_PROB_THRESHOLD
                  or len(tokens) >= max_tokens - 1 or (frames < full and looks_repeated(text))):
                texts.append(None)
            else:
                texts.append(text)
        return texts, languages
