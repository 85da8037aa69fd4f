"""Shared fixtures: real test speech (espeak-ng + sox) and a live voxray on Ray Serve."""

from __future__ import annotations

import os
import socket
from pathlib import Path

import numpy as np
import pytest

from voxray.speech import espeak_speech

os.environ.setdefault("HF_HUB_OFFLINE", "1")

# espeak-ng speech that Whisper tiny.en hears reliably (checked at several offsets;
# many espeak sentences come out garbled in tiny.en, see STACK-NOTES).
SENTENCE = "Hello, I need help with my account."
ARTIFACTS = Path(__file__).resolve().parent.parent / "test-artifacts"
RECORDINGS = ARTIFACTS / "recordings"  # the test server's media.recordings_dir


def live_actor_pids(class_name: str) -> list[int]:
    """The processes of this session's live actors of `class_name`, found through the GCS
    (the session's Ray runs without the dashboard that Ray's state API asks)."""
    import ray

    pids = [a["Pid"] for a in ray._private.state.actors(actor_state_name="ALIVE").values()
            if a["ActorClassName"] == class_name]
    assert pids, f"no live {class_name}"
    return pids


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(autouse=True)
def strict_active_call_events():
    """Every event a test's CallClients received parses under active-call's own types
    (tests/active_call_rules.py): real calls on every path double as the compatibility suite."""
    from tests.wsclient import STRICT_VIOLATIONS

    STRICT_VIOLATIONS.clear()
    yield
    seen, STRICT_VIOLATIONS[:] = list(STRICT_VIOLATIONS), []
    assert not seen, "events a strict active-call client would refuse:\n" + "\n".join(seen[:10])


@pytest.fixture(scope="session")
def webhook_server():
    """The agents' webhook for SIP calls, bound once for the whole run: the UA nodes' webhook
    port stays taken between the modules that use it, never free for another listener."""
    from tests.sip_env import SIP_ENV
    from tests.test_sip import Webhook

    hook = Webhook(SIP_ENV.webhook_port)
    yield hook
    hook.close()


@pytest.fixture(scope="session")
def artifacts() -> Path:
    ARTIFACTS.mkdir(exist_ok=True)
    return ARTIFACTS


@pytest.fixture(scope="session")
def speech16k() -> np.ndarray:
    """SENTENCE spoken by espeak-ng, 16 kHz mono int16."""
    return espeak_speech(SENTENCE, 16000)


@pytest.fixture(scope="session")
def voxray_server():
    """voxray deployed on an embedded single-node Ray, on a free loopback port."""
    from voxray.cluster.local import deploy, shutdown
    from voxray.cluster.ray_start import start_ray
    from voxray.config import VoxrayConfig

    from voxray.cluster.ingress_proxy import free_listen_port

    config = VoxrayConfig()
    config.serve.port = free_listen_port()  # bound later, by HAProxy: outside the ephemeral range
    config.serve.host = "127.0.0.1"
    from tests.sip_env import SIP_ENV  # SIP on free loopback ports, for tests/test_sip.py

    config.transports.sip = SIP_ENV.settings()
    config.transports.pool.webrtc_workers = 2  # the CPUs Ray is told of (8) would make 4
    # `play`, `background` and SIP music on hold read local files from here only.
    config.media.play_dirs = [str(ARTIFACTS / "sip")]
    config.media.recordings_dir = str(RECORDINGS)  # `recorder.recorderFile` names files in here
    # Replica kills (test_faults) make a few ASR answers slow on purpose; the latency gate
    # must not turn the next tests' calls away. It is tested in test_admission, and
    # max_calls end to end in test_security.
    config.admission.asr_latency_s = None
    # Logical CPUs: deployments reserve fractions that add up to ~2; a second app
    # (test_security) needs room beside the first on this 2-core machine.
    start_ray(num_cpus=8, dashboard=False, log=lambda *_: None, ingress_proxy=config.serve.proxy)
    try:
        deploy(config, log=lambda *_: None)
        yield f"127.0.0.1:{config.serve.port}"
    finally:
        shutdown()
