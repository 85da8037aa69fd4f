"""Admission control: refuse new calls while the node cannot serve one more in real time.

A call admitted into an overloaded cluster does not fail, it waits: at 50 talking
callers on 2 cores the soak saw transcripts arrive 110 s after the caller stopped.
Calls in progress are better served by turning new ones away at the door (an `error`
event with code 503 on the agent socket, SIP 503 with Retry-After).

The signal is how long the ASR service took to answer (queueing included): what a
caller waits for after speaking. A fixed latency threshold alone reacts too late, as
calls arrive faster than utterances finish (50 callers in 5 s were all admitted
before the first answer came back), so the gate keeps a concurrency limit and adapts
it the way TCP adapts its window (AIMD): every answer within `asr_latency_s` adds
1/limit to it once the limit is what holds calls back; an answer over it sets the
limit to `backoff` times the calls up now, at most once per `cooldown_s`. A hard cap
(`max_calls`) applies on top. No I/O here: the ingress (for `/call`) and each UA node
(for SIP and WebRTC) feed their own and ask it.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import NamedTuple

from pydantic import BaseModel, Field


class AdmissionSettings(BaseModel):
    max_calls: int | None = Field(None, ge=1,
                                  description="concurrent calls per ingress replica / UA node; None: no cap")
    asr_latency_s: float | None = Field(
        8.0, gt=0, description="ASR answer time (utterance sent to transcript back) above which the call "
                               "limit shrinks; None: no adaptive limit")
    initial_limit: float = Field(8.0, ge=1, description="the adaptive limit before any ASR answer came back")
    min_limit: float = Field(1.0, ge=1, description="the adaptive limit never goes below this")
    backoff: float = Field(0.75, gt=0, lt=1, description="on a slow answer: limit = backoff x calls up")
    cooldown_s: float = Field(5.0, ge=0, description="one decrease per congestion episode")
    retry_after_s: int = Field(5, ge=1, description="told to refused callers (Retry-After, error text)")


class Refusal(NamedTuple):
    reason: str  # a metrics tag: max_calls, asr_latency (draining, from the UA node)
    text: str  # for the caller and the logs


class Admission:
    def __init__(self, settings: AdmissionSettings | None = None,
                 count_active: Callable[[], int] | None = None,
                 on_limit: Callable[[float], None] | None = None) -> None:
        self.settings = settings or AdmissionSettings()
        self.count_active = count_active or (lambda: 0)  # the calls this gate admits, up now
        self.on_limit = on_limit  # told each new limit (a Prometheus gauge)
        self.limit = self.settings.initial_limit
        self.refused = 0
        self._last_decrease = float("-inf")
        self.last_asr_s: float | None = None

    def observe_asr(self, seconds: float, now: float | None = None) -> None:
        """One ASR answer time from a call on this node."""
        s = self.settings
        self.last_asr_s = seconds
        if s.asr_latency_s is None:
            return
        now = time.monotonic() if now is None else now
        before = self.limit
        if seconds > s.asr_latency_s:
            if now - self._last_decrease >= s.cooldown_s:
                self._last_decrease = now
                self.limit = max(s.min_limit, min(self.limit, s.backoff * max(self.count_active(), 1)))
        elif self.count_active() >= int(self.limit) - 1:  # grow only where the limit binds
            self.limit += 1.0 / self.limit
        if self.limit != before and self.on_limit is not None:
            self.on_limit(self.limit)

    def refusal(self) -> Refusal | None:
        """Why a new call is refused now (counted), or None to admit it."""
        s = self.settings
        active_calls = self.count_active()
        why = None
        if s.max_calls is not None and active_calls >= s.max_calls:
            why = Refusal("max_calls", f"at capacity ({active_calls} calls, max_calls {s.max_calls})")
        elif s.asr_latency_s is not None and active_calls >= int(self.limit):
            why = Refusal("asr_latency", f"overloaded ({active_calls} calls; speech recognition answered in "
                                         f"{self.last_asr_s or 0:.1f} s, target {s.asr_latency_s:g} s)")
        if why is not None:
            self.refused += 1
        return why
