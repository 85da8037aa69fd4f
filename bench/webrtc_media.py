"""WebRTC calls per node: aiortc callers into one node, each transcribed and answered.

Two node layouts in one run, each on a fresh embedded single-node Ray with the app
deployed as a user would:

- **old**: one WebRTC worker process, VAD through the VadDeployment (how the UA node ran
  before the worker pool: one process for every call, a Serve handle call per VAD batch);
- **new**: the defaults, with one WebRTC worker per core (2 here) and VAD in the workers.

For each level N aiortc peers (in this process) call `/call/webrtc` at once; each says
a Piper sentence, waits for its `asrFinal`, gets a spoken reply (`tts`) and must hear it.
Then, with every call up and silence flowing both ways, CPU is sampled over a window:
the WebRTC worker processes per call, and the peers (this process) apart.

    .venv/bin/python bench/webrtc_media.py                 # 4, 8, 16 calls; old and new
    .venv/bin/python bench/webrtc_media.py --calls 4 --layouts new
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import time
from pathlib import Path

import numpy as np
import psutil

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("VOXRAY_LOG_LEVEL", "WARNING")

from bench.sip_media import _cpu, _procs, _replicas, app_config, deployed  # noqa: E402

SENTENCE = "I would like to book a table for two at seven."
LAYOUTS = {
    "old": {"pool": {"webrtc_workers": 1}, "media": {"vad_in_process": False}},
    "new": {"pool": {"webrtc_workers": 2}, "media": {}},
}


async def one_call(server: str, speech: np.ndarray, results: dict, up: asyncio.Event, i: int):
    from tests.rtcpeer import RtcPeer
    from tests.test_models import wer
    from tests.wsclient import CallClient

    peer = RtcPeer(np.concatenate([np.zeros(16000, np.int16), speech]))
    client = await CallClient.connect(f"ws://{server}/call/webrtc?id=rtc{i}")
    row = {"answered": False, "wer": None, "heard": False}
    results[i] = row
    try:
        await client.send({"command": "invite", "option": {"caller": f"bench{i}", "offer": await peer.offer()}})
        answer = await client.wait_for("answer", timeout=60)
        await peer.accept(answer["sdp"])
        row["answered"] = True
        final = await client.wait_for("asrFinal", timeout=180)
        row["wer"] = wer(SENTENCE, final["text"])
        n, heard_from = len(client.events), len(peer.heard)
        await client.send({"command": "tts", "text": "Sure, a table for two at seven.", "playId": "r1"})
        await client.wait_for("trackEnd", timeout=120, after=n, playId="r1")
        await asyncio.sleep(0.5)
        heard = peer.heard_since(heard_from)
        row["heard"] = bool(heard.size) and float(np.abs(heard.astype(np.int32)).max()) > 3000
        row["held"] = True
        await up.wait()  # held up for the CPU window
    finally:
        await client.close()
        await peer.close()


async def run_level(server: str, node, n: int, speech: np.ndarray, window_s: float) -> dict:
    results: dict[int, dict] = {}
    up = asyncio.Event()
    t0 = time.monotonic()
    tasks = [asyncio.create_task(one_call(server, speech, results, up, i)) for i in range(n)]
    try:
        def settled() -> bool:  # every conversation done (held up) or failed
            return all(t.done() or results.get(i, {}).get("held") for i, t in enumerate(tasks))

        deadline = time.monotonic() + 240
        while time.monotonic() < deadline and not settled():
            await asyncio.sleep(0.5)
        turns_s = time.monotonic() - t0
        info = await node.ready.remote()
        workers = _procs([w["pid"] for w in info["workers"].values() if w["role"] == "webrtc"])
        ingress, me = _replicas("Ingress"), [psutil.Process()]
        await asyncio.sleep(2.0)
        c0, t1 = (_cpu(workers), _cpu(ingress), _cpu(me)), time.monotonic()
        await asyncio.sleep(window_s)
        c1, elapsed = (_cpu(workers), _cpu(ingress), _cpu(me)), time.monotonic() - t1
    finally:
        up.set()
        await asyncio.gather(*tasks, return_exceptions=True)
    answered = sum(1 for r in results.values() if r["answered"])
    per = max(answered, 1)
    worker_load, ingress_load, peers_load = ((b - a) / elapsed for a, b in zip(c0, c1, strict=True))
    wers = sorted(r["wer"] for r in results.values() if r["wer"] is not None)
    return {
        "calls": n, "answered": answered, "transcribed": len(wers),
        "median_wer": round(wers[len(wers) // 2], 2) if wers else None,
        "heard_reply": sum(1 for r in results.values() if r["heard"]),
        "turns_s": round(turns_s, 1), "worker_processes": len(workers),
        "worker_cpu_pct_per_call": round(100 * worker_load / per, 1),
        "ingress_cpu_pct_per_call": round(100 * ingress_load / per, 2),
        "peers_cpu_pct_per_call": round(100 * peers_load / per, 1),
    }


async def run_layout(name: str, levels: list[int], window_s: float, speech: np.ndarray) -> list[dict]:
    config = app_config()
    config.admission.asr_latency_s = None
    config.transports.pool = config.transports.pool.model_validate(LAYOUTS[name]["pool"])
    config.media = config.media.model_copy(update=LAYOUTS[name]["media"])
    rows = []
    async with deployed(config) as node:
        server = f"127.0.0.1:{config.serve.port}"
        for n in levels:
            row = {"layout": name, **await run_level(server, node, n, speech, window_s)}
            rows.append(row)
            print(json.dumps(row), file=sys.stderr, flush=True)
            await asyncio.sleep(3.0)
    return rows


async def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--calls", type=int, nargs="+", default=[4, 8, 16])
    ap.add_argument("--layouts", nargs="+", default=["old", "new"], choices=sorted(LAYOUTS))
    ap.add_argument("--window", type=float, default=10.0, help="seconds of CPU sampled per level")
    ap.add_argument("--json", help="also write the rows here")
    args = ap.parse_args()
    from voxray.speech import piper_speech

    speech = piper_speech(SENTENCE, 16000)
    rows = []
    for layout in args.layouts:
        rows += await run_layout(layout, args.calls, args.window, speech)
    cores = psutil.cpu_count(logical=True)
    print(f"\nWebRTC calls into one node: aiortc peers, Piper speech, real ASR and TTS ({cores} logical cores, "
          f"{args.window:.0f} s CPU window per level with every call up)\n")
    print("| layout | calls | answered | transcribed (median WER) | heard the reply | all turns done (s) "
          "| worker processes | worker CPU % of a core per call | ingress % | peers % (this process) |")
    print("|---|---:|---:|---|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        print(f"| {r['layout']} | {r['calls']} | {r['answered']} | {r['transcribed']} ({r['median_wer']}) "
              f"| {r['heard_reply']} | {r['turns_s']} | {r['worker_processes']} | {r['worker_cpu_pct_per_call']} "
              f"| {r['ingress_cpu_pct_per_call']} | {r['peers_cpu_pct_per_call']} |")
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    asyncio.run(main())
