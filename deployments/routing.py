"""Which model replica a request goes to: fill one, keep the rest warm (a Serve request router).

Serve's default router spreads requests over the replicas (power of two choices). For
the batched models that is the wrong shape on a small node: two ASR replicas each
batching half the utterances run two Whisper decodes side by side on the same cores,
and on 2 cores 8 calls' turns came 20-40 % later than with one replica
(bench/replica_loss.py, README). The standby replica is there for when the first dies.

So requests go to the first replica, in an order every router agrees on (the replica
ids, sorted), while the requests it holds are fewer than `fill` (a model batch); past
that, to the least loaded. A replica that dies leaves the candidates and the next one in
the order takes its traffic at once. Autoscaled replicas past the standby take the
overflow the same way.
"""

from __future__ import annotations

from ray.serve.request_router import PendingRequest, RequestRouter, RunningReplica


def rank(replica_ids: list[str], queue_lens: dict[str, int | None], fill: int) -> list[list[str]]:
    """Ranks of replica ids to try in turn (the pure rule; Serve probes each rank).

    queue_lens: the requests each replica held when last seen (None: not known)."""
    ordered = sorted(replica_ids)
    for i, rid in enumerate(ordered):
        held = queue_lens.get(rid)
        if held is None or held < fill:
            # Below its fill (or not seen lately: Serve's probe will say): this one, and
            # the rest in order should it refuse.
            return [[rid]] + [[r] for r in ordered[i + 1:]] + [[r] for r in ordered[:i]]
    # All full: the least loaded first, as Serve's own router would pick.
    return [[r] for r in sorted(ordered, key=lambda r: queue_lens.get(r) or 0)]


class FillFirstRouter(RequestRouter):
    """`rank` over the running replicas, with the queue lengths Serve last probed."""

    def initialize_state(self, fill: int = 8, **kwargs) -> None:
        self.fill = fill

    async def choose_replicas(self, candidate_replicas: list[RunningReplica],
                              pending_request: PendingRequest | None = None) -> list[list[RunningReplica]]:
        if not candidate_replicas:
            return []
        by_id = {r.replica_id.unique_id: r for r in candidate_replicas}
        cache = self.replica_queue_len_cache
        lens = {rid: cache.get(r.replica_id) for rid, r in by_id.items()}
        return [[by_id[rid] for rid in tier] for tier in rank(list(by_id), lens, getattr(self, "fill", 8))]
