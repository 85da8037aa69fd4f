"""Admission control: refuse new calls while the node cannot serve one more in real time.

A call admitted into an overloaded cluster does not fail, it waits: at 50 talking
callers on 2 cores the soak saw transcripts arrive 110 s after the caller stopped.
Calls in progress are better served by turning new ones away at the door (an `error`
event with code 503 on the agent socket, SIP 503 with Retry-After), so two signals
gate new calls: a hard cap per process (`max_calls`), and the median time the ASR
service took to answer over the last `window_s` seconds (queueing included), which
is what a caller waits for after speaking. No I/O here: the ingress (for `/call`) and
each UA node (for SIP and WebRTC) feed their own and ask it.
"""

from __future__ import annotations

import statistics
import time
from collections import deque

from pydantic import BaseModel, Field


class AdmissionSettings(BaseModel):
    max_calls: int | None = Field(None, ge=1, description="concurrent calls per ingress replica / UA node; None: no cap")
    asr_latency_s: float | None = Field(
        8.0, gt=0, description="refuse new calls while the median ASR answer time over window_s is above this; "
                               "None: off")
    window_s: float = Field(30.0, gt=0, description="how far back ASR answer times count")
    min_samples: int = Field(3, ge=1, description="ASR answers in the window before latency can refuse")
    retry_after_s: int = Field(5, ge=1, description="told to refused callers (Retry-After, error text)")


class Admission:
    def __init__(self, settings: AdmissionSettings | None = None) -> None:
        self.settings = settings or AdmissionSettings()
        self._asr: deque[tuple[float, float]] = deque()  # (when, seconds)
        self.refused = 0

    def observe_asr(self, seconds: float, now: float | None = None) -> None:
        now = time.monotonic() if now is None else now
        self._asr.append((now, seconds))
        self._expire(now)

    def _expire(self, now: float) -> None:
        horizon = now - self.settings.window_s
        while self._asr and self._asr[0][0] < horizon:
            self._asr.popleft()

    def asr_p50(self, now: float | None = None) -> float | None:
        self._expire(time.monotonic() if now is None else now)
        return statistics.median(s for _, s in self._asr) if self._asr else None

    def refusal(self, active_calls: int, now: float | None = None) -> str | None:
        """Why a new call is refused now (counted), or None to admit it."""
        s = self.settings
        why = None
        if s.max_calls is not None and active_calls >= s.max_calls:
            why = f"at capacity ({active_calls} calls, max_calls {s.max_calls})"
        elif s.asr_latency_s is not None:
            self._expire(time.monotonic() if now is None else now)
            if len(self._asr) >= s.min_samples:
                p50 = statistics.median(x for _, x in self._asr)
                if p50 > s.asr_latency_s:
                    why = f"overloaded (speech recognition answers in {p50:.1f} s, limit {s.asr_latency_s:g} s)"
        if why is not None:
            self.refused += 1
        return why

    def reason_tag(self, why: str) -> str:
        return "max_calls" if why.startswith("at capacity") else "asr_latency"
