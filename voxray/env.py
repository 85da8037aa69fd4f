"""Every VOXRAY_* environment variable, in one place (pydantic-settings).

Read afresh at each call of `voxray_env()`: tests and the CLI set variables at run time,
and Ray processes get the ones in `FORWARDED` (cluster/ray_start.py) from the driver.
"""

from __future__ import annotations

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class VoxrayEnv(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="VOXRAY_", extra="ignore")

    config: str | None = Field(None, description="VOXRAY_CONFIG: the JSON or TOML config file")
    host: str | None = Field(None, description="VOXRAY_HOST: overrides serve.host")
    port: int | None = Field(None, ge=0, le=65535, description="VOXRAY_PORT: overrides serve.port")
    log_level: str = Field("INFO", description="VOXRAY_LOG_LEVEL: voxray's loggers")
    whisper_model: str | None = Field(None, description="VOXRAY_WHISPER_MODEL: a CTranslate2 Whisper folder")
    piper_voice: str | None = Field(None, description="VOXRAY_PIPER_VOICE: a Piper .onnx voice")
    silero_vad: str | None = Field(None, description="VOXRAY_SILERO_VAD: the Silero VAD .onnx")
    token: str | None = Field(None, description="VOXRAY_TOKEN: one more accepted API token "
                                                "(security.api_token_env names the variable)")


# What every Ray process of the app must see as the driver does.
FORWARDED = ("log_level", "whisper_model", "piper_voice", "silero_vad")


def voxray_env() -> VoxrayEnv:
    return VoxrayEnv()


def forwarded_vars() -> dict[str, str]:
    """The set VOXRAY_* variables that Ray processes inherit from the driver."""
    env = voxray_env()
    return {f"VOXRAY_{name.upper()}": str(getattr(env, name)) for name in FORWARDED
            if name in env.model_fields_set}
