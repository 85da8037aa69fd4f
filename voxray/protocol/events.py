"""Events (server -> agent), tagged by `event`."""

from __future__ import annotations

import json
import time
from datetime import datetime, timezone
from typing import Annotated, Any, Literal, Union

from pydantic import Field, TypeAdapter

from voxray.protocol.base import WireModel


def now_ms() -> int:
    return int(time.time() * 1000)


class EventBase(WireModel):
    timestamp: int = Field(default_factory=now_ms)
    track_id: str | None = None


class Attendee(WireModel):
    """A call party as active-call writes it: the URI's user part, its host, and the URI."""

    username: str | None = None
    realm: str | None = None
    source: str | None = None

    @classmethod
    def from_uri(cls, uri: str) -> Attendee:
        """'sip:alice@example.com:5060;transport=udp' -> alice / example.com / the URI;
        a bare name (a /call caller such as "alice") is its own username."""
        rest = uri.split(":", 1)[1] if uri[:4].lower() in ("sip:", "tel:") or uri[:5].lower() == "sips:" else uri
        rest = rest.split(";", 1)[0].split("?", 1)[0]
        user, at, host = rest.rpartition("@")
        if not at:
            user, host = (rest, "") if uri[:4].lower() != "sip:" else ("", rest)
        return cls(username=user, realm=host.split(":", 1)[0], source=uri)


class Incoming(EventBase):
    event: Literal["incoming"] = "incoming"
    caller: str | None = None
    callee: str | None = None
    sdp: str | None = None


class Answer(EventBase):
    event: Literal["answer"] = "answer"
    sdp: str | None = None


class RejectEvent(EventBase):
    event: Literal["reject"] = "reject"
    reason: str | None = None
    code: int | None = None


class RingingEvent(EventBase):
    event: Literal["ringing"] = "ringing"
    early_media: bool = False


class HangupEvent(EventBase):
    event: Literal["hangup"] = "hangup"
    reason: str | None = None
    initiator: str | None = None
    start_time: str | None = None
    hangup_time: str | None = None
    answer_time: str | None = None
    ringing_time: str | None = None
    from_: Attendee | None = Field(None, alias="from")
    to: Attendee | None = None
    extra: dict[str, Any] | None = None


class Speaking(EventBase):
    event: Literal["speaking"] = "speaking"
    start_time: int


class Silence(EventBase):
    event: Literal["silence"] = "silence"
    start_time: int
    duration: int


class Eou(EventBase):
    event: Literal["eou"] = "eou"
    completed: bool = True
    # ext: how the end was decided: "complete", "incomplete" or "unknown" (the pause's
    # transcript read that way), "silence" (a fixed wait), "maxLength" (the length cap).
    reason: str | None = None
    silence_ms: int | None = None  # the silence that ended the turn


class AsrDelta(EventBase):
    event: Literal["asrDelta"] = "asrDelta"
    index: int
    start_time: int
    end_time: int
    text: str


class AsrFinal(EventBase):
    event: Literal["asrFinal"] = "asrFinal"
    index: int
    start_time: int
    end_time: int
    text: str


class TrackStart(EventBase):
    event: Literal["trackStart"] = "trackStart"
    play_id: str | None = None


class TrackEnd(EventBase):
    event: Literal["trackEnd"] = "trackEnd"
    duration: int = 0
    ssrc: int = 0
    play_id: str | None = None


class Interruption(EventBase):
    event: Literal["interruption"] = "interruption"
    play_id: str | None = None
    subtitle: str | None = None
    position: int | None = None
    total_duration: int | None = None
    current: int | None = None


class Dtmf(EventBase):
    event: Literal["dtmf"] = "dtmf"
    digit: str


class Metrics(EventBase):
    event: Literal["metrics"] = "metrics"
    key: str
    duration: int
    data: dict[str, Any] | None = None


class Error(EventBase):
    event: Literal["error"] = "error"
    sender: str
    error: str
    code: int | None = None


class AddHistory(EventBase):
    event: Literal["addHistory"] = "addHistory"
    sender: str | None = None
    speaker: str
    text: str


class AnswerMachineDetection(EventBase):
    event: Literal["answerMachineDetection"] = "answerMachineDetection"
    start_time: int
    end_time: int
    text: str


class Binary(EventBase):
    event: Literal["binary"] = "binary"
    data: list[int]


class Inactivity(EventBase):
    """No media from the caller for `option.inactivityTimeout` seconds; the hangup follows."""

    event: Literal["inactivity"] = "inactivity"


class Ping(EventBase):
    """Keep-alive every `?ping=` seconds (active-call's default 20; 0: none); `payload` is the
    server's time (RFC 3339). An agent that never hears one knows the socket is dead."""

    event: Literal["ping"] = "ping"
    payload: str | None = None


class Other(EventBase):
    event: Literal["other"] = "other"
    sender: str | None = None
    extra: dict[str, Any] | None = None


Event = Annotated[
    Union[
        Incoming, Answer, RejectEvent, RingingEvent, HangupEvent, Speaking, Silence, Eou,
        AsrDelta, AsrFinal, TrackStart, TrackEnd, Interruption, Dtmf, Metrics, Error,
        AddHistory, AnswerMachineDetection, Binary, Inactivity, Ping, Other,
    ],
    Field(discriminator="event"),
]

event_adapter: TypeAdapter[Event] = TypeAdapter(Event)


def for_strict_clients(event: EventBase, track_id: str = "") -> EventBase:
    """The event with every field active-call's own types require filled in.

    active-call's agents parse events into strict types (its `SessionEvent`): a missing
    `trackId`, `answer.sdp`, `hangup.startTime`, `interruption.current`, ... fails the whole
    event, and `other.extra` must map strings to strings. Empty values where voxray has
    none (an `answer` on /call carries no SDP); `trackId` is the call's id unless set."""
    fill: dict[str, Any] = {}
    if event.track_id is None and not isinstance(event, (Metrics, AddHistory, Ping)):
        fill["track_id"] = track_id
    if isinstance(event, (Answer, Incoming)) and event.sdp is None:
        fill["sdp"] = ""
    if isinstance(event, Incoming):
        fill.update({k: "" for k in ("caller", "callee") if getattr(event, k) is None})
    elif isinstance(event, RejectEvent) and event.reason is None:
        fill["reason"] = ""
    elif isinstance(event, HangupEvent):
        when = datetime.fromtimestamp(event.timestamp / 1000, timezone.utc).isoformat(timespec="milliseconds")
        fill.update({k: when for k in ("start_time", "hangup_time") if getattr(event, k) is None})
        for side in ("from_", "to"):
            party = getattr(event, side)
            if party is not None:
                fill[side] = party.model_copy(update={k: "" for k in ("username", "realm", "source")
                                                      if getattr(party, k) is None})
    elif isinstance(event, Interruption):
        fill.update({k: 0 for k in ("total_duration", "current") if getattr(event, k) is None})
    elif isinstance(event, Metrics) and event.data is None:
        fill["data"] = {}
    elif isinstance(event, Other):
        if event.sender is None:
            fill["sender"] = ""
        if event.extra is not None:
            fill["extra"] = {k: v if isinstance(v, str) else json.dumps(v) for k, v in event.extra.items()}
    return event.model_copy(update=fill) if fill else event


def dump_event(event: EventBase, track_id: str = "") -> str:
    """Serialize an event for the wire: camelCase keys, absent optionals omitted, and
    what strict active-call clients require present (`for_strict_clients`)."""
    return for_strict_clients(event, track_id).model_dump_json(by_alias=True, exclude_none=True)


def parse_event(text: str | bytes) -> Event:
    """Parse an event (agents and tests use this to read the server's output)."""
    return event_adapter.validate_json(text)
