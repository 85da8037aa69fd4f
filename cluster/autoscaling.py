"""Per-deployment Serve options derived from the config (replicas, autoscaling, draining,
resources).

Every deployment (ingress, vad, asr, tts) gets its `Scaling` section: a warm
minimum of replicas, autoscaling up to a maximum around a target load, how
long a replica being scaled down may take to finish what it holds, and the CPUs and
GPUs each replica holds. Options left None keep the deployment's own default (e.g. the
ingress's `max_ongoing_requests` of 200: one open WebSocket call is one ongoing request
for its whole life).

`ray_actor_options` given to `.options()` replaces the decorator's whole dict (Serve
then puts num_cpus back to 1), so the resources are merged into what the deployment
declares in its `@serve.deployment`.
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping

from voxray.config import Scaling, VoxrayConfig

# Where each deployment class is, for the ray_actor_options its decorator declares.
DEPLOYMENT_CLASSES = {
    "ingress": ("voxray.deployments.ingress", "Ingress"),
    "vad": ("voxray.deployments.vad", "VadDeployment"),
    "asr": ("voxray.deployments.asr", "AsrDeployment"),
    "tts": ("voxray.deployments.tts", "TtsDeployment"),
}


def declared_actor_options(name: str) -> dict:
    """The ray_actor_options of a deployment's `@serve.deployment` (a copy)."""
    module, cls = DEPLOYMENT_CLASSES[name]
    return dict(getattr(importlib.import_module(module), cls).ray_actor_options or {})


def actor_options(s: Scaling, declared: dict) -> dict:
    """The decorator's ray_actor_options with the config's CPUs and GPUs put in."""
    opts = dict(declared)
    if s.num_gpus > 0:
        opts["num_gpus"] = s.num_gpus
    if s.num_cpus is not None:
        opts["num_cpus"] = s.num_cpus
    return opts


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


def deployment_options(config: VoxrayConfig, declared: Mapping[str, dict] | None = None) -> dict[str, dict]:
    """`.options()` keyword arguments per deployment. declared: the decorators' ray_actor_options
    by deployment (those missing are read from the classes, only where the config sets resources;
    with none set, ray_actor_options is left out and the decorator's stay)."""
    out = {}
    for name in DEPLOYMENT_CLASSES:
        s: Scaling = getattr(config, name)
        opts = _scaling(s)
        if s.num_gpus > 0 or s.num_cpus is not None:
            base = declared[name] if declared is not None and name in declared else declared_actor_options(name)
            opts["ray_actor_options"] = actor_options(s, base)
        out[name] = opts
    return out
