"""HAProxy (Serve's direct ingress) against Serve's Python proxy, side by side in one run.

Each proxy runs in a Ray of its own (Serve reads the choice when it starts, so each run is
a child process of this script, `serve.proxy` set), alternating ray, haproxy, ray, haproxy...
for `--repeats` rounds so that the machine's drift hits both alike. In each:
- turns: N concurrent `/call` calls x R rounds (bench/run.py's callers: Piper speech, a
  reply by `tts`): end of speech -> `asrFinal`, and -> first reply audio, p50/p95;
- media plane: 16 and 32 calls streaming noise, VAD on, no ASR (bench/media_plane.py):
  CPU per call of every Ray process, gross and net of Ray's idle, and the proxy's part.

Run: .venv/bin/python bench/ingress_proxy.py [--calls 8] [--rounds 4] [--media-calls 16,32]
     [--seconds 15] [--repeats 2]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import subprocess
import sys
import tempfile
from dataclasses import asdict
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # run as a script: find `bench`

PROXIES = ("ray", "haproxy")


def measure_app(proxy: str, args: argparse.Namespace, idle_s: float = 5.0) -> dict:
    """One app's figures, in this (fresh) process: its own embedded Ray, deployed with
    `proxy`; turns, then the media plane. bench/serve_tuning.py measures through it too."""
    from bench.media_plane import measure_media_plane
    from bench.run import (
        arm_watchdog, behaviour_config, free_port, idle_ray_cpu_pct, make_caller_audio, one_round,
        refuse_other_cluster, run_level, start_server,
    )
    from voxray.cluster.ingress_proxy import chosen
    from voxray.cluster.local import shutdown
    from voxray.cluster.ray_start import serve_vars
    from voxray.config import VoxrayConfig

    refuse_other_cluster()
    config = VoxrayConfig()
    config.serve.proxy = proxy
    config.serve.host, config.serve.port = "127.0.0.1", free_port()
    config.admission.asr_latency_s = None  # past saturation on purpose: no call turned away
    config.admission.initial_limit = max([args.calls, *args.media_calls]) + 8
    url = f"ws://127.0.0.1:{config.serve.port}/call"
    audio = make_caller_audio()
    watchdog = arm_watchdog(900)
    try:
        start_server(behaviour_config(config, "new"))
        got = chosen(serve_vars())
        asyncio.run(one_round(url, audio))  # the models' one-off warm-up
        idle = asyncio.run(idle_ray_cpu_pct(idle_s))
        level = asyncio.run(run_level(url, audio, args.calls, args.rounds, seed=1, behaviour="new"))
        planes = [asdict(asyncio.run(measure_media_plane(url, n, args.seconds, idle_pct=idle, probe=False)))
                  for n in args.media_calls]
    finally:
        shutdown()
        watchdog.cancel()
    return {"proxy": got, "idle_pct": idle, "turns": asdict(level), "planes": planes}


def child(proxy: str, args: argparse.Namespace, out: Path) -> None:
    out.write_text(json.dumps(measure_app(proxy, args)))


def run_child(variant: str, args: argparse.Namespace, script: str = __file__) -> dict:
    """`script --child variant` in a process of its own (so a Ray of its own); its figures."""
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "result.json"
        cmd = [sys.executable, script, "--child", variant, "--out", str(out), "--calls", str(args.calls),
               "--rounds", str(args.rounds), "--media-calls", ",".join(map(str, args.media_calls)),
               "--seconds", str(args.seconds)]
        print(f"bench: {variant}: {' '.join(cmd[2:])}", file=sys.stderr, flush=True)
        proc = subprocess.run(cmd, cwd=ROOT, timeout=1200)
        if proc.returncode != 0 or not out.exists():
            raise RuntimeError(f"the {variant} run failed (exit {proc.returncode})")
        return json.loads(out.read_text())


def fmt(v: float | None, digits: int = 0) -> str:
    return "-" if v is None else f"{v:.{digits}f}"


def pooled_turns(runs: list[dict]) -> dict[str, float | None]:
    """p50/p95 over all these runs' turns together, as bench/run.py takes them per run."""
    from bench.run import pct

    pooled = {k: [v for r in runs for v in r["turns"][k]] for k in ("asr_ms", "tts_ms")}
    return {f"{k[:3]}_p{q}": pct(v, q) for k, v in pooled.items() for q in (50, 95)}


def table(runs: list[dict], calls: int) -> str:
    head = (f"{'proxy':<8} {'run':>3} {'asr p50':>8} {'asr p95':>8} {'audio p50':>9} {'audio p95':>9} "
            f"{'drop':>4}" + "".join(f" {f'{n} calls %/call':>16} {'net':>5} {'proxy%':>6}"
                                     for n in [p["calls"] for p in runs[0]["planes"]]))
    lines = [f"turns: {calls} calls; ms from the end of speech; media plane: % of one core per call "
             "(gross, net of Ray idle) and the proxy's own % of one core for all calls", head, "-" * len(head)]
    for i, r in enumerate(runs):
        t = r["turns"]
        row = (f"{r['proxy']:<8} {i // len(PROXIES) + 1:>3} {fmt(t['asr_p50_ms']):>8} {fmt(t['asr_p95_ms']):>8} "
               f"{fmt(t['tts_p50_ms']):>9} {fmt(t['tts_p95_ms']):>9} {t['dropped']:>4}")
        for p in r["planes"]:
            proxy_pct = p["by_role_pct"].get("proxy", 0.0)
            row += f" {fmt(p['cpu_pct_per_call'], 2):>16} {fmt(p['net_pct_per_call'], 2):>5} {proxy_pct:>6.0f}"
        lines.append(row)
    for proxy in PROXIES:
        mine = [r for r in runs if r["proxy"] == proxy]
        if not mine:
            continue
        t = pooled_turns(mine)
        row = (f"{proxy:<8} {'all':>3} {fmt(t['asr_p50']):>8} {fmt(t['asr_p95']):>8} {fmt(t['tts_p50']):>9} "
               f"{fmt(t['tts_p95']):>9} {sum(r['turns']['dropped'] for r in mine):>4}")
        for j in range(len(mine[0]["planes"])):
            gross = statistics.mean(r["planes"][j]["cpu_pct_per_call"] for r in mine)
            net = statistics.mean(r["planes"][j]["net_pct_per_call"] or 0.0 for r in mine)
            pr = statistics.mean(r["planes"][j]["by_role_pct"].get("proxy", 0.0) for r in mine)
            row += f" {gross:>16.2f} {net:>5.2f} {pr:>6.0f}"
        lines.append(row)
    return "\n".join(lines)


def app_args(description: str, variants, media_calls: str = "16,32") -> argparse.ArgumentParser:
    """The options of a bench that measures apps side by side through `measure_app`."""
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--calls", type=int, default=8, help="concurrent calls of the turn level (default 8)")
    p.add_argument("--rounds", type=int, default=4, help="turns per call (default 4)")
    p.add_argument("--media-calls", default=media_calls, help=f"media-plane levels (default {media_calls})")
    p.add_argument("--seconds", type=float, default=15.0, help="media-plane window (default 15)")
    p.add_argument("--repeats", type=int, default=2, help="runs of each variant, alternating (default 2)")
    p.add_argument("--child", choices=list(variants), help=argparse.SUPPRESS)
    p.add_argument("--out", help=argparse.SUPPRESS)
    return p


def parsed(p: argparse.ArgumentParser, argv: list[str] | None) -> argparse.Namespace:
    args = p.parse_args(argv)
    args.media_calls = [int(c) for c in args.media_calls.split(",") if c.strip()]
    return args


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    return parsed(app_args(__doc__.split("\n\n")[0], PROXIES), argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    if args.child:
        child(args.child, args, Path(args.out))
        return
    runs = [run_child(proxy, args) for _ in range(args.repeats) for proxy in PROXIES]
    print("== Ingress proxy: Serve's Python proxy (ray) vs HAProxy in front of direct-ingress replicas ==")
    print(table(runs, args.calls))


if __name__ == "__main__":
    main()
