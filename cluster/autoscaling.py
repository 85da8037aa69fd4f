"""Per-deployment Serve options derived from the config (replicas, autoscaling)."""

from __future__ import annotations

from voxray.config import Scaling, VoxrayConfig


def _scaling(s: Scaling) -> dict:
    if s.max_replicas <= s.min_replicas:
        return {"num_replicas": s.min_replicas}
    return {
        "autoscaling_config": {
            "min_replicas": s.min_replicas,  # the warm minimum: call bursts do not wait for a cold start
            "max_replicas": s.max_replicas,
            "target_ongoing_requests": s.target_ongoing_requests,
            "upscale_delay_s": 5,
            "downscale_delay_s": 120,
        }
    }


def deployment_options(config: VoxrayConfig) -> dict[str, dict]:
    return {
        "ingress": _scaling(config.ingress),
        "vad": _scaling(config.vad),
        "asr": _scaling(config.asr),
        "tts": _scaling(config.tts),
    }
