"""Option objects carried by commands (CallOption and its parts)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field

from voxray.protocol.base import WireModel

CodecName = Literal["pcm", "pcmu", "pcma", "g722", "opus"]


class RecorderOption(WireModel):
    recorder_file: str | None = Field(None, description="a file inside the server's recordings folder "
                                      "(media.recordings_dir); {id} is the call id; .wav is added")
    samplerate: int = Field(16000, ge=8000, le=48000)
    ptime: int = 200
    format: str | None = Field(None, description="wav (16-bit PCM, the default), pcm (the same), pcmu or pcma "
                               "(G.711 in the WAV); g722: refused (501)")
    # ext: caller on the left, the agent on the right (active-call's two tracks); false: one mono mix.
    stereo: bool = True


class TranscriptionOption(WireModel):
    # ext: provider "none" transcribes nothing on this call (VAD events only: speaking,
    # silence; e.g. recording, answering-machine-free IVR legs, or an agent with its own ASR).
    provider: str | None = None
    language: str | None = None
    app_id: str | None = None
    secret_id: str | None = None
    secret_key: str | None = None
    model_type: str | None = None
    buffer_size: int | None = None
    samplerate: int | None = None
    endpoint: str | None = None
    extra: dict[str, Any] | None = None
    start_when_answer: bool | None = None
    # ext: re-decode the growing utterance this often for asrDelta partials (0 = off).
    partial_interval_ms: int = Field(1000, ge=0, le=10_000)


class VADOption(WireModel):
    type: str = "silero"
    samplerate: int = 16000
    # active-call's meanings (its src/media/vad): when an agent sets these, they act so.
    speech_padding: int = Field(250, ge=0, le=5000, description="ms of speech before it counts (`speaking`); "
                                "applies when set, else minSpeechMs")
    silence_padding: int = Field(100, ge=0, le=5000, description="ms of silence that ends an utterance; applies "
                                 "when set, else the server's end-of-speech wait")
    ratio: float = Field(0.5, ge=0.0, le=1.0)
    voice_threshold: float = Field(0.5, ge=0.0, le=1.0)
    max_buffer_duration_secs: int = Field(50, ge=1, le=600)
    silence_timeout: int | None = Field(None, ge=0, description="no-input timeout: `silence` after this many "
                                        "ms without the caller speaking, and again every as long")
    endpoint: str | None = None
    secret_key: str | None = None
    secret_id: str | None = None
    # ext: minimum speech before `speaking` is reported (guards against clicks).
    min_speech_ms: int = Field(96, ge=32, le=2000)


class SynthesisOption(WireModel):
    provider: str | None = None
    samplerate: int | None = None
    speed: float = Field(1.0, gt=0.1, le=4.0)
    volume: int = Field(5, ge=0, le=10, description="loudness 0-10, 5 as synthesized (gain volume/5)")
    speaker: str | None = None
    codec: str | None = None
    subtitle: bool | None = None
    emotion: str | None = None
    app_id: str | None = None
    secret_id: str | None = None
    secret_key: str | None = None
    endpoint: str | None = None
    extra: dict[str, Any] | None = None
    max_concurrent_tasks: int | None = None
    cache_key: str | None = Field(None, max_length=256, description="keep this text's audio under this key; "
                                  "the same key (same voice, speed, volume) replays it without synthesis")


class EouOption(WireModel):
    # None or "transcript": a pause's transcript sets how long it may last (end_of_turn.py);
    # "silence": every turn ends after the same silence.
    type: str | None = None
    endpoint: str | None = None
    secret_key: str | None = None
    secret_id: str | None = None
    timeout: int | None = Field(None, ge=0, le=10_000, description="ms: the longest pause before a turn ends")
    # ext: silence that ends a turn whose transcript reads as a finished sentence.
    complete_ms: int | None = Field(None, ge=0, le=10_000)


class MediaPassOption(WireModel):
    url: str
    input_sample_rate: int = 16000
    output_sample_rate: int = 16000
    packet_size: int = 2560


class SipOption(WireModel):
    username: str | None = None
    password: str | None = None
    realm: str | None = None
    headers: dict[str, str] | None = None


class ReferOption(WireModel):
    denoise: bool | None = None
    timeout: int | None = None
    moh: str | None = None
    asr: TranscriptionOption | None = None
    auto_hangup: bool | None = None
    sip: SipOption | None = None


class BargeInOption(WireModel):
    """ext: when caller speech cuts the agent's audio short."""

    enabled: bool = True
    min_speech_ms: int = Field(160, ge=32, le=5000, description="sustained speech needed to barge in")
    ignore_ms: int = Field(400, ge=0, le=10_000, description="no barge-in this soon after playback starts")
    echo_guard: float = Field(0.1, ge=0.0, le=0.5, description="extra VAD margin while we speak (echo)")


class AmbianceOption(WireModel):
    """active-call's ambiance: a looped sound under the whole call, quieter while the agent
    speaks (voxray's `background`, started with the call)."""

    path: str | None = Field(None, description="a file in media.play_dirs or an allowed URL")
    duck_level: float = Field(0.1, ge=0.0, le=1.0)
    normal_level: float = Field(0.3, ge=0.0, le=1.0)
    transition_speed: float = Field(0.01, gt=0.0, le=1.0, description="level change per 20 ms frame")
    enabled: bool = True


class CallOption(WireModel):
    caller: str | None = None
    callee: str | None = None
    offer: str | None = None
    codec: CodecName = "pcm"
    denoise: bool = False
    recorder: RecorderOption | None = None
    asr: TranscriptionOption | None = None
    vad: VADOption | None = None
    tts: SynthesisOption | None = None
    eou: EouOption | None = None
    media_pass: MediaPassOption | None = None
    subscribe: bool | None = None
    handshake_timeout: float | None = Field(None, ge=0)
    inactivity_timeout: float | None = Field(None, ge=0)
    enable_ipv6: bool | None = None
    sip: SipOption | None = None
    extra: dict[str, Any] | None = None
    ambiance: AmbianceOption | None = None
    # ext
    barge_in: BargeInOption = Field(default_factory=BargeInOption)
    echo_cancel: bool | None = Field(None, description="cancel the agent's own voice in the caller's audio "
                                     "(default: the server's media.echo_cancel)")
    answer_machine_detection: bool = False
