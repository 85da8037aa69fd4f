"""Starting (or joining) Ray and deploying the Serve app, with progress shown."""

from __future__ import annotations

import os
import sys
import threading
import time

from voxray.config import VoxrayConfig


_embedded = False  # this process started its own Ray (and so takes it down whole)


def ray_env_defaults() -> None:
    """Make every Ray process behave the same, whatever the user's home holds."""
    # A stray ~/.ray/auth_token would switch token auth on for some tools only.
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    # Models ship inside packages: nothing may reach for a model hub.
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")


def start_ray(address: str | None = None, num_cpus: int | None = None,
              dashboard: bool = True, log=print) -> None:
    """Join the cluster at `address` (or RAY_ADDRESS), else start an embedded one."""
    import ray

    ray_env_defaults()
    address = address or os.environ.get("RAY_ADDRESS")
    if ray.is_initialized():
        return
    env = {"env_vars": {k: os.environ[k] for k in ("RAY_AUTH_MODE", "HF_HUB_OFFLINE", "VOXRAY_LOG_LEVEL",
                                                    "VOXRAY_WHISPER_MODEL", "VOXRAY_PIPER_VOICE")
                        if k in os.environ}}
    # Fatal signals dump every thread's Python stack from interpreter start, before any
    # voxray code runs (voxray.faults does the same from each actor's __init__).
    env["env_vars"]["PYTHONFAULTHANDLER"] = "1"
    if address:
        log(f"joining Ray cluster at {address}")
        ray.init(address=address, namespace="voxray", runtime_env=env, log_to_driver=False)
    else:
        log("starting an embedded single-node Ray")
        global _embedded
        _embedded = True
        # "local": a new instance of our own. Without it ray.init() joins any Ray it finds
        # running on this machine (another user's, a test's), and we would deploy onto it.
        ray.init(address="local", num_cpus=num_cpus, namespace="voxray", include_dashboard=dashboard,
                 dashboard_host="127.0.0.1", runtime_env=env, log_to_driver=False)
    ctx = ray.get_runtime_context()
    log(f"Ray is up (node {ctx.get_node_id()[:12]})")


def deploy(config: VoxrayConfig, log=print) -> None:
    """Deploy the app and report each deployment's progress until all are healthy."""
    from ray import serve

    from voxray.deployments.app import build_app

    serve.start(http_options={"host": config.serve.host, "port": config.serve.port})
    app = build_app(config)
    error: list[BaseException] = []

    def run() -> None:
        try:
            serve.run(app, name=config.serve.app_name, route_prefix=config.serve.route_prefix)
        except BaseException as exc:  # reported by the waiting thread
            error.append(exc)

    worker = threading.Thread(target=run, daemon=True)
    t0 = time.monotonic()
    worker.start()
    seen: dict[str, str] = {}
    while worker.is_alive():
        worker.join(0.5)
        try:
            app_status = serve.status().applications.get(config.serve.app_name)
        except Exception:
            continue
        if app_status is None:
            continue
        for name, dep in app_status.deployments.items():
            state = str(dep.status.value if hasattr(dep.status, "value") else dep.status)
            if seen.get(name) != state:
                seen[name] = state
                label = {"UPDATING": "loading", "HEALTHY": "ready"}.get(state, state.lower())
                log(f"  [{time.monotonic() - t0:5.1f}s] {name}: {label}")
    if error:
        raise RuntimeError(f"deploy failed: {error[0]}") from error[0]
    from voxray.cluster.placement import ensure_ua_nodes_for

    for info in ensure_ua_nodes_for(config):
        log(f"  [{time.monotonic() - t0:5.1f}s] UA node on {info['node_id'][:12]}: "
            f"{', '.join(info['transports']) or 'no network transports'}")
    log(f"voxray is serving on ws://{config.serve.host}:{config.serve.port}/call "
        f"({time.monotonic() - t0:.1f}s)")


def shutdown(app_name: str = "voxray") -> None:
    """Leave the cluster as found: an embedded Ray goes away whole (its actors with it);
    on a shared cluster only our app and UA nodes are removed."""
    import ray
    from ray import serve

    from voxray.cluster.placement import kill_ua_nodes

    if not ray.is_initialized():
        return
    try:
        kill_ua_nodes()  # SIP: BYEs and un-REGISTER before the processes go
        if not _embedded:
            serve.delete(app_name)
    finally:
        ray.shutdown()


def eprint(*args) -> None:
    print(*args, file=sys.stderr, flush=True)
