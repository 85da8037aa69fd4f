"""Local ASR with faster-whisper (CTranslate2)."""

from __future__ import annotations

import asyncio
import time

import numpy as np

from voxray.providers.base import AsrProvider, CallCredentials, ProviderError, Transcript
from voxray.providers.model_paths import whisper_model_path


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
        if not self._model.model.is_multilingual:
            language = "en"  # an English-only model (tiny.en) knows no other language
        async with self._lock:
            t0 = time.perf_counter()
            text, lang = await asyncio.to_thread(self._run, audio, language)
            compute = time.perf_counter() - t0
        return Transcript(text=text, language=lang, audio_s=audio.size / 16000, compute_s=compute)
