"""`ray up ray-cluster.yaml` for real: sshd on 127.0.0.1, a clean clone, a call, `ray down`.

The head is this machine, reached over ssh as a user made for the test (so that the
`ray stop` that `ray up` runs there cannot touch this test run's own Ray). The copy of
ray-cluster.yaml differs only where a test machine must: the address, the ssh key and
port, the install folder, free ports, and a config on loopback.
"""

from __future__ import annotations

import asyncio
import os
import pwd
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pytest
import yaml

from tests.conftest import SENTENCE, free_port
from tests.test_models import wer
from tests.wsclient import CallClient
from voxray.cluster.ingress_proxy import free_listen_ports

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parent.parent
USER = "voxray-rayup"
RAY = str(Path(sys.executable).with_name("ray"))
UP_TIMEOUT_S = 1500  # install.sh into a new .venv, Ray, the models' first load

# ssh's ProxyCommand: the head's sshd listens on a free port, and `ray up` has no port setting.
RELAY = """\
import os, socket, sys, threading
s = socket.create_connection((sys.argv[1], int(sys.argv[2])))
def up():
    while data := os.read(0, 65536):
        s.sendall(data)
    s.shutdown(socket.SHUT_WR)
threading.Thread(target=up, daemon=True).start()
while data := s.recv(65536):
    os.write(1, data)
"""


def _run(cmd: list[str], **kw) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, capture_output=True, text=True, **kw)


@pytest.fixture(scope="module")
def ssh_head():
    if os.geteuid() != 0:
        pytest.skip("making the cluster's ssh user needs root")
    assert Path("/usr/sbin/sshd").exists() and shutil.which("rsync"), "install.sh installs openssh-server, rsync"
    work = Path(tempfile.mkdtemp(prefix="voxray-rayup-"))
    work.chmod(0o755)
    _run(["pkill", "-u", USER])
    _run(["userdel", "-r", USER])
    # "*": no password, yet not locked (sshd refuses a locked account even for a key).
    made = _run(["useradd", "--create-home", "--shell", "/bin/bash", "--password", "*", USER])
    assert made.returncode == 0, made.stderr
    home = Path(pwd.getpwnam(USER).pw_dir)
    key = work / "id_ed25519"
    _run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)], check=True)
    _run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(work / "host_key")], check=True)
    ssh_dir = home / ".ssh"
    ssh_dir.mkdir(mode=0o700, exist_ok=True)
    (ssh_dir / "authorized_keys").write_text(Path(f"{key}.pub").read_text())
    # Ray's files of this user's cluster, apart from the root-owned /tmp/ray of this test run.
    with open(home / ".bashrc", "a") as f:
        f.write(f"\nexport RAY_TMPDIR={work / 'ray-tmp'}\n")
    _run(["chown", "-R", f"{USER}:{USER}", str(home)], check=True)
    (work / "ray-tmp").mkdir()
    _run(["chown", f"{USER}:{USER}", str(work / "ray-tmp")], check=True)
    port = free_port()
    (work / "sshd_config").write_text(
        f"Port {port}\nListenAddress 127.0.0.1\nHostKey {work / 'host_key'}\nPidFile {work / 'sshd.pid'}\n"
        f"AllowUsers {USER}\nPasswordAuthentication no\nKbdInteractiveAuthentication no\nUsePAM no\n"
        "PermitRootLogin no\nStrictModes yes\nMaxStartups 50\nMaxSessions 50\n")
    (work / "relay.py").write_text(RELAY)
    Path("/run/sshd").mkdir(exist_ok=True)  # sshd's privilege separation directory
    sshd = subprocess.Popen(["/usr/sbin/sshd", "-D", "-e", "-f", str(work / "sshd_config")],
                            stdout=open(work / "sshd.log", "w"), stderr=subprocess.STDOUT)
    try:
        yield {"work": work, "home": home, "key": key, "port": port}
    finally:
        sshd.terminate()
        sshd.wait(10)
        _run(["pkill", "-9", "-u", USER])
        time.sleep(1)
        _run(["userdel", "-r", USER])
        shutil.rmtree(work, ignore_errors=True)


def _render(clone: Path, head: dict, ports: dict[str, int], config: Path) -> Path:
    """ray-cluster.yaml for a head at 127.0.0.1: every change is asserted to apply, so a
    changed ray-cluster.yaml fails here rather than testing something else."""
    spec = yaml.safe_load((clone / "ray-cluster.yaml").read_text())
    remote = str(head["home"] / "voxray")
    spec["provider"] = {"type": "local", "head_ip": "127.0.0.1", "worker_ips": []}
    spec["auth"] = {"ssh_user": USER, "ssh_private_key": str(head["key"]),
                    "ssh_proxy_command": f"{sys.executable} {head['work'] / 'relay.py'} 127.0.0.1 {head['port']}"}
    assert list(spec["file_mounts"]) == ["/opt/voxray"]
    spec["file_mounts"] = {remote: str(clone)}
    swaps = {"--port=6379": f"--port={ports['gcs']}",
             "--dashboard-port=8265": f"--dashboard-port={ports['dashboard']} "
                                      f"--dashboard-agent-listen-port={ports['agent']}",
             "--ray-client-server-port=10001": f"--ray-client-server-port={ports['client']}",
             "--config examples/cluster.toml": f"--config {config}"}
    used = dict.fromkeys(swaps, 0)

    def swap(cmd: str) -> str:
        cmd = cmd.replace("/opt/voxray", remote)
        for old, new in swaps.items():
            used[old] += cmd.count(old)
            cmd = cmd.replace(old, new)
        return cmd

    for k in ("setup_commands", "head_setup_commands", "head_start_ray_commands", "worker_start_ray_commands"):
        spec[k] = [swap(c) for c in spec.get(k) or []]
    assert all(used.values()), f"ray-cluster.yaml changed; not found: {[k for k, v in used.items() if not v]}"
    out = clone / "ray-cluster.test.yaml"
    out.write_text(yaml.safe_dump(spec, sort_keys=False))
    return out


@pytest.fixture(scope="module")
def cluster(ssh_head):
    work: Path = ssh_head["work"]
    clone = work / "clone"
    done = _run(["git", "clone", "--quiet", str(ROOT), str(clone)])
    assert done.returncode == 0, done.stderr
    assert not (clone / ".venv").exists()
    names = ("gcs", "dashboard", "agent", "client", "serve")
    ports = dict(zip(names, free_listen_ports(len(names))))  # distinct: Ray refuses one port for two parts
    config = work / "cluster-test.toml"
    toml = (clone / "examples" / "cluster.toml").read_text()
    assert 'host = "0.0.0.0"' in toml and "port = 8000" in toml
    toml = toml.replace('host = "0.0.0.0"', 'host = "127.0.0.1"').replace("port = 8000", f"port = {ports['serve']}")
    config.write_text(toml + "\n[transports.pool]\nwebrtc_workers = 1\n")
    config.chmod(0o644)
    spec = _render(clone, ssh_head, ports, config)
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_")}
    env["HOME"] = str(work / "local-home")  # the operator's machine: no Ray token of its own
    t0 = time.monotonic()
    up = _run([RAY, "up", "-y", "--no-config-cache", str(spec)], cwd=clone, env=env, timeout=UP_TIMEOUT_S)
    up_s = time.monotonic() - t0
    log = up.stdout + up.stderr
    (ROOT / "test-artifacts").mkdir(exist_ok=True)
    (ROOT / "test-artifacts" / "ray-up.log").write_text(log)
    try:
        assert up.returncode == 0, f"ray up failed (rc {up.returncode}):\n{log[-4000:]}"
        yield {"spec": spec, "clone": clone, "ports": ports, "env": env, "up_s": up_s, "log": log,
               "home": ssh_head["home"]}
    finally:
        down = _run([RAY, "down", "-y", str(spec)], cwd=clone, env=env, timeout=300)
        (ROOT / "test-artifacts" / "ray-down.log").write_text(down.stdout + down.stderr)


def test_ray_up_serves_a_call(cluster, speech16k):
    """The deploy returned with one node up though examples/cluster.toml asks for two
    ingress replicas one per node; a /call call gets asrFinal and TTS through it."""
    serve_log = (cluster["home"] / "voxray-serve.log").read_text()
    assert "voxray is serving" in serve_log, serve_log[-3000:]
    assert "Ingress: 1 of 2 replicas running; 1 waits for a node to join" in serve_log, serve_log[-3000:]
    mounted = cluster["home"] / "voxray"
    assert (mounted / ".venv" / "bin" / "python").exists() and not (mounted / ".git").exists()
    assert not (mounted / "test-artifacts").exists()

    async def call() -> tuple[str, int, str]:
        c = await CallClient.connect(f"ws://127.0.0.1:{cluster['ports']['serve']}/call?id=rayup1")
        try:
            await c.send({"command": "invite", "option": {"codec": "pcm"}})
            await c.wait_for("answer", timeout=60)
            pcm = np.concatenate([np.zeros(4000, np.int16), speech16k, np.zeros(16000, np.int16)])
            await c.stream(pcm.tobytes(), 640)
            text = (await c.wait_for("asrFinal", timeout=60))["text"]
            n = len(c.events)
            await c.send({"command": "tts", "text": "Thank you, goodbye.", "playId": "bye"})
            await c.wait_for("trackEnd", timeout=60, after=n, playId="bye")
            frames = len(c.audio)
            await c.send({"command": "hangup", "reason": "done"})
            return text, frames, (await c.wait_for("hangup", timeout=30))["reason"]
        finally:
            await c.close()

    text, frames, reason = asyncio.run(call())
    assert wer(SENTENCE, text) <= 0.25, text
    assert frames > 25, frames  # over half a second of reply audio
    assert reason == "done"


def test_an_unauthenticated_job_submission_is_refused(cluster):
    """Ray's token authentication is on: a job (any code on every node) needs the token."""
    dash = f"http://127.0.0.1:{cluster['ports']['dashboard']}"
    env = {**cluster["env"], "RAY_AUTH_MODE": "token"}
    refused = _run([RAY, "job", "submit", "--address", dash, "--no-wait", "--", "echo", "pwned"],
                   env={**env, "RAY_AUTH_TOKEN": "not-the-token"}, timeout=120)
    assert refused.returncode != 0, refused.stdout + refused.stderr
    told = (refused.stdout + refused.stderr).lower()
    assert "401" in told or "unauthorized" in told or "authentication" in told, told[-2000:]
    bare = _run([RAY, "job", "submit", "--address", dash, "--no-wait", "--", "echo", "pwned"],
                env={**cluster["env"], "RAY_AUTH_MODE": "disabled"}, timeout=120)
    assert bare.returncode != 0, bare.stdout + bare.stderr
    # With the cluster's token (fetched over ssh as an operator would) the same call is let in.
    token = (cluster["home"] / ".ray" / "auth_token").read_text().strip()
    assert token and token not in cluster["log"]  # made on the head, never printed by `ray up`
    let_in = _run([RAY, "job", "submit", "--address", dash, "--no-wait", "--", "echo", "ok"],
                  env={**env, "RAY_AUTH_TOKEN": token}, timeout=120)
    assert let_in.returncode == 0, let_in.stdout + let_in.stderr
