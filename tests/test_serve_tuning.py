"""Serve's housekeeping pace (cluster/serve_tuning.py): the operator's own values win, and
the processes that read them (the controller, the replicas) run with them; Ray's log
monitor lists its folder at voxray's pace too (cluster/ray_start.py)."""

from __future__ import annotations

import psutil
import pytest

from tests.conftest import live_actor_pids
from voxray.cluster.ray_start import LOG_MONITOR_PACE
from voxray.cluster.serve_tuning import DEFAULTS, serve_tuning_env


def test_defaults_unless_the_operator_set_them():
    assert serve_tuning_env({}) == DEFAULTS
    mine = {"RAY_SERVE_CONTROL_LOOP_INTERVAL_S": "0.1"}
    assert serve_tuning_env(mine) == {**DEFAULTS, **mine}


def _environ_of(class_name: str) -> dict[str, str]:
    """A live actor's process environment."""
    return psutil.Process(live_actor_pids(class_name)[0]).environ()


@pytest.mark.e2e
@pytest.mark.parametrize("class_name", ["ServeController", "ServeReplica:voxray:Ingress"])
def test_the_sessions_serve_processes_run_with_them(voxray_server, class_name):
    env = _environ_of(class_name)
    assert {k: env.get(k) for k in DEFAULTS} == DEFAULTS


@pytest.mark.e2e
def test_the_sessions_log_monitor_runs_at_voxrays_pace(voxray_server):
    """The embedded Ray's log monitor, a child of this test process, started with the
    pace in its environment: it reads it at import, as Ray's own constants."""
    monitors = [p for p in psutil.Process().children(recursive=True)
                if any(part.endswith("log_monitor.py") for part in p.cmdline())]
    assert monitors, "no log monitor under this session's Ray"
    env = monitors[0].environ()
    assert {k: env.get(k) for k in LOG_MONITOR_PACE} == LOG_MONITOR_PACE
