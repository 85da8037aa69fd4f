"""Playbooks: Markdown files whose YAML front matter configures the call and whose body is the prompt.

The format follows active-call's playbooks (config/playbook/*.md there): `asr`, `tts`, `vad`,
`eou`, `recorder`, `denoise`, `extra` go into the call's `invite` option as they are; `llm`
(provider/model/baseUrl/apiKey), `greeting`, `interruption`, `dtmf`, `dtmfCollectors`,
`posthook` (its `summary` type) and `followup` drive the agent. `${VAR}` in the header is
expanded from the environment, and `OPENAI_API_KEY`/`OPENAI_BASE_URL`/`OPENAI_MODEL` fill
what the header leaves out, as active-call does. Inline `<dtmf digit=".." action=".."/>`
tags in the body become DTMF actions. Scenes (`# Scene:` and `<goto/>`) are not
interpreted: the whole body is the system prompt.

voxray additions (active-call ignores unknown keys, so these files stay portable):
`goodbye` (what the hangup tool says when the model gave no words), `transfer` (targets
the transfer tool may use), `tools` (which tools to offer).
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import AliasChoices, BaseModel, ConfigDict, Field
from pydantic.alias_generators import to_camel

DEFAULT_BASE_URL = "https://api.openai.com/v1"
DEFAULT_MODEL = "gpt-4o-mini"


class _Model(BaseModel):
    # camelCase like active-call's serde structs; snake_case accepted too; unknown keys ignored
    # so that playbooks written for active-call (realtime, ambiance, sip, ...) still load.
    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="ignore")


class LlmConfig(_Model):
    provider: str = "openai"
    model: str | None = None
    base_url: str | None = None
    api_key: str | None = None
    prompt: str | None = None  # active-call fills this from the body; a header value is prepended
    greeting: str | None = None
    language: str | None = None
    temperature: float | None = None
    max_tokens: int | None = None
    tool_instructions: str | None = None  # replaces the built-in voice/tool guidance when set


class InterruptionConfig(_Model):
    strategy: Literal["both", "vad", "asr", "none"] = "both"
    min_speech_ms: int | None = None
    ignore_first_ms: int | None = None
    filler_word_filter: bool | None = None
    volume_fade_ms: int | None = None


class DtmfAction(_Model):
    action: Literal["goto", "transfer", "hangup"]
    scene: str | None = None
    target: str | None = None


class DtmfValidation(_Model):
    pattern: str
    error_message: str | None = None


class DtmfCollectorConfig(_Model):
    description: str | None = None
    digits: int | None = None
    min_digits: int | None = None
    max_digits: int | None = None
    finish_key: str | None = None
    timeout: float | None = None  # seconds
    inter_digit_timeout: float | None = None  # seconds
    validation: DtmfValidation | None = None
    retry_times: int | None = None
    interruptible: bool | None = None


class PostHookConfig(_Model):
    url: str | None = None
    summary: str | None = None  # short | detailed | intent | json | any custom prompt
    method: str | None = None
    headers: dict[str, str] | None = None
    include_history: bool | None = None


class FollowUpConfig(_Model):
    timeout: int = 10_000  # ms of caller silence after the agent spoke
    max: int = Field(2, validation_alias=AliasChoices("max", "maxCount", "max_count"))


class TransferConfig(_Model):
    """voxray ext: where the transfer tool may send the call."""

    target: str | None = None  # the default when the model names none
    targets: dict[str, str] = Field(default_factory=dict)  # names the model may pick -> SIP URIs
    allow_any: bool = False  # accept any URI the model writes (off: a caller could talk it into one)
    message: str | None = None  # said before the refer when the model said nothing


class PlaybookConfig(_Model):
    asr: dict[str, Any] | None = None
    tts: dict[str, Any] | None = None
    vad: dict[str, Any] | None = None
    eou: dict[str, Any] | None = None
    recorder: dict[str, Any] | None = None
    denoise: bool | None = None
    extra: dict[str, Any] | None = None
    llm: LlmConfig = Field(default_factory=LlmConfig)
    greeting: str | None = None
    interruption: InterruptionConfig | None = None
    dtmf: dict[str, DtmfAction] = Field(default_factory=dict)
    dtmf_collectors: dict[str, DtmfCollectorConfig] = Field(default_factory=dict)
    posthook: PostHookConfig | None = None
    # active-call's struct reads `followUp`; its own example writes `followup`: take both.
    follow_up: FollowUpConfig | None = Field(None, validation_alias=AliasChoices("followUp", "followup", "follow_up"))
    goodbye: str = "Goodbye!"
    transfer: TransferConfig = Field(default_factory=TransferConfig)
    tools: list[str] | None = None  # None: hangup and collect_dtmf, plus transfer when it has a target


class Playbook(_Model):
    config: PlaybookConfig
    prompt: str  # the system prompt (the body, tags removed)
    name: str = "playbook"

    @property
    def greeting(self) -> str | None:
        return self.config.greeting or self.config.llm.greeting

    def invite_option(self, caller: str | None = None, callee: str | None = None) -> dict[str, Any]:
        """The `invite`/`accept` option: the playbook's call settings in the wire's names."""
        c = self.config
        opt: dict[str, Any] = {"codec": "pcm"}
        if caller:
            opt["caller"] = caller
        if callee:
            opt["callee"] = callee
        for key in ("asr", "tts", "vad", "eou", "recorder", "extra"):
            value = getattr(c, key)
            if value:
                opt[key] = value
        if c.denoise is not None:
            opt["denoise"] = c.denoise
        if c.interruption is not None:  # active-call's interruption -> voxray's bargeIn (ext)
            barge: dict[str, Any] = {"enabled": c.interruption.strategy != "none"}
            if c.interruption.min_speech_ms is not None:
                barge["minSpeechMs"] = c.interruption.min_speech_ms
            if c.interruption.ignore_first_ms is not None:
                barge["ignoreMs"] = c.interruption.ignore_first_ms
            opt["bargeIn"] = barge
        return opt


_FRONT = re.compile(r"\A\ufeff?---[ \t]*\r?\n(.*?)\r?\n---[ \t]*(?:\r?\n|\Z)(.*)\Z", re.S)
_ENV = re.compile(r"\$\{([^}]+)\}")
_DTMF_TAG = re.compile(r'<dtmf\s+digit="([^"]+)"\s+action="([^"]+)"(?:\s+scene="([^"]+)")?'
                       r'(?:\s+target="([^"]+)")?\s*/>')
_VAR = re.compile(r"\{\{\s*([A-Za-z_][A-Za-z0-9_]*)\s*\}\}")


class PlaybookError(ValueError):
    pass


def expand_env(text: str, env: dict[str, str] | None = None) -> str:
    """`${VAR}` from the environment; unknown ones stay as written (as active-call does)."""
    env = os.environ if env is None else env
    return _ENV.sub(lambda m: env.get(m.group(1), m.group(0)), text)


def render_vars(text: str, variables: dict[str, Any]) -> str:
    """`{{ name }}` placeholders (active-call renders minijinja); unknown names stay as written."""
    return _VAR.sub(lambda m: str(variables[m.group(1)]) if m.group(1) in variables else m.group(0), text)


def parse_playbook(text: str, *, name: str = "playbook", env: dict[str, str] | None = None) -> Playbook:
    env = os.environ if env is None else env
    m = _FRONT.match(text)
    if not m:
        raise PlaybookError(f"{name}: a playbook starts with a '---' YAML header closed by '---'")
    try:
        header = yaml.safe_load(expand_env(m.group(1), env)) or {}
    except yaml.YAMLError as exc:
        raise PlaybookError(f"{name}: bad YAML header: {exc}") from None
    if not isinstance(header, dict):
        raise PlaybookError(f"{name}: the YAML header must be a mapping")
    config = PlaybookConfig.model_validate(header)
    body = m.group(2)
    for digit, action, scene, target in _DTMF_TAG.findall(body):
        if action in ("goto", "transfer", "hangup"):
            config.dtmf.setdefault(digit, DtmfAction(action=action, scene=scene or None, target=target or None))
    body = _DTMF_TAG.sub("", body).strip()
    llm = config.llm
    for key in ("api_key", "base_url", "model"):  # `${VAR}` of an unset variable counts as left out
        if getattr(llm, key) and _ENV.fullmatch(getattr(llm, key).strip()):
            setattr(llm, key, None)
    llm.api_key = llm.api_key or env.get("OPENAI_API_KEY")
    llm.base_url = llm.base_url or env.get("OPENAI_BASE_URL") or DEFAULT_BASE_URL
    llm.model = llm.model or env.get("OPENAI_MODEL") or DEFAULT_MODEL
    prompt = "\n\n".join(p for p in (llm.prompt, body) if p and p.strip())
    return Playbook(config=config, prompt=prompt, name=name)


def load_playbook(path: str | Path, env: dict[str, str] | None = None) -> Playbook:
    p = Path(path)
    return parse_playbook(p.read_text(encoding="utf-8"), name=p.stem, env=env)
