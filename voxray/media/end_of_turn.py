"""When has the caller finished their turn? Pure logic on the transcript of a pause.

A fixed silence wait is either too slow for "I want to cancel my subscription." or
too quick for "I would like to ... book a table". Once the caller pauses, the
speculative transcript of what they said so far is read: a sentence that ends (a full
stop, a question, three words or more) ends the turn after the shortest wait; one that
stops mid-thought (a trailing "and", "to", a filler, a comma) waits the longest;
anything else (a word or two: "Hello?" may go on) waits the usual time. All three are
per-call bounds (`option.eou`).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal

Verdict = Literal["complete", "incomplete", "unknown"]

# Words a finished statement rarely ends on: conjunctions, prepositions, articles,
# possessives, subject pronouns and fillers. Not auxiliaries ("Yes, I do."),
# demonstratives ("I like that.") or particles ("Turn it on.").
_CONTINUATIONS = frozenset("""
and or but so because if then than which whose while whether although though unless until
as like to of for with without from into onto about by between through during against the a an
my your our their his her its some any every i we they he she it's i'm we're you're they're
um uh er erm hmm mm uhm ah plus just very really
""".split())
_TRAILING_OFF = ("...", "…", ",", "-", "—", ";", ":")
# Whisper writes "Hello?" for "Hello," before the caller goes on ("..., I need help"):
# one or two words are too little to call a sentence finished.
MIN_COMPLETE_WORDS = 3
_WORD = re.compile(r"[a-z']+")


@dataclass(frozen=True)
class EouBounds:
    """Silence (ms) that ends a turn for each verdict."""

    complete_ms: int = 200
    unknown_ms: int = 480
    incomplete_ms: int = 1200

    def __post_init__(self) -> None:
        if not 0 <= self.complete_ms <= self.unknown_ms <= self.incomplete_ms:
            raise ValueError("EOU bounds must satisfy complete <= unknown <= incomplete")


@dataclass(frozen=True)
class EouDecision:
    verdict: Verdict
    wait_ms: int  # silence after the last speech that ends this turn


def classify(text: str) -> Verdict:
    """How the transcript of a pause reads: a finished sentence, a thought cut short, or neither."""
    text = text.strip()
    if not text:
        return "unknown"
    if text.endswith(_TRAILING_OFF):
        return "incomplete"
    words = _WORD.findall(text.lower())
    if text.endswith("?") and len(words) >= MIN_COMPLETE_WORDS:  # "Who am I speaking with?" is finished
        return "complete"
    if words and words[-1] in _CONTINUATIONS:
        return "incomplete"
    if text.endswith((".", "?", "!")) and len(words) >= MIN_COMPLETE_WORDS:
        return "complete"
    return "unknown"


def decide(text: str, bounds: EouBounds) -> EouDecision:
    verdict = classify(text)
    wait = {"complete": bounds.complete_ms, "unknown": bounds.unknown_ms,
            "incomplete": bounds.incomplete_ms}[verdict]
    return EouDecision(verdict, wait)
