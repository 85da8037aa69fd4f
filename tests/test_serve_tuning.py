"""Serve's housekeeping pace (cluster/serve_tuning.py): the operator's own values win, and
the processes that read them (the controller, the replicas) run with them."""

from __future__ import annotations

import psutil
import pytest

from voxray.cluster.serve_tuning import DEFAULTS, serve_tuning_env


def test_defaults_unless_the_operator_set_them():
    assert serve_tuning_env({}) == DEFAULTS
    mine = {"RAY_SERVE_CONTROL_LOOP_INTERVAL_S": "0.1"}
    assert serve_tuning_env(mine) == {**DEFAULTS, **mine}


def _environ_of(class_name: str) -> dict[str, str]:
    """A live actor's process environment, found through this cluster's GCS (the session's
    Ray runs without the dashboard that Ray's state API asks)."""
    import ray

    pids = [a["Pid"] for a in ray._private.state.actors(actor_state_name="ALIVE").values()
            if a["ActorClassName"] == class_name]
    assert pids, f"no live {class_name}"
    return psutil.Process(pids[0]).environ()


@pytest.mark.e2e
@pytest.mark.parametrize("class_name", ["ServeController", "ServeReplica:voxray:Ingress"])
def test_the_sessions_serve_processes_run_with_them(voxray_server, class_name):
    env = _environ_of(class_name)
    assert {k: env.get(k) for k in DEFAULTS} == DEFAULTS
