"""Per-deployment Serve options derived from the config (replicas, autoscaling, draining).

Every deployment (ingress, vad, asr, tts) gets its `Scaling` section: a warm
minimum of replicas, autoscaling up to a maximum around a target load, and how
long a replica being scaled down may take to finish what it holds. Options left
None keep the deployment's own default (e.g. the ingress's `max_ongoing_requests`
of 200: one open WebSocket call is one ongoing request for its whole life).
"""

from __future__ import annotations

from voxray.config import Scaling, VoxrayConfig


def _scaling(s: Scaling) -> dict:
    opts: dict = {}
    if s.max_replicas <= s.min_replicas:
        opts["num_replicas"] = s.min_replicas
    else:
        opts["autoscaling_config"] = {
            "min_replicas": s.min_replicas,  # the warm minimum: call bursts do not wait for a cold start
            "max_replicas": s.max_replicas,
            "target_ongoing_requests": s.target_ongoing_requests,
            # Serve's defaults (30 s up, 600 s down) are slow for call bursts.
            "upscale_delay_s": s.upscale_delay_s,
            "downscale_delay_s": s.downscale_delay_s,
        }
    if s.max_ongoing_requests is not None:
        opts["max_ongoing_requests"] = s.max_ongoing_requests
    if s.max_replicas_per_node is not None:
        opts["max_replicas_per_node"] = s.max_replicas_per_node
    if s.graceful_shutdown_timeout_s is not None:
        opts["graceful_shutdown_timeout_s"] = s.graceful_shutdown_timeout_s
        # Check for the last request often, so an idle draining replica goes at once.
        opts["graceful_shutdown_wait_loop_s"] = 1.0
    return opts


def deployment_options(config: VoxrayConfig) -> dict[str, dict]:
    return {
        "ingress": _scaling(config.ingress),
        "vad": _scaling(config.vad),
        "asr": _scaling(config.asr),
        "tts": _scaling(config.tts),
    }
