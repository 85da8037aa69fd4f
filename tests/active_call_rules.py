"""active-call's field rules for the events it sends, as a strict client reads them.

active-call's agents deserialize events into its `SessionEvent` type (src/event.rs,
serde, camelCase): a field that is not an Option must be present with its type, or the
whole event fails to parse. This table states those rules for each event voxray sends;
`violations()` checks one event against them. Fields voxray adds (**ext**) are allowed:
serde ignores unknown keys.
"""

from __future__ import annotations

from typing import Any

STR, INT, BOOL, OBJ, ANY, LIST = "string", "integer", "boolean", "object", "any", "array"

# event -> {field: (type, required)}
RULES: dict[str, dict[str, tuple[str, bool]]] = {
    "incoming": {"trackId": (STR, True), "timestamp": (INT, True), "caller": (STR, True), "callee": (STR, True),
                 "sdp": (STR, True)},
    "answer": {"trackId": (STR, True), "timestamp": (INT, True), "sdp": (STR, True), "refer": (BOOL, False)},
    "reject": {"trackId": (STR, True), "timestamp": (INT, True), "reason": (STR, True), "code": (INT, False)},
    "ringing": {"trackId": (STR, True), "timestamp": (INT, True), "earlyMedia": (BOOL, True)},
    "hangup": {"trackId": (STR, True), "timestamp": (INT, True), "reason": (STR, False), "initiator": (STR, False),
               "startTime": (STR, True), "hangupTime": (STR, True), "answerTime": (STR, False),
               "ringingTime": (STR, False), "from": ("attendee", False), "to": ("attendee", False),
               "extra": (OBJ, False)},
    "answerMachineDetection": {"trackId": (STR, True), "timestamp": (INT, True), "startTime": (INT, True),
                               "endTime": (INT, True), "text": (STR, True)},
    "speaking": {"trackId": (STR, True), "timestamp": (INT, True), "startTime": (INT, True)},
    "silence": {"trackId": (STR, True), "timestamp": (INT, True), "startTime": (INT, True), "duration": (INT, True)},
    "eou": {"trackId": (STR, True), "timestamp": (INT, True), "completed": (BOOL, True)},
    "inactivity": {"trackId": (STR, True), "timestamp": (INT, True)},
    "dtmf": {"trackId": (STR, True), "timestamp": (INT, True), "digit": (STR, True)},
    "trackStart": {"trackId": (STR, True), "timestamp": (INT, True), "playId": (STR, False)},
    "trackEnd": {"trackId": (STR, True), "timestamp": (INT, True), "duration": (INT, True), "ssrc": (INT, True),
                 "playId": (STR, False)},
    "interruption": {"trackId": (STR, True), "timestamp": (INT, True), "playId": (STR, False),
                     "subtitle": (STR, False), "position": (INT, False), "totalDuration": (INT, True),
                     "current": (INT, True)},
    "asrFinal": {"trackId": (STR, True), "timestamp": (INT, True), "index": (INT, True), "startTime": (INT, False),
                 "endTime": (INT, False), "text": (STR, True)},
    "asrDelta": {"trackId": (STR, True), "timestamp": (INT, True), "index": (INT, True), "startTime": (INT, False),
                 "endTime": (INT, False), "text": (STR, True)},
    "metrics": {"timestamp": (INT, True), "key": (STR, True), "duration": (INT, True), "data": (ANY, True)},
    "error": {"trackId": (STR, True), "timestamp": (INT, True), "sender": (STR, True), "error": (STR, True),
              "code": (INT, False)},
    "addHistory": {"sender": (STR, False), "timestamp": (INT, True), "speaker": (STR, True), "text": (STR, True)},
    "other": {"trackId": (STR, True), "timestamp": (INT, True), "sender": (STR, True), "extra": ("strmap", False)},
    "binary": {"trackId": (STR, True), "timestamp": (INT, True), "data": (LIST, True)},
    "ping": {"timestamp": (INT, True), "payload": (STR, False)},
}
ATTENDEE = ("username", "realm", "source")  # all required strings


def _is(value: Any, kind: str) -> bool:
    if kind == ANY:
        return True
    if kind == STR:
        return isinstance(value, str)
    if kind == INT:  # unsigned in active-call
        return isinstance(value, int) and not isinstance(value, bool) and value >= 0
    if kind == BOOL:
        return isinstance(value, bool)
    if kind == OBJ:
        return isinstance(value, dict)
    if kind == LIST:
        return isinstance(value, list)
    if kind == "strmap":
        return isinstance(value, dict) and all(isinstance(v, str) for v in value.values())
    if kind == "attendee":
        return isinstance(value, dict) and all(isinstance(value.get(k), str) for k in ATTENDEE)
    raise ValueError(kind)


def violations(event: dict) -> list[str]:
    """What a strict active-call client would refuse in this event (empty: it parses)."""
    name = event.get("event")
    rules = RULES.get(name)
    if rules is None:
        return [f"unknown event {name!r}"]
    out = []
    for field, (kind, required) in rules.items():
        if field not in event or event[field] is None:
            if required and kind != ANY:
                out.append(f"{name}.{field} missing")
            elif required and field not in event:
                out.append(f"{name}.{field} missing")
            continue
        if not _is(event[field], kind):
            out.append(f"{name}.{field} is {event[field]!r}, not {kind}")
    return out
