"""Which reason a call ends with when its media's process or node is gone (no cluster)."""

from ray.exceptions import ActorDiedError, ActorUnavailableError, RayActorError

from voxray.deployments.remote_media import lost_reason


def test_a_dead_node_reads_as_node_lost_and_a_dead_process_as_worker_lost():
    gone = RayActorError(error_msg="The actor died because its node has died. Node Id: 3f2a")
    assert lost_reason(gone) == "node_lost"
    assert lost_reason(ActorDiedError()) == "ua_worker_lost"
    assert lost_reason(ActorUnavailableError("restarting", b"\0" * 16)) == "ua_worker_lost"
