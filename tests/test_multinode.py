"""Two Ray nodes on one machine: calls spread over both UA nodes; an ingress replica drains.

The cluster runs in a subprocess (tests/multinode_driver.py): the rest of the suite
shares one Ray instance per pytest process, which a second ray.init would disturb.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import SENTENCE
from tests.test_models import wer

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parent.parent
DRIVER_TIMEOUT_S = 600


def run_driver(*args: str) -> dict:
    env = {**os.environ, "RAY_AUTH_MODE": "disabled", "HF_HUB_OFFLINE": "1"}
    env.pop("RAY_ADDRESS", None)
    proc = subprocess.run([sys.executable, str(ROOT / "tests" / "multinode_driver.py"), *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=DRIVER_TIMEOUT_S)
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("{")]
    assert lines, f"driver printed no result (rc {proc.returncode}):\n{proc.stderr[-3000:]}"
    out = json.loads(lines[-1])
    assert "error" not in out, f"{out['error']}\n{proc.stderr[-3000:]}"
    return out


@pytest.fixture(scope="module")
def multinode() -> dict:
    return run_driver()


@pytest.fixture(scope="module")
def multinode_ray_proxy() -> dict:
    """The drain phase again behind Serve's proxy actor (serve.proxy = "ray"; the default
    is HAProxy)."""
    return run_driver("--proxy", "ray", "--no-node-loss")


def test_calls_spread_over_both_nodes_and_their_ua_nodes(multinode):
    assert len(multinode["nodes"]) == 2
    spread = multinode["spread"]
    calls = spread["calls"]
    assert len({c["replica"] for c in calls}) == 2, calls  # both ingress replicas took calls
    holding = [node for node, ids in spread["ua_calls"].items() if ids]
    assert len(holding) == 2, spread["ua_calls"]  # and both nodes' UA nodes hold media
    for c in calls:
        assert wer(SENTENCE, c["asr_text"]) <= 0.5, c
        assert c["tts_rms"] > 300, c  # TTS audio came back over SRTP
        assert c["hangup"] == "done", c


def test_a_lost_node_ends_its_calls_and_the_rest_go_on(multinode):
    loss = multinode["node_loss"]
    calls = loss["calls"]
    lost = {cid: c for cid, c in calls.items() if c["on_lost_node"]}
    kept = {cid: c for cid, c in calls.items() if not c["on_lost_node"]}
    assert lost and kept, calls  # calls ran on both nodes when the worker went
    for cid, c in lost.items():
        assert "error" not in c, (cid, c)  # the agent's socket closed
        assert c["record_reason"] == "node_lost", (cid, c)  # with a call record saying why
    assert loss["listed_after"] == [], loss  # /call/lists dropped them (the others have hung up)
    assert loss["lost_ua_node_gone"], loss  # the lost node's UA node went with it
    for cid, c in kept.items():
        assert "error" not in c, (cid, c)
        assert wer(SENTENCE, c["asr_text"]) <= 0.5, (cid, c)
        assert c["tts_frames"] > 0 and c["hangup"] == "done", (cid, c)
        assert c["record_reason"] == "done", (cid, c)
    # A node that joins gets the lost ingress replica and its own UA node; calls are answered.
    assert loss["rejoined"]["ingress_on_new_node"] and loss["rejoined"]["ua_node_on_new_node"], loss
    assert loss["new_calls_answered"] >= 1 and loss["rejoined"]["new_node_took_a_call"], loss


def test_replicas_scaled_down_finish_their_calls(multinode):
    # Behind HAProxy (the default) the leaving replica serves its sockets itself (Serve's
    # direct ingress): before deployments/direct_ingress.py its server's shutdown closed
    # them with 1012.
    check_drain(multinode["drain"])


def test_behind_the_ray_proxy_replicas_scaled_down_finish_their_calls(multinode_ray_proxy):
    check_drain(multinode_ray_proxy["drain"])


def check_drain(drain: dict) -> None:
    assert not drain["redeploy_error"], drain
    assert len(drain["replicas_before"]) == 2 and len(drain["replicas_after"]) == 1, drain
    # Serve either replaces both old replicas (when it reads the redeploy as new code) or
    # keeps one and stops the other (a num_replicas change alone): at least one old
    # replica left, with a call on it, and that call still ended well past 20 s below.
    assert len(set(drain["replicas_before"]) - set(drain["replicas_after"])) >= 1, drain
    assert {c["replica"] for c in drain["calls"]} == set(drain["replicas_before"]), drain
    assert drain["new_call_replica"], drain  # a call placed during the scale-down was answered
    for c in drain["calls"]:
        assert "error" not in c, c
        assert wer(SENTENCE, c["asr_text"]) <= 0.5, c
        assert c["tts_frames"] > 0 and c["hangup"] == "done", c
        # The call lived on past Serve's default 20 s grace after the scale-down began.
        assert c["ended_after_issue_s"] > 20, c
