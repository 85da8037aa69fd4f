"""Calls per core for the SIP media path: RTP in/out through the UA node, VAD on, ASR off.

sipp places N concurrent calls that stream real speech (Piper voice, PCMA) to a UA
node core running in this process (no Ray: the figure is the UA node's own cost).
Every call is answered through the same path an agent's `accept` takes; each runs
a MediaSession with Silero VAD (batched, in-process), the recognizer is a no-op, and
the bridge port sends a 20 ms frame back every 20 ms. CPU of this process (pjsua2
threads + the asyncio loop + VAD) is sampled over a steady window while all N
calls are up; sipp's own CPU is not counted.

    .venv/bin/python bench/sip_media.py            # N = 1, 2, 4
    .venv/bin/python bench/sip_media.py --calls 1 4 --window 8

The pjsua2-python wheel is built with PJSUA_MAX_CALLS = 4: one pjsua process holds at
most 4 concurrent calls (the 5th gets 486), so N stops at 4 here and "calls per core"
is the per-call CPU extrapolated.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import psutil

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("VOXRAY_LOG_LEVEL", "WARNING")

from voxray.media.messages import AsrResult, VadBatch, VadBatchResult  # noqa: E402
from voxray.media.vad_batcher import VadBatcher  # noqa: E402
from tests.sip_env import free_media_ports, free_udp_port  # noqa: E402


class VadOnlyServices:
    """Real Silero VAD (batched across calls, on a worker thread); ASR and TTS off."""

    def __init__(self) -> None:
        from voxray.deployments.silero import SileroBatch

        self.silero = SileroBatch()
        self.vad_windows = 0

        async def infer(batch: VadBatch) -> VadBatchResult:
            self.vad_windows += sum(len(c.pcm) // 1024 for c in batch.chunks)
            return VadBatchResult(results=await asyncio.to_thread(self.silero.run, batch.chunks))

        self.vad_batcher = VadBatcher(infer)

    async def vad(self, chunk):
        return await self.vad_batcher.submit(chunk)

    async def transcribe(self, req):
        return AsrResult(text="", provider="off")

    async def synthesize(self, req):
        return
        yield


def make_speech(workdir: Path) -> Path:
    from voxray.speech import piper_speech, write_wav

    pcm = np.concatenate([piper_speech("Hello, I need help with my account. Could you check my last bill?", 16000),
                          np.zeros(8000, np.int16)])
    src, out = workdir / "speech16k.wav", workdir / "speech_alaw.wav"
    write_wav(src, pcm)
    subprocess.run(["sox", str(src), "-r", "8000", "-c", "1", "-e", "a-law", str(out)], check=True)
    return out


async def run_level(core, endpoint, n: int, sip_port: int, speech: Path, workdir: Path,
                    window_s: float, services: VadOnlyServices) -> dict:
    from voxray.ua_node.sip.transport import SipTransport

    hold_ms = int((window_s + 5) * 1000)
    scenario = (ROOT / "bench/sip/uac_bench.xml").read_text()
    scenario = scenario.replace("@SPEECH@", str(speech)).replace("@HOLD_MS@", str(hold_ms))
    scen = workdir / f"uac_bench_{n}.xml"
    scen.write_text(scenario)
    sipp = subprocess.Popen(
        ["timeout", "-s", "KILL", str(int(hold_ms / 1000 + 60)), "sipp", "-sf", str(scen), "-i", "127.0.0.1",
         "-p", str(free_udp_port()), "-mp", str(free_media_ports()),
         "-m", str(n), "-l", str(n), "-r", "20", "-nostdin", "-trace_err", f"127.0.0.1:{sip_port}"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True, cwd=workdir)
    try:
        deadline = time.monotonic() + 30 + n
        while time.monotonic() < deadline:
            up = [c for c in core.calls.values() if isinstance(c.transport, SipTransport)
                  and c.transport.confirmed and not c.ended]
            if len(up) >= n:
                break
            await asyncio.sleep(0.2)
        else:
            raise RuntimeError(f"only {len(up)} of {n} calls came up")
        await asyncio.sleep(2.0)  # let jitter buffers and VAD settle
        proc = psutil.Process()
        frames0 = sum(c.transport.frames_in for c in up)
        vad0 = services.vad_windows
        cpu0, t0 = proc.cpu_times(), time.monotonic()
        await asyncio.sleep(window_s)
        cpu1, t1 = proc.cpu_times(), time.monotonic()
        frames1 = sum(c.transport.frames_in for c in up)
        speaking = sum(1 for c in up if c.session is not None)
        elapsed = t1 - t0
        cpu_s = (cpu1.user - cpu0.user) + (cpu1.system - cpu0.system)
        load = cpu_s / elapsed  # cores busy
        return {
            "calls": n, "cpu_cores": round(load, 3),
            "cpu_ms_per_call_s": round(1000 * load / n, 2),
            "calls_per_core": round(n / load, 1) if load > 0 else None,
            "frames_in_per_call_s": round((frames1 - frames0) / elapsed / n, 1),
            "vad_windows_per_call_s": round((services.vad_windows - vad0) / elapsed / n, 1),
            "sessions": speaking,
        }
    finally:
        # Let sipp end its calls with BYE (a killed peer would hold pjsua's few call slots
        # until the BYE transaction times out).
        try:
            await asyncio.to_thread(sipp.wait, hold_ms / 1000 + 30)
        except subprocess.TimeoutExpired:
            os.killpg(sipp.pid, 9)
            sipp.wait()
        for c in list(core.calls.values()):
            await core.end_call(c.call_id, "bench", "system")
        await asyncio.sleep(2.0)


async def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--calls", type=int, nargs="+", default=[1, 2, 4])
    ap.add_argument("--window", type=float, default=10.0, help="seconds measured per level")
    ap.add_argument("--json", help="also write the rows here")
    args = ap.parse_args()
    if not shutil.which("sipp"):
        sys.exit("sipp is needed (apt-get install sip-tester)")

    from voxray.protocol import commands as cmd
    from voxray.ua_node import sip as sipmod
    from voxray.ua_node.node import UaNodeCore

    workdir = Path(tempfile.mkdtemp(prefix="voxray-sip-bench-"))
    speech = make_speech(workdir)
    services = VadOnlyServices()
    core = UaNodeCore(services)
    sip_port = free_udp_port()
    # Every inbound call is answered the way an agent's accept is, without Serve in the way.
    await sipmod.register(core, {"enabled": True, "port": sip_port, "rtp_port": 26000, "rtp_port_range": 2000,
                                 "rules": [{"callee": "^sip:bench", "url": "http://127.0.0.1:9/unused"}]})
    endpoint = sipmod._endpoint

    async def auto_route(t, info, route):  # replaces the webhook: accept at once
        call = core.calls[t.call_id]
        await endpoint.incall.handle_command(call, cmd.Accept(option=cmd.CallOption(asr=None)))
    endpoint.inbound.route = auto_route

    rows = []
    try:
        for n in args.calls:
            row = await run_level(core, endpoint, n, sip_port, speech, workdir, args.window, services)
            rows.append(row)
            print(json.dumps(row), file=sys.stderr, flush=True)
    finally:
        await core.shutdown()
    cores = psutil.cpu_count(logical=True)
    print(f"\nSIP media path, VAD on, ASR off ({cores} logical cores, {args.window:.0f} s window per level)\n")
    print("| concurrent calls | CPU (cores) | CPU ms per call-second | calls per core "
          "| RTP frames in /call/s | VAD windows /call/s |")
    print("|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        print(f"| {r['calls']} | {r['cpu_cores']:.2f} | {r['cpu_ms_per_call_s']:.1f} | {r['calls_per_core']} "
              f"| {r['frames_in_per_call_s']} | {r['vad_windows_per_call_s']} |")
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    asyncio.run(main())
