"""Answering-machine detection from the first seconds of the callee's speech. Pure logic.

People answer with a short greeting ("Hello?") and wait; machines talk on
("Hi, you've reached ... please leave a message after the tone"). The first
utterance's length and words decide; the decision is made once per call.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

_MACHINE_PHRASES = re.compile(
    r"leave (a|your) (message|name)|after the (tone|beep)|not available|unavailable|"
    r"you('ve| have) reached|voice ?mail|mailbox|can'?t (come|get) to the phone|record your message",
    re.IGNORECASE,
)


@dataclass(frozen=True)
class AmdVerdict:
    machine: bool
    reason: str


def classify(first_utterance_ms: int, text: str, long_greeting_ms: int = 3500) -> AmdVerdict:
    if _MACHINE_PHRASES.search(text):
        return AmdVerdict(True, "machine phrase")
    if first_utterance_ms >= long_greeting_ms:
        return AmdVerdict(True, "long greeting")
    return AmdVerdict(False, "short greeting")
