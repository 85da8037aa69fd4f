"""Starting an embedded Ray, or joining a cluster, the same way in every voxray process."""

from __future__ import annotations

import os
import sys

from voxray.cluster.ingress_proxy import IngressProxy, chosen, ingress_env, reap_orphan_haproxies
from voxray.cluster.serve_tuning import serve_tuning_env
from voxray.env import forwarded_vars

_embedded = False  # this process started its own Ray (and so takes it down whole)
_serve_vars: dict[str, str] = {}  # the Ray processes' Serve settings: ingress proxy, housekeeping pace
_dashboard_url: str | None = None


def ray_env_defaults() -> None:
    """Make every Ray process behave the same, whatever the user's home holds."""
    # A stray ~/.ray/auth_token would switch token auth on for some tools only.
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    # Models ship inside packages: nothing may reach for a model hub.
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    for var, value in LOG_MONITOR_PACE.items():
        os.environ.setdefault(var, value)


# Ray's log monitor (a node process, started with the node: it inherits this environment)
# lists its log folder ten times a second while it holds under 1,000 files, to tail new
# workers' logs to drivers; voxray's drivers take none (log_to_driver=False). Listing it
# every 5 s instead took the monitor from 1.7-1.9 % of a core to 0.6-0.7 on an idle node
# (Ray's idle 23.0-24.9 -> 21.5-22.1 %, four alternating runs); logs still land in their
# files at once, and a new worker's lines reach a driver that asks for them <= 5 s later.
LOG_MONITOR_PACE = {"RAY_LOG_MONITOR_MANY_FILES_THRESHOLD": "0", "LOG_NAME_UPDATE_INTERVAL_S": "5"}


def start_ray(address: str | None = None, num_cpus: int | None = None,
              dashboard: bool = True, log=print, ingress_proxy: IngressProxy = "haproxy") -> None:
    """Join the cluster at `address` (or RAY_ADDRESS), else start an embedded one.

    `ingress_proxy` (serve.proxy, same default) picks what carries HTTP and WebSockets to the Ingress
    replicas (cluster/ingress_proxy.py); Serve reads it, and the pace of its housekeeping
    (cluster/serve_tuning.py), at import, so they are set here, in the job's environment for
    every Ray process (and the Serve controller's, `deploy`).
    """
    import ray

    ray_env_defaults()
    address = address or os.environ.get("RAY_ADDRESS")
    if ray.is_initialized():
        return
    # Not into os.environ: a process this one starts (a bench's child, a test's cluster)
    # would inherit the free ports picked here for a Ray of its own.
    global _serve_vars
    _serve_vars = {**ingress_env(ingress_proxy, embedded=not address), **serve_tuning_env()}
    env = {"env_vars": {**{k: os.environ[k] for k in ("RAY_AUTH_MODE", "HF_HUB_OFFLINE") if k in os.environ},
                        **forwarded_vars(), **_serve_vars}}
    # Fatal signals dump every thread's Python stack from interpreter start, before any
    # voxray code runs (voxray.faults does the same from each actor's __init__).
    env["env_vars"]["PYTHONFAULTHANDLER"] = "1"
    # numpy's OpenBLAS starts a spinning thread per core in every actor, for products of a
    # few thousand elements (Whisper's mel filter bank, resampling): a 3 s utterance's
    # decode cost 252 ms of CPU with it, 139 ms without (bench/threads.py). The models
    # have their own thread settings (models.whisper_threads, models.piper_threads).
    for var in ("OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        env["env_vars"].setdefault(var, os.environ.get(var, "1"))
    if address:
        log(f"joining Ray cluster at {address}")
        info = ray.init(address=address, namespace="voxray", runtime_env=env, log_to_driver=False)
    else:
        log("starting an embedded single-node Ray")
        if chosen(_serve_vars) == "haproxy":
            orphans = reap_orphan_haproxies()
            if orphans:
                log(f"stopped {len(orphans)} HAProxy process(es) an earlier embedded Ray left behind: {orphans}")
        global _embedded
        _embedded = True
        # "local": a new instance of our own. Without it ray.init() joins any Ray it finds
        # running on this machine (another user's, a test's), and we would deploy onto it.
        info = ray.init(address="local", num_cpus=num_cpus, namespace="voxray", include_dashboard=dashboard,
                        dashboard_host="127.0.0.1", runtime_env=env, log_to_driver=False)
    global _dashboard_url
    _dashboard_url = getattr(info, "dashboard_url", None) or None
    ctx = ray.get_runtime_context()
    log(f"Ray is up (node {ctx.get_node_id()[:12]}; ingress proxy: {chosen(_serve_vars)})")


def serve_vars() -> dict[str, str]:
    """What start_ray gave every Ray process of the job for Serve (cluster/ingress_proxy.py,
    cluster/serve_tuning.py)."""
    return dict(_serve_vars)


def dashboard_url() -> str | None:
    """The Ray dashboard of the cluster this process joined or started, if it has one."""
    if not _dashboard_url:
        return None
    return _dashboard_url if _dashboard_url.startswith("http") else f"http://{_dashboard_url}"


def embedded() -> bool:
    """Whether this process started its own Ray (and so takes it down whole)."""
    return _embedded


def eprint(*args) -> None:
    print(*args, file=sys.stderr, flush=True)
