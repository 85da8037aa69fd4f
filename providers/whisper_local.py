"""Local ASR with faster-whisper (CTranslate2), one utterance or a batch of them."""

from __future__ import annotations

import asyncio
import time

import numpy as np

from voxray.providers.base import AsrProvider, CallCredentials, ProviderError, Transcript
from voxray.providers.model_paths import whisper_model_path

SR = 16000
# Whisper's encoder always sees a 30 s window: longer audio cannot share a batch
# row and goes through the sequential path (which seeks window by window).
MAX_BATCH_AUDIO_S = 30.0
# faster-whisper's own thresholds: a greedy decode that looks degenerate is redone by
# transcribe() with its temperature fallback; a likely non-speech window gives "".
COMPRESSION_RATIO_THRESHOLD = 2.4
LOG_PROB_THRESHOLD = -1.0
NO_SPEECH_THRESHOLD = 0.6


class WhisperLocal(AsrProvider):
    name = "whisper"

    def __init__(self, model_path: str | None = None, compute_type: str = "int8",
                 cpu_threads: int = 2, beam_size: int = 1) -> None:
        self.model_path = model_path or whisper_model_path()
        self.compute_type = compute_type
        self.cpu_threads = cpu_threads
        self.beam_size = beam_size
        self._model = None
        # CTranslate2 runs one transcription per worker; queue the rest here rather
        # than oversubscribing the cores.
        self._lock = asyncio.Lock()

    def load(self) -> None:
        from faster_whisper import WhisperModel

        self._model = WhisperModel(
            self.model_path, device="cpu", compute_type=self.compute_type, cpu_threads=self.cpu_threads,
        )

    def _language(self, language: str | None) -> str | None:
        # An English-only model (tiny.en) knows no other language.
        return language if self._model.model.is_multilingual else "en"

    def _run(self, audio: np.ndarray, language: str | None) -> tuple[str, str | None]:
        segments, info = self._model.transcribe(
            audio, language=language, beam_size=self.beam_size,
            vad_filter=False, condition_on_previous_text=False,
            without_timestamps=True,
        )
        text = " ".join(s.text.strip() for s in segments).strip()
        return text, info.language

    async def transcribe(self, pcm16k: np.ndarray, language: str | None = None,
                         creds: CallCredentials | None = None) -> Transcript:
        if self._model is None:
            raise ProviderError("whisper model not loaded")
        audio = pcm16k.astype(np.float32) / 32768.0
        async with self._lock:
            t0 = time.perf_counter()
            text, lang = await asyncio.to_thread(self._run, audio, self._language(language))
            compute = time.perf_counter() - t0
        return Transcript(text=text, language=lang, audio_s=audio.size / SR, compute_s=compute)

    @staticmethod
    def batchable(pcm16k: np.ndarray) -> bool:
        return pcm16k.size <= MAX_BATCH_AUDIO_S * SR

    async def transcribe_batch(self, pcm16k: list[np.ndarray],
                               languages: list[str | None] | None = None) -> list[Transcript]:
        """Many utterances in one encoder pass and one batched decode.

        Each utterance is padded to Whisper's 30 s window anyway, so a batch of N costs
        one matrix pass of N rows instead of N passes of one. `compute_s` of each result
        is the whole batch's time (what the caller waited for the model).
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
            texts, found = await asyncio.to_thread(self._run_batch, audios, langs)
            # The rare degenerate greedy decode goes again through transcribe()'s fallback.
            for i, text in enumerate(texts):
                if text is None:
                    texts[i], found[i] = await asyncio.to_thread(self._run, audios[i], langs[i])
            compute = time.perf_counter() - t0
        return [Transcript(text=t, language=lang, audio_s=a.size / SR, compute_s=compute)
                for t, lang, a in zip(texts, found, audios, strict=True)]

    def _run_batch(self, audios: list[np.ndarray],
                   languages: list[str | None]) -> tuple[list[str | None], list[str | None]]:
        """Greedy decode of every audio at temperature 0, as transcribe() starts.

        Returns the texts (None where the decode should be redone with the temperature
        fallback) and each audio's language.
        """
        from faster_whisper.audio import pad_or_trim
        from faster_whisper.tokenizer import Tokenizer
        from faster_whisper.transcribe import get_compression_ratio, get_suppressed_tokens

        m = self._model
        fe = m.feature_extractor
        features = np.stack([pad_or_trim(fe(a)[:, :fe.nb_max_frames]) for a in audios])
        encoded = m.encode(features)
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
            encoded, prompts, beam_size=self.beam_size, max_length=m.max_length,
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
            elif get_compression_ratio(text) > COMPRESSION_RATIO_THRESHOLD or avg_logprob < LOG_PROB_THRESHOLD:
                texts.append(None)
            else:
                texts.append(text)
        return texts, languages
