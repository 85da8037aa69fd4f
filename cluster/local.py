"""Deploying the Serve app (with progress shown) and taking it down again."""

from __future__ import annotations

import threading
import time

from voxray.cluster.ray_start import embedded
from voxray.config import VoxrayConfig


def deploy(config: VoxrayConfig, log=print) -> None:
    """Deploy the app and report each deployment's progress until all are healthy."""
    from ray import serve

    from voxray.cluster.app import build_app

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
    from voxray.cluster.placement import describe, ensure_ua_nodes_for

    for info in ensure_ua_nodes_for(config):
        log(f"  [{time.monotonic() - t0:5.1f}s] {describe(info)}")
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
        if not embedded():
            serve.delete(app_name)
    finally:
        ray.shutdown()
