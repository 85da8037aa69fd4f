"""Commands (agent -> server), tagged by `command`."""

from __future__ import annotations

import json
from typing import Annotated, Literal, Union

from pydantic import Field, TypeAdapter, ValidationError, field_validator

from voxray.protocol.base import WireModel
from voxray.protocol.errors import ProtocolError
from voxray.protocol.options import CallOption, RecorderOption, ReferOption, SynthesisOption

# Text commands larger than this are refused before parsing (a tts text of a few
# pages is far below it; a runaway agent is not).
MAX_COMMAND_BYTES = 256 * 1024


class Invite(WireModel):
    command: Literal["invite"] = "invite"
    option: CallOption = Field(default_factory=CallOption)


class Accept(WireModel):
    command: Literal["accept"] = "accept"
    option: CallOption = Field(default_factory=CallOption)


class Reject(WireModel):
    command: Literal["reject"] = "reject"
    reason: str | None = None
    code: int | None = Field(None, ge=300, le=699)


class Ringing(WireModel):
    command: Literal["ringing"] = "ringing"
    recorder: RecorderOption | None = None
    early_media: bool = False
    ringtone: str | None = None


WAIT_INPUT_MS_ABOVE = 60  # waitInputTimeout above this is milliseconds (active-call's code), else seconds (its docs)


def wait_input_seconds(value: float | None) -> float | None:
    """active-call's docs give `waitInputTimeout` in seconds, its code reads milliseconds:
    both are taken, a value over a minute's worth of seconds being milliseconds."""
    if value is None:
        return None
    return value / 1000 if value > WAIT_INPUT_MS_ABOVE else value


class Tts(WireModel):
    command: Literal["tts"] = "tts"
    text: str = ""
    speaker: str | None = None
    play_id: str | None = None
    auto_hangup: bool = False
    streaming: bool = False
    end_of_stream: bool = False
    wait_input_timeout: float | None = Field(None, ge=0, description="seconds, or milliseconds when over 60")
    option: SynthesisOption | None = None
    base64: bool = False
    # active-call's code takes it on the command, its docs in `option`: both work.
    cache_key: str | None = Field(None, max_length=256)

    @field_validator("wait_input_timeout")
    @classmethod
    def _seconds(cls, v: float | None) -> float | None:
        return wait_input_seconds(v)


class Play(WireModel):
    command: Literal["play"] = "play"
    url: str
    auto_hangup: bool = False
    wait_input_timeout: float | None = Field(None, ge=0, description="seconds, or milliseconds when over 60")
    play_id: str | None = None

    @field_validator("wait_input_timeout")
    @classmethod
    def _seconds(cls, v: float | None) -> float | None:
        return wait_input_seconds(v)


class Interrupt(WireModel):
    command: Literal["interrupt"] = "interrupt"
    graceful: bool = False


class Pause(WireModel):
    command: Literal["pause"] = "pause"


class Resume(WireModel):
    command: Literal["resume"] = "resume"


class Refer(WireModel):
    command: Literal["refer"] = "refer"
    caller: str | None = None
    callee: str
    options: ReferOption | None = None


class Mute(WireModel):
    command: Literal["mute"] = "mute"
    track_id: str | None = None


class Unmute(WireModel):
    command: Literal["unmute"] = "unmute"
    track_id: str | None = None


class Hangup(WireModel):
    command: Literal["hangup"] = "hangup"
    reason: str | None = None
    initiator: str | None = None


class Background(WireModel):
    """ext: background/hold music under the call, ducked while anyone speaks. `url: null` stops it."""

    command: Literal["background"] = "background"
    url: str | None = None
    volume: float = Field(0.3, ge=0.0, le=1.0)
    duck: float = Field(0.25, ge=0.0, le=1.0, description="gain factor while speech plays")
    loop: bool = True
    transition: float | None = Field(None, gt=0.0, le=1.0, description="level change per 20 ms frame "
                                     "when ducking starts or ends (active-call's ambiance transitionSpeed); "
                                     "None: at once")


class History(WireModel):
    command: Literal["history"] = "history"
    speaker: str
    text: str


Command = Annotated[
    Union[
        Invite, Accept, Reject, Ringing, Tts, Play, Interrupt, Pause, Resume,
        Refer, Mute, Unmute, Hangup, History, Background,
    ],
    Field(discriminator="command"),
]

COMMAND_NAMES: frozenset[str] = frozenset(
    m.model_fields["command"].default
    for m in (Invite, Accept, Reject, Ringing, Tts, Play, Interrupt, Pause, Resume,
              Refer, Mute, Unmute, Hangup, History, Background)
)

_adapter: TypeAdapter[Command] = TypeAdapter(Command)


def _describe(err: ValidationError) -> str:
    parts = []
    for e in err.errors(include_url=False):
        loc = ".".join(str(p) for p in e["loc"][1:]) or "command"
        parts.append(f"{loc}: {e['msg']}")
    return "; ".join(parts)


def parse_command(text: str | bytes) -> Command:
    """Parse one text frame into a command, or raise ProtocolError saying why."""
    if len(text) > MAX_COMMAND_BYTES:
        raise ProtocolError(f"command of {len(text)} bytes exceeds {MAX_COMMAND_BYTES}", 413)
    try:
        raw = json.loads(text)
    except (ValueError, UnicodeDecodeError) as exc:
        raise ProtocolError(f"malformed JSON: {exc}") from None
    if not isinstance(raw, dict):
        raise ProtocolError("a command must be a JSON object")
    name = raw.get("command")
    if not isinstance(name, str):
        raise ProtocolError("missing string field 'command'")
    if name not in COMMAND_NAMES:
        raise ProtocolError(f"unknown command '{name}'", 404)
    try:
        return _adapter.validate_python(raw)
    except ValidationError as exc:
        raise ProtocolError(f"invalid '{name}' command: {_describe(exc)}", 422) from None


command_adapter = _adapter
