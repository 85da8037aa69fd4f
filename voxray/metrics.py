"""Prometheus metrics through Ray's metrics export (each node's agent serves /metrics).

Created lazily and only inside a Ray worker: the media core also runs without
Ray (tests, the bench's in-process runs), where these calls do nothing.
"""

from __future__ import annotations

from functools import lru_cache

_MS_BUCKETS = [20, 50, 100, 200, 400, 800, 1600, 3200, 6400]


@lru_cache(maxsize=1)
def _registry():
    import ray

    if not ray.is_initialized():
        return None
    from ray.util.metrics import Counter, Gauge, Histogram

    return {
        "calls_active": Gauge("voxray_calls_active", "calls up on this ingress replica", tag_keys=("path",)),
        "calls_total": Counter("voxray_calls_total", "calls ended", tag_keys=("path", "reason")),
        "frames_total": Counter("voxray_audio_frames_total", "audio frames over agent sockets",
                                tag_keys=("direction",)),
        "errors_total": Counter("voxray_errors_total", "error events sent to agents", tag_keys=("sender",)),
        "admission_limit": Gauge("voxray_admission_limit", "adaptive concurrent-call limit",
                                 tag_keys=("where",)),
        "calls_refused_total": Counter("voxray_calls_refused_total", "new calls turned away by admission control",
                                       tag_keys=("path", "reason")),
        "auth_rejected_total": Counter("voxray_auth_rejected_total", "requests refused for a bad token"),
        "sip_rejected_total": Counter("voxray_sip_rejected_total", "INVITEs refused before routing",
                                      tag_keys=("reason",)),
        "rtp_foreign_dropped_total": Counter("voxray_rtp_foreign_dropped_total",
                                             "SIP RTP/RTCP packets dropped for coming from an unexpected source"),
        "asr_ms": Histogram("voxray_asr_latency_ms", "utterance end to transcript", boundaries=_MS_BUCKETS,
                            tag_keys=("provider",)),
        "tts_ms": Histogram("voxray_tts_first_audio_ms", "tts command to first audio", boundaries=_MS_BUCKETS,
                            tag_keys=("provider",)),
        "vad_batch": Histogram("voxray_vad_batch_streams", "streams per VAD model call",
                               boundaries=[1, 2, 4, 8, 16, 32, 64, 128]),
        "asr_batch": Histogram("voxray_asr_batch_utterances", "utterances per Whisper model call",
                               boundaries=[1, 2, 4, 8]),
        "asr_batch_ms": Histogram("voxray_asr_batch_compute_ms", "Whisper time per batch", boundaries=_MS_BUCKETS),
        "asr_partials_skipped": Counter("voxray_asr_partials_skipped_total",
                                        "partial transcripts dropped undecoded (superseded or too late)"),
        "ua_workers_up": Gauge("voxray_ua_workers_up", "UA worker processes answering their node's pings",
                               tag_keys=("role",)),
        "ua_worker_restarts": Counter("voxray_ua_worker_restarts_total", "UA worker processes that came back new",
                                      tag_keys=("worker",)),
        "loop_lag_ms": Histogram("voxray_event_loop_lag_ms", "how late a 200 ms timer fired on a process's "
                                 "event loop (stalls delay every call on it)",
                                 boundaries=[1, 5, 20, 50, 100, 200, 500, 1000], tag_keys=("role",)),
        "vad_ms": Histogram("voxray_vad_compute_ms", "VAD model time per batch", boundaries=[1, 2, 5, 10, 20, 50]),
    }


def _get(name: str):
    try:
        reg = _registry()
    except Exception:  # metrics must never break a call
        return None
    return reg[name] if reg else None


def inc(name: str, value: float = 1.0, **tags: str) -> None:
    m = _get(name)
    if m is not None:
        m.inc(value, tags=tags or None)


def set_gauge(name: str, value: float, **tags: str) -> None:
    m = _get(name)
    if m is not None:
        m.set(value, tags=tags or None)


def observe(name: str, value: float, **tags: str) -> None:
    m = _get(name)
    if m is not None:
        m.observe(value, tags=tags or None)
