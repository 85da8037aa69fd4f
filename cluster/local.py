"""Deploying the Serve app (with progress shown) and taking it down again."""

from __future__ import annotations

import threading
import time

from voxray.cluster.deploy_wait import Decision, DeploymentProgress, Outcome, decide
from voxray.cluster.ray_start import embedded, serve_vars
from voxray.config import VoxrayConfig


def deploy(config: VoxrayConfig, log=print, timeout_s: float = 600.0) -> None:
    """Deploy the app, report each deployment's progress, and return once it serves.

    Returns when every replica asked for runs, or when the app serves from the nodes
    present and the replicas still missing wait for nodes to join (Serve places them
    then); raises after `timeout_s` with each deployment's state (cluster/deploy_wait.py).
    """
    from ray import serve

    from voxray.cluster.app import build_app

    # The controller starts the proxies (HAProxy or Serve's own) and paces Serve's
    # housekeeping: it gets start_ray's choices even when this driver joined a cluster
    # whose nodes lack them.
    env = serve_vars()
    serve.start(http_options={"host": config.serve.host, "port": config.serve.port},
                controller_options={"runtime_env": {"env_vars": env}} if env else None)
    app = build_app(config)
    error: list[BaseException] = []

    def run() -> None:
        try:
            serve.run(app, name=config.serve.app_name, route_prefix=config.serve.route_prefix)
        except BaseException as exc:  # reported by the waiting thread
            error.append(exc)

    # serve.run blocks until every replica is up, which on a cluster still gathering its
    # nodes may be never; the decision when to return is made here instead.
    worker = threading.Thread(target=run, daemon=True)
    t0 = time.monotonic()
    worker.start()
    seen: dict[str, str] = {}
    partial_since: float | None = None
    decision = Decision(Outcome.WAIT)
    while True:
        worker.join(0.5)
        if error:
            raise RuntimeError(f"deploy failed: {error[0]}") from error[0]
        elapsed = time.monotonic() - t0
        progress = _progress(config, seen, log, elapsed)
        if not worker.is_alive():
            decision = Decision(Outcome.READY)  # serve.run returned: all healthy
            break
        decision = decide(progress, elapsed, timeout_s)
        if decision.outcome is Outcome.PARTIAL:
            # A replica just created is briefly unplaced too: only a lasting gap counts.
            partial_since = partial_since if partial_since is not None else elapsed
            if elapsed - partial_since >= _SETTLE_S:
                break
        else:
            partial_since = None
        if decision.outcome is Outcome.TIMEOUT:
            raise TimeoutError(f"deploy did not finish in {timeout_s:.0f} s: " + "; ".join(decision.lines))
    if decision.outcome is Outcome.PARTIAL:
        for line in decision.lines:
            log(f"  [{time.monotonic() - t0:5.1f}s] {line}")
        log("  the missing replicas start as nodes join (Serve keeps placing them)")
    from voxray.cluster.placement import describe, ensure_ua_nodes_for

    for info in ensure_ua_nodes_for(config):
        log(f"  [{time.monotonic() - t0:5.1f}s] {describe(info)}")
    log(f"voxray is serving on ws://{config.serve.host}:{config.serve.port}/call "
        f"({time.monotonic() - t0:.1f}s)")


_SETTLE_S = 5.0


def _wanted(config: VoxrayConfig) -> dict[str, int]:
    """The replicas the config asks for at start, by Serve deployment name."""
    return {"Ingress": config.ingress.min_replicas,
            **({} if config.media.vad_in_process else {"VadDeployment": config.vad.min_replicas}),
            "AsrDeployment": config.asr.min_replicas, "TtsDeployment": config.tts.min_replicas,
            "CallRegistry": 1, "LlmAgentDeployment": config.agent.scaling.min_replicas}


def _progress(config: VoxrayConfig, seen: dict[str, str], log, elapsed: float) -> list[DeploymentProgress]:
    """Each deployment's replicas as Serve and Ray see them now; logs state changes."""
    from ray import serve

    try:
        app_status = serve.status().applications.get(config.serve.app_name)
    except Exception:
        return []
    if app_status is None:
        return []
    wanted = _wanted(config)
    unplaced: dict[str, int] | None = None  # asked of Ray's state API only while replicas are missing
    out = []
    for name, dep in app_status.deployments.items():
        state = str(dep.status.value if hasattr(dep.status, "value") else dep.status)
        if seen.get(name) != state:
            seen[name] = state
            label = {"UPDATING": "loading", "HEALTHY": "ready"}.get(state, state.lower())
            log(f"  [{elapsed:5.1f}s] {name}: {label}")
        states = {str(getattr(k, "value", k)): v for k, v in (dep.replica_states or {}).items()}
        running = states.get("RUNNING", 0)
        if running < wanted.get(name, 1) and unplaced is None:
            unplaced = _unplaced_replicas(config.serve.app_name)
        out.append(DeploymentProgress(name, wanted.get(name, 1), running, (unplaced or {}).get(name, 0),
                                      dep.message or ""))
    return out


def _unplaced_replicas(app_name: str) -> dict[str, int]:
    """Replica actors of the app that Ray has not placed on a node, by deployment.

    Read from Ray's state API (the dashboard serves it); without one, none are known
    and the deploy waits for every replica or its timeout, as before."""
    try:
        from ray.util.state import list_actors

        pending = list_actors(filters=[("state", "=", "PENDING_CREATION")], limit=1000,
                              raise_on_missing_output=False)
    except Exception:
        return {}
    prefix = f"ServeReplica:{app_name}:"
    counts: dict[str, int] = {}
    for actor in pending:
        cls = getattr(actor, "class_name", "") or ""
        if cls.startswith(prefix):
            name = cls[len(prefix):]
            counts[name] = counts.get(name, 0) + 1
    return counts


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
            # An ingress replica may have placed a UA node again before it went (its
            # placer starts one on any node without); none is left behind.
            kill_ua_nodes()
    finally:
        ray.shutdown()
