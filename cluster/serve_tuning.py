"""Serve's own housekeeping, paced for a node that also carries calls: the Ray processes'
environment, set before Ray starts (Serve reads it at import), like the ingress proxy's.

With no calls a 2-core node's Ray processes took 30.8 % of a core with Serve's defaults and
23.2 % with these (bench/serve_tuning.py: the controller waking every 100 ms was 5.1 of it,
1.7 at 0.5 s; a replica ~1.2, ~0.9). Under the media plane's load the saving mostly does not
carry over (16 calls: 4.09 -> 3.94 % of a core each, within the noise). What it costs: the
controller notices a dead replica, starts an autoscaling step or applies a deploy up to
0.4 s later (a replica takes seconds to load its model anyway), and Serve's request metrics
reach Prometheus (scraped every 10 s or so) in 1 s steps.
"""

from __future__ import annotations

import os

DEFAULTS = {
    "RAY_SERVE_CONTROL_LOOP_INTERVAL_S": "0.5",  # Serve's default 0.1
    "RAY_SERVE_METRICS_EXPORT_INTERVAL_MS": "1000",  # Serve's default 100
}


def serve_tuning_env(environ: dict[str, str] | None = None) -> dict[str, str]:
    """DEFAULTS, with any the operator set kept as they are."""
    environ = os.environ if environ is None else environ
    return {k: environ.get(k, v) for k, v in DEFAULTS.items()}
