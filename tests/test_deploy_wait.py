"""When a deploy returns: cluster/deploy_wait.decide, fed Serve's and Ray's view."""

from voxray.cluster.deploy_wait import DeploymentProgress as P
from voxray.cluster.deploy_wait import Outcome, decide


def test_every_replica_running_is_ready():
    d = decide([P("Ingress", 2, 2), P("AsrDeployment", 1, 1)], elapsed_s=3, timeout_s=600)
    assert d.outcome is Outcome.READY and d.lines == []


def test_a_replica_that_needs_an_absent_node_is_not_waited_for():
    # `ray up`, head only: two ingress replicas at most one per node, one node up.
    d = decide([P("Ingress", 2, 1, unplaced=1), P("AsrDeployment", 1, 1)], elapsed_s=20, timeout_s=600)
    assert d.outcome is Outcome.PARTIAL
    assert d.lines == ["Ingress: 1 of 2 replicas running; 1 waits for a node to join"]


def test_replicas_still_loading_on_present_nodes_are_waited_for():
    d = decide([P("Ingress", 2, 1, unplaced=0), P("AsrDeployment", 1, 1)], elapsed_s=20, timeout_s=600)
    assert d.outcome is Outcome.WAIT


def test_nothing_serving_yet_is_waited_for_even_if_unplaced():
    # An ASR that only fits a GPU node that has not joined: the app cannot take a turn.
    d = decide([P("Ingress", 1, 1), P("AsrDeployment", 1, 0, unplaced=1)], elapsed_s=20, timeout_s=600)
    assert d.outcome is Outcome.WAIT


def test_the_wait_is_bounded_and_says_what_is_missing():
    d = decide([P("Ingress", 1, 1), P("AsrDeployment", 1, 0, unplaced=1, message="needs GPU: 1")],
               elapsed_s=601, timeout_s=600)
    assert d.outcome is Outcome.TIMEOUT
    assert d.lines == ["AsrDeployment: 0 of 1 replicas running; 1 waits for a node to join (needs GPU: 1)"]


def test_no_status_yet_waits_then_times_out():
    assert decide([], elapsed_s=1, timeout_s=600).outcome is Outcome.WAIT
    d = decide([], elapsed_s=600, timeout_s=600)
    assert d.outcome is Outcome.TIMEOUT and "did not appear" in d.lines[0]
