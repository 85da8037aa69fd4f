"""Serve's housekeeping pace (cluster/serve_tuning.py) against Serve's own defaults, side by
side in one run.

Serve reads the pace when its processes start, so each variant runs in a Ray of its own
(a child process, as bench/ingress_proxy.py does for the proxies), alternating serve,
voxray, serve, voxray... for `--repeats` rounds so that the machine's drift hits both:
- "serve": the controller's loop every 0.1 s, replicas exporting metrics every 100 ms
  (set as an operator would, in the environment before Ray starts);
- "voxray": the defaults, 0.5 s and 1 s.
In each: Ray's idle CPU (all Ray processes, no call, `--idle-seconds`), 8 calls' turns
(end of speech -> `asrFinal` and -> first reply audio) and the `/call` media plane at 16
calls (bench/media_plane.py: % of one core per call, gross and net of the idle).

`--variants voxray,oneloop` compares voxray's defaults with Serve's one-loop replicas
(part of `RAY_SERVE_THROUGHPUT_OPTIMIZED`): each replica's user code, and the router of
its handle calls, on the replica's main event loop instead of a thread and loop each, so a
WebSocket message or a handle call crosses no thread on its way ("code loop": own/main).

Run: .venv/bin/python bench/serve_tuning.py [--variants serve,voxray] [--calls 8] [--rounds 4]
     [--media-calls 16] [--seconds 15] [--idle-seconds 20] [--repeats 2]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # run as a script: find `bench`

from bench.ingress_proxy import app_args, fmt, measure_app, parsed, pooled_turns, run_child  # noqa: E402
from bench.run import variant_names  # noqa: E402

SERVE_DEFAULTS = {"RAY_SERVE_CONTROL_LOOP_INTERVAL_S": "0.1", "RAY_SERVE_METRICS_EXPORT_INTERVAL_MS": "100"}
# Serve's own defaults are "1" for both: a thread and loop each for user code and for the router.
ONE_LOOP = {"RAY_SERVE_RUN_USER_CODE_IN_SEPARATE_THREAD": "0", "RAY_SERVE_RUN_ROUTER_IN_SEPARATE_LOOP": "0"}
VARIANTS = {"serve": SERVE_DEFAULTS, "voxray": {}, "oneloop": ONE_LOOP}
DEFAULT_VARIANTS = "serve,voxray"


def child(variant: str, args: argparse.Namespace, out: Path) -> None:
    from voxray.cluster.serve_tuning import serve_tuning_env

    os.environ.update(VARIANTS[variant])  # before Ray starts; start_ray keeps an operator's values
    result = measure_app("haproxy", args, idle_s=args.idle_seconds)
    one_loop = all(os.environ.get(k) == v for k, v in ONE_LOOP.items())
    out.write_text(json.dumps({**result, "variant": variant, "env": serve_tuning_env(), "one_loop": one_loop}))


def table(runs: list[dict]) -> str:
    n = runs[0]["planes"][0]["calls"] if runs[0]["planes"] else 0
    head = (f"{'variant':<8} {'run':>3} {'loop s':>6} {'export ms':>9} {'code loop':>9} {'idle%':>6} {'asr p50':>8} "
            f"{'asr p95':>8} "
            f"{'audio p50':>9} {'audio p95':>9} {f'{n} calls %/call':>16} {'net':>5}")
    lines = [head, "-" * len(head)]
    variants = list(dict.fromkeys(r["variant"] for r in runs))
    for i, r in enumerate(runs):
        t, p, env = r["turns"], (r["planes"] or [{}])[0], r["env"]
        loop = "main" if r.get("one_loop") else "own"
        lines.append(f"{r['variant']:<8} {i // len(variants) + 1:>3} {env['RAY_SERVE_CONTROL_LOOP_INTERVAL_S']:>6} "
                     f"{env['RAY_SERVE_METRICS_EXPORT_INTERVAL_MS']:>9} {loop:>9} {r['idle_pct']:>6.1f} "
                     f"{fmt(t['asr_p50_ms']):>8} {fmt(t['asr_p95_ms']):>8} {fmt(t['tts_p50_ms']):>9} "
                     f"{fmt(t['tts_p95_ms']):>9} {fmt(p.get('cpu_pct_per_call'), 2):>16} "
                     f"{fmt(p.get('net_pct_per_call'), 2):>5}")
    for variant in variants:
        mine = [r for r in runs if r["variant"] == variant]
        t = pooled_turns(mine)
        planes = [r["planes"][0] for r in mine if r["planes"]]
        lines.append(f"{variant:<8} {'all':>3} {'':>6} {'':>9} {'':>9} "
                     f"{statistics.mean(r['idle_pct'] for r in mine):>6.1f} "
                     f"{fmt(t['asr_p50']):>8} {fmt(t['asr_p95']):>8} {fmt(t['tts_p50']):>9} {fmt(t['tts_p95']):>9} "
                     f"{statistics.mean(p['cpu_pct_per_call'] for p in planes):>16.2f} "
                     f"{statistics.mean(p['net_pct_per_call'] or 0.0 for p in planes):>5.2f}")
    return "\n".join(lines)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = app_args(__doc__.split("\n\n")[0], VARIANTS, media_calls="16")
    p.add_argument("--idle-seconds", type=float, default=20.0, help="idle window (default 20)")
    p.add_argument("--variants", default=DEFAULT_VARIANTS,
                   help=f"which of {', '.join(VARIANTS)}, alternating in this order (default {DEFAULT_VARIANTS})")
    args = parsed(p, argv)
    args.variants = variant_names(p, args.variants, VARIANTS)
    if not args.variants:
        p.error("--variants needs at least one")
    args.media_calls = args.media_calls[:1]  # the table has one media-plane column
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    if args.child:
        child(args.child, args, Path(args.out))
        return
    runs = [run_child(v, args, script=__file__) for _ in range(args.repeats) for v in args.variants]
    print(f"== Serve's settings: {' vs '.join(args.variants)} (each in a Ray of its own) ==")
    print("turns: ms from the end of speech; idle and media plane: % of one core (all Ray processes)")
    print(table(runs))


if __name__ == "__main__":
    main()
