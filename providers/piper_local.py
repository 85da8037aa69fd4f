"""Local TTS with a Piper voice (ONNX).

piper-tts runs its voice with onnxruntime and takes `use_cuda` (CUDAExecutionProvider);
that provider is only in the onnxruntime-gpu package, which replaces onnxruntime (the
same module). With the plain onnxruntime "auto" stays on the CPU and "cuda" is an error.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

from voxray.logs import get_logger
from voxray.providers.base import CallCredentials, ProviderError, TtsChunk, TtsProvider, run_model_step
from voxray.providers.device import DeviceUnavailable, onnx_cuda_devices, pick_device, replica_cuda
from voxray.providers.model_paths import piper_voice_path

log = get_logger("voxray.providers.piper")

_DONE = object()
CUDA_PROBE = "no CUDAExecutionProvider in onnxruntime.get_available_providers(): install onnxruntime-gpu"


class PiperLocal(TtsProvider):
    name = "piper"
    computes_locally = True

    def __init__(self, voice_path: str | None = None, device: str = "auto", gpu_ids: list | None = None,
                 threads: int = 1) -> None:
        self.voice_path = voice_path or piper_voice_path()
        self.threads = threads  # onnxruntime intra-op threads on the CPU; 0: its default (one per core)
        self.requested_device = device
        self.gpu_ids = gpu_ids  # the GPUs Ray gave the replica (None outside Ray): none, no CUDA
        self.device: str | None = None  # what load() got
        self._voice = None

    def load(self) -> None:
        import onnxruntime
        from piper import PiperVoice

        cuda, probe = replica_cuda(onnx_cuda_devices(onnxruntime.get_available_providers()), self.gpu_ids,
                                   CUDA_PROBE)
        device, _ = pick_device(self.requested_device, "auto", cuda, probe=probe)
        voice = PiperVoice.load(self.voice_path, use_cuda=device == "cuda")
        if device == "cuda" and "CUDAExecutionProvider" not in voice.session.get_providers():
            # onnxruntime-gpu is installed but its CUDA provider did not start (no GPU, no
            # CUDA libraries): onnxruntime went on with the CPU.
            if self.requested_device == "cuda":
                raise DeviceUnavailable(f"device 'cuda' was asked for the piper voice, but onnxruntime's CUDA "
                                        f"provider did not start (session providers: "
                                        f"{voice.session.get_providers()}); set the device to 'auto' or 'cpu'")
            log.warning("piper could not load on cuda, running on the cpu",
                        extra={"voice": self.voice_path, "session_providers": voice.session.get_providers()})
            device = "cpu"
        if device == "cpu" and self.threads > 0:
            # Piper builds its session with onnxruntime's defaults: a thread per core, spinning
            # between operators. Beside Whisper and the media plane, fewer and quiet threads
            # give the cores to whoever has work.
            opts = onnxruntime.SessionOptions()
            opts.intra_op_num_threads, opts.inter_op_num_threads = self.threads, 1
            opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
            voice.session = onnxruntime.InferenceSession(self.voice_path, sess_options=opts,
                                                         providers=["CPUExecutionProvider"])
        self._voice, self.device = voice, device

    def describe(self) -> dict:
        """Where the loaded voice runs, for the deployment's log."""
        session = getattr(self._voice, "session", None)
        return {"model": self.voice_path, "device": self.device, "threads": self.threads,
                "session_providers": session.get_providers() if session is not None else None}

    async def synthesize(self, text: str, speed: float = 1.0, speaker: str | None = None,
                         creds: CallCredentials | None = None) -> AsyncIterator[TtsChunk]:
        if self._voice is None:
            raise ProviderError("piper voice not loaded")
        from piper import SynthesisConfig

        config = SynthesisConfig(length_scale=1.0 / speed)
        chunks = iter(self._voice.synthesize(text, syn_config=config))
        # Piper synthesises sentence by sentence; pull each off the loop so the
        # first sentence is sent while the next one is computed.
        while True:
            chunk = await run_model_step(next, chunks, _DONE)
            if chunk is _DONE:
                return
            yield TtsChunk(pcm=chunk.audio_int16_bytes, sample_rate=chunk.sample_rate)
