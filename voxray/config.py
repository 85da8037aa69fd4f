"""voxray's configuration: a JSON/TOML file, with the VOXRAY_* overrides of voxray.env."""

from __future__ import annotations

import json
import os
import tomllib
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, Field

from voxray.admission import AdmissionSettings
from voxray.env import voxray_env
from voxray.providers.catalog import ProvidersConfig
from voxray.providers.device import ComputeType, Device
from voxray.ua_node.config import PoolSettings
from voxray.ua_node.sip.config import SipSettings


class ModelsConfig(BaseModel):
    """Local model files; providers of kind whisper/piper use these unless they name their own."""

    whisper_model: str | None = Field(None, description="CTranslate2 Whisper folder (any checkpoint converted "
                                      "with ct2-transformers-converter); default tiny.en")
    # Intra-op threads per CTranslate2 worker. One each: on 2 cores, 2 workers x 1 thread decode
    # a 3 s utterance in 140 ms for 139 ms of CPU; x 2 threads, 148 ms for 199 ms (threads wait
    # on each other); bench/threads.py. Raise it for big models on many cores.
    whisper_threads: int = Field(1, ge=1, le=64)
    # Model calls a replica runs at once (CTranslate2 workers): turn ends that arrive while one
    # runs start their own at once instead of waiting for it (bench: 8 calls' p95).
    whisper_workers: int = Field(2, ge=1, le=8)
    # Where the Whisper runs: "auto" is CUDA when the ASR replica has a GPU (asr.num_gpus > 0)
    # and CTranslate2 sees it, else the CPU; "cuda" fails to load where there is none.
    whisper_device: Device = "auto"
    whisper_compute_type: ComputeType = Field("auto", description="CTranslate2 compute type; auto: float16 "
                                              "on CUDA, int8 on the CPU")
    # Encoder windows: audio padded up to a multiple of this (30: always the full 30 s
    # window, faster-whisper's own behaviour), and never below the floor.
    whisper_bucket_s: float = Field(5.0, ge=1.0, le=30.0)
    whisper_min_window_s: float = Field(10.0, ge=1.0, le=30.0)
    # "priority": turn ends before partials, stale partials skipped; "fifo": in arrival order.
    whisper_queue: Literal["priority", "fifo"] = "priority"
    # Utterances one model call decodes together. On a GPU a batch costs little more than one
    # utterance; on the CPU it costs nearly the sum (2 cores, 3 s each: 1 alone 136 ms, 6
    # together 609 ms), so a batch only makes its first caller wait for its last, and the
    # workers side by side do better (4 singles on 2 workers: 68 ms each). None: 1 on the
    # CPU, 8 on CUDA.
    whisper_max_batch: int | None = Field(None, ge=1, le=32)
    # Partials (asrDelta) are shed while the ASR replica was busy more than this share of the
    # last 2 s: they cost what a final costs, and under load finals come first (1.0: never shed).
    partial_max_load: float = Field(0.5, gt=0, le=1.0)
    piper_voice: str | None = Field(None, description="Piper .onnx voice; default en_US-joe-medium")
    piper_device: Device = Field("auto", description="CUDA needs onnxruntime-gpu in place of onnxruntime "
                                 "and tts.num_gpus > 0; auto: CUDA when both hold, else the CPU")
    # Piper's onnxruntime threads (0: onnxruntime's default, one per core, spinning between
    # operators). One: three reply clauses cost 341 ms of CPU instead of 417, for ~45 ms more
    # per clause on an idle machine (bench/threads.py).
    piper_threads: int = Field(1, ge=0, le=64)
    silero_vad: str | None = None
    tts_slots: int = Field(1, ge=0, le=16, description="local syntheses a TTS replica runs at once, tracks' "
                           "first pieces before later ones (deployments/tts_gate.py); 0: all at once, "
                           "sharing the cores")
    # A reply's later pieces (its track already playing) synthesize one at a time on a thread
    # at the lowest CPU priority (SCHED_IDLE): when turns end together they leave the cores
    # to the transcripts and first pieces (deployments/tts.py, Lanes). With piper_threads > 1
    # onnxruntime's own pool threads keep the replica's priority: only the calling one drops.
    tts_later_idle: bool = True


class MediaSettings(BaseModel):
    ptime_ms: int = 20
    # 96 ms per VAD request per call: `/call` reads its socket once per chunk (see
    # ws_receive_max_wait_ms), and `speaking` needs minSpeechMs (96) of speech anyway.
    vad_chunk_windows: int = Field(3, ge=1, le=16)
    vad_speech_chunk_windows: int = Field(1, ge=0, le=16, description="VAD windows (32 ms) per request while "
                                          "the caller speaks: the first quiet window, which starts the turn's "
                                          "transcript, is judged the moment it is in, not when its chunk is "
                                          "full (0: vad_chunk_windows throughout)")
    # The /call media plane's CPU per call (bench/media_plane.py measures these defaults
    # beside the old behaviour: vad_in_process false, the two below 0, vad_chunk_windows 2).
    vad_in_process: bool = Field(True, description="run Silero in the process that holds the call's audio: "
                                 "the ingress for /call, the UA workers for SIP and WebRTC (false: through "
                                 "the VadDeployment, a Serve handle call per batch)")
    vad_model: str | None = Field(None, description="Silero ONNX file for in-process VAD; default: "
                                  "models.silero_vad, else the one silero-vad ships")
    vad_quiet_margin_db: float = Field(6.0, ge=0, le=40, description="between turns, a VAD chunk whose windows "
                                       "are all within this many dB of the line noise Silero last scored as quiet "
                                       "is scored quiet without running Silero (voxray/media/vad_gate.py); "
                                       "0: Silero on every window")
    vad_batch_window_ms: int = Field(20, ge=0, le=100, description="a VAD chunk waits at most this long "
                                     "for other calls' chunks (0: it leaves at once when no batch is in flight)")
    ws_receive_max_wait_ms: int = Field(110, ge=0, le=500, description="/call: read the socket from Serve's "
                                        "proxy once per VAD chunk; a frame or command waits there at most "
                                        "this long (0: one read per message). Below a chunk and a frame "
                                        "(vad_chunk_windows x 32 + 20 ms) reads come more often than once per chunk")
    ws_compression: bool = Field(False, description="accept permessage-deflate on WebSockets to the ingress "
                                 "(serve.proxy = \"haproxy\"; Serve's proxy actor negotiates it as uvicorn does): "
                                 "off, audio frames cost neither end zlib's time, and clients send plain frames")
    end_silence_ms: int = Field(480, ge=96, le=5000)
    eou_complete_ms: int = Field(200, ge=0, le=5000)
    eou_incomplete_ms: int = Field(1200, ge=96, le=10_000)
    speculative_asr: bool = True
    tts_first_clause: bool = True
    echo_cancel: bool = Field(False, description="cancel the agent's own voice coming back in the caller's audio "
                              "(WebRTC's AEC3, referenced by what voxray played) before VAD and ASR; for lines "
                              "that echo (speakerphones, some trunks): on a clean line it attenuates a caller "
                              "talking over the agent (bench/echo.py). Per call: option.echoCancel")
    echo_delay_ms: int = Field(0, ge=0, le=3000, description="expected echo delay for paths longer than the "
                               "canceller's own search (~500 ms)")
    tts_cache_mb: float = Field(64.0, ge=0, le=4096, description="audio of `tts` commands with a cacheKey kept "
                                "per process for replay without synthesis (0: no cache)")
    tts_phrase_max_chars: int = Field(24, ge=0, le=200, description="a piece of a reply this short (an opener "
                                      "such as \"Sure,\" or \"One moment.\") is kept in that cache too and "
                                      "replays without synthesis when a reply says it again in the same voice; "
                                      "0: only cacheKey")
    recordings_dir: str = Field("~/.voxray/recordings", description="where call recordings are written: "
                                "`recorder.recorderFile` names a file inside it ({id}: the call id)")
    play_dirs: list[str] = Field(default_factory=list, description="folders `play` may read files from")
    play_cache_dir: str | None = None
    play_allow_private_urls: bool = False


class Scaling(BaseModel):
    """Replica bounds and resources per deployment; autoscaling applies when max > min."""

    min_replicas: int = Field(1, ge=0, description="the warm minimum (and the count when max <= min)")
    max_replicas: int = Field(1, ge=1)
    target_ongoing_requests: float = Field(2.0, gt=0, description="load per replica autoscaling aims at")
    max_ongoing_requests: int | None = Field(None, ge=1, description="None: the deployment's own default")
    max_replicas_per_node: int | None = Field(None, ge=1, description="1 spreads replicas over nodes")
    upscale_delay_s: float = 5.0
    downscale_delay_s: float = 120.0
    # A replica being scaled down takes no new requests and gets this long to finish
    # its ongoing ones; for the ingress each is a live call, so it is long.
    graceful_shutdown_timeout_s: float | None = Field(None, gt=0, description="None: the deployment's default")
    # Ray resources per replica (ray_actor_options). A fraction of a GPU lets replicas
    # share one: 0.5 puts two ASR replicas on each GPU. Only asr and tts run models on it.
    num_gpus: float = Field(0, ge=0, description="GPUs per replica (fractions share one); 0: none")
    num_cpus: float | None = Field(None, ge=0, description="CPUs per replica; None: the deployment's own")


# What carries HTTP and WebSockets to the Ingress replicas (cluster/ingress_proxy.py).
IngressProxy = Literal["haproxy", "ray"]


class ServeConfig(BaseModel):
    host: str = "127.0.0.1"
    port: int = 8000
    app_name: str = "voxray"
    route_prefix: str = "/"
    proxy: IngressProxy = Field(
        "haproxy", description="what carries HTTP and WebSockets to the Ingress replicas: HAProxy in front of "
        "replicas that serve HTTP themselves (Serve's direct ingress: half the media plane's CPU of Serve's "
        "Python proxy actor, 'ray'; falls back to 'ray' without an HAProxy binary). Read when Ray starts "
        "(cluster/ingress_proxy.py)")


class IceServer(BaseModel):
    urls: list[str]
    username: str | None = None
    credential: str | None = None


class WebRtcSettings(BaseModel):
    ice_servers: list[IceServer] = Field(default_factory=list)


class Transports(BaseModel):
    """Settings handed to each UA node's transports."""

    webrtc: WebRtcSettings = Field(default_factory=WebRtcSettings)
    sip: SipSettings = Field(default_factory=SipSettings)
    pool: PoolSettings = Field(default_factory=PoolSettings)


class SecuritySettings(BaseModel):
    """Who may use the API, and how calls survive their agent's socket dropping."""

    api_tokens: list[str] = Field(default_factory=list, description="accepted tokens; empty = open")
    api_token_env: str = "VOXRAY_TOKEN"  # one more token from the environment
    resume_grace_s: float = Field(0.0, ge=0, le=600, description="hold a call this long for the agent to reconnect")
    cdr_path: str = "~/.voxray/cdr.sqlite"
    dump_dir: str = Field("~/.voxray/dumps", description="where `dump=true` calls write their JSON lines")

    def tokens(self) -> list[str]:
        env = os.environ.get(self.api_token_env) if self.api_token_env else None
        return self.api_tokens + ([env] if env else [])


class AgentSettings(BaseModel):
    """The in-cluster LLM agent (deployments/llm_agent.py): answers inbound SIP calls that the UA
    node's webhook sends to the ingress's `POST /agent/webhook`. Off unless enabled."""

    enabled: bool = False
    playbook: str | None = Field(None, description="playbook file (voxray/agents/llm/playbook.py), read "
                                 "where the app is deployed, `${VAR}` from that environment")
    playbook_text: str | None = Field(None, description="the playbook itself, instead of a file")
    base_url: str | None = Field(None, description="chat completions base URL; wins over the playbook's")
    model: str | None = Field(None, description="model name; wins over the playbook's")
    api_key_env: str | None = Field(None, description="environment variable (where deployed) with the API key")
    server_url: str | None = Field(None, description="ws://host:port[/prefix] the agent connects to for "
                                   "/call/sip; default: this app through the Serve proxy of its own node")
    call_timeout_s: float | None = Field(1800.0, gt=0, description="the agent hangs up a call held longer "
                                         "(keep it below scaling.graceful_shutdown_timeout_s)")
    summary: bool = Field(True, description="file a post-call summary on the call record")
    # One held request per call: max_ongoing_requests bounds the calls of a replica and
    # autoscaling aims at target_ongoing_requests calls per replica. A replica being stopped
    # lets its calls run for graceful_shutdown_timeout_s: above call_timeout_s, none is cut.
    scaling: Scaling = Field(default_factory=lambda: Scaling(
        target_ongoing_requests=8, max_ongoing_requests=16, graceful_shutdown_timeout_s=1860))


class VoxrayConfig(BaseModel):
    security: SecuritySettings = Field(default_factory=SecuritySettings)
    admission: AdmissionSettings = Field(default_factory=AdmissionSettings)
    transports: Transports = Field(default_factory=Transports)
    serve: ServeConfig = Field(default_factory=ServeConfig)
    models: ModelsConfig = Field(default_factory=ModelsConfig)
    providers: ProvidersConfig = Field(default_factory=ProvidersConfig)
    media: MediaSettings = Field(default_factory=MediaSettings)
    ingress: Scaling = Field(default_factory=lambda: Scaling(target_ongoing_requests=50,
                                                            graceful_shutdown_timeout_s=300))
    vad: Scaling = Field(default_factory=lambda: Scaling(target_ongoing_requests=4))
    # A warm standby: a request that meets a dead replica goes to the other at once,
    # instead of waiting ~10 s for Serve to start a replacement and load its model.
    asr: Scaling = Field(default_factory=lambda: Scaling(min_replicas=2, max_replicas=2))
    tts: Scaling = Field(default_factory=lambda: Scaling(min_replicas=2, max_replicas=2))
    agent: AgentSettings = Field(default_factory=AgentSettings)

    def media_dict(self) -> dict:
        """The media settings as the ingress and the UA workers get them: their in-process
        VAD loads `models.silero_vad` unless `media.vad_model` names another file."""
        media = self.media.model_dump()
        media["vad_model"] = media["vad_model"] or self.models.silero_vad
        return media

    @classmethod
    def load(cls, path: str | os.PathLike | None = None) -> "VoxrayConfig":
        env = voxray_env()
        data: dict = {}
        path = path or env.config
        if path:
            text = Path(path).read_text()
            data = tomllib.loads(text) if str(path).endswith(".toml") else json.loads(text)
        config = cls.model_validate(data)
        if env.port is not None:
            config.serve.port = env.port
        if env.host is not None:
            config.serve.host = env.host
        return config
