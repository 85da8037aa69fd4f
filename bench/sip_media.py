"""SIP calls per node: sipp callers of real speech into one node, VAD on, ASR off.

Two node layouts in one run, each on a fresh embedded single-node Ray with the app
deployed as a user would (`voxray serve`):

- **old**: one UA process is the node's SIP address (`transports.pool.front.kind =
  "none"`) and sends VAD batches to the VadDeployment (`media.vad_in_process = false`),
  as the UA node did before its worker pool; pjsua2's build limit (4 calls per process)
  caps the node.
- **new**: the default, a pool of SIP worker processes (4 calls each) behind the node's
  Kamailio front, which spreads INVITEs by call load.

For each level sipp places N concurrent calls (PCMA, 20 ms RTP, a Piper sentence looped);
the webhook hands each call to an agent (a WebSocket client in this process) that
accepts it with `asr: {"provider": "none"}`, so VAD runs and nothing is transcribed.
Over a steady window: calls answered, RTP frames in and out per call per second (50
expected, counted by the workers' bridge ports), CPU per call of the UA processes
(workers, node, Kamailio) and, apart, of the ingress and the VAD replica; RSS of the UA
processes per call.

    .venv/bin/python bench/sip_media.py                  # 8, 32, 64 calls; old and new
    .venv/bin/python bench/sip_media.py --calls 8 --window 8 --layouts new
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
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

from tests.sip_env import free_media_ports, free_tcp_port, free_udp_port  # noqa: E402

LAYOUTS = {
    # One UA process, pjsua2's 4 calls, VAD through the VadDeployment: the node as it was.
    "old": {"pool": {"front": {"kind": "none"}}, "media": {"vad_in_process": False}},
    # The defaults: SIP workers behind Kamailio, VAD in the workers.
    "new": {"pool": {}, "media": {}},
}


def make_speech(workdir: Path) -> Path:
    from voxray.speech import piper_speech, write_wav

    pcm = np.concatenate([piper_speech("Hello, I need help with my account. Could you check my last bill?", 16000),
                          np.zeros(8000, np.int16)])
    src, out = workdir / "speech16k.wav", workdir / "speech_alaw.wav"
    write_wav(src, pcm)
    subprocess.run(["sox", str(src), "-r", "8000", "-c", "1", "-e", "a-law", str(out)], check=True)
    return out


def app_config():
    """The app's defaults on free loopback ports, as a bench deploys it."""
    from voxray.config import VoxrayConfig

    config = VoxrayConfig()
    config.serve.port = free_tcp_port()
    config.serve.host = "127.0.0.1"
    return config


@contextlib.asynccontextmanager
async def deployed(config):
    """The app on a fresh embedded Ray (8 logical CPUs, as the tests give it); yields the
    node's UA node and takes everything down after."""
    from voxray.cluster.local import deploy, shutdown
    from voxray.cluster.placement import local_ua_node
    from voxray.cluster.ray_start import start_ray

    start_ray(num_cpus=8, dashboard=False, log=lambda *_: None)
    try:
        await asyncio.to_thread(deploy, config, log=lambda *_: None)
        yield local_ua_node(config.serve.app_name, config.media_dict(), config.transports.model_dump(),
                            config.admission.model_dump())
    finally:
        await asyncio.to_thread(shutdown)


class Agents:
    """The webhook and one agent per inbound call: accept with ASR off, hold, hang up."""

    def __init__(self, server: str) -> None:
        self.server = server
        self.answered: set[str] = set()
        self.tasks: list[asyncio.Task] = []
        self.stop = asyncio.Event()
        self.port = free_tcp_port()
        self._server: asyncio.Server | None = None

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._http, "127.0.0.1", self.port)

    async def _http(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = await reader.readuntil(b"\r\n\r\n")
        length = next((int(line.split(b":", 1)[1]) for line in head.split(b"\r\n")
                       if line.lower().startswith(b"content-length:")), 0)
        body = json.loads(await reader.readexactly(length)) if length else {}
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
        await writer.drain()
        writer.close()
        if body.get("call_id"):
            self.tasks.append(asyncio.create_task(self._agent(body["call_id"])))

    async def _agent(self, call_id: str) -> None:
        import websockets

        async with websockets.connect(f"ws://{self.server}/call/sip?id={call_id}", max_size=None) as ws:
            async def until(name: str) -> None:
                async for raw in ws:
                    if isinstance(raw, str) and json.loads(raw).get("event") == name:
                        return

            await asyncio.wait_for(until("incoming"), 30)
            await ws.send(json.dumps({"command": "accept", "option": {"asr": {"provider": "none"}}}))
            await asyncio.wait_for(until("answer"), 30)
            self.answered.add(call_id)
            reading = asyncio.create_task(until("hangup"))
            stopping = asyncio.create_task(self.stop.wait())
            await asyncio.wait({reading, stopping}, return_when=asyncio.FIRST_COMPLETED)
            if not reading.done():
                await ws.send(json.dumps({"command": "hangup"}))
                try:
                    await asyncio.wait_for(reading, 10)
                except (asyncio.TimeoutError, Exception):
                    pass
            stopping.cancel()

    async def finish(self) -> None:
        self.stop.set()
        await asyncio.gather(*self.tasks, return_exceptions=True)
        self.tasks.clear()
        self.answered.clear()
        self.stop = asyncio.Event()

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()


class ConversationAgents(Agents):
    """Agents that hold a whole conversation: accept (real ASR), hear the caller's sentence,
    answer it with TTS, hang up."""

    SENTENCE = "Hello, I need help with my account. Could you check my last bill?"

    def __init__(self, server: str) -> None:
        super().__init__(server)
        self.rows: list[dict] = []

    async def _agent(self, call_id: str) -> None:
        import websockets

        from tests.test_models import wer

        row = {"answered": False, "wer": None, "replied": False, "hung_up": False}
        self.rows.append(row)
        async with websockets.connect(f"ws://{self.server}/call/sip?id={call_id}", max_size=None) as ws:
            async def until(name: str, **match) -> dict:
                async for raw in ws:
                    if isinstance(raw, str):
                        event = json.loads(raw)
                        if event.get("event") == name and all(event.get(k) == v for k, v in match.items()):
                            return event
                raise ConnectionError(f"socket closed before {name}")

            await asyncio.wait_for(until("incoming"), 60)
            await ws.send(json.dumps({"command": "accept", "option": {}}))
            await asyncio.wait_for(until("answer"), 60)
            row["answered"] = True
            final = await asyncio.wait_for(until("asrFinal"), 180)
            row["wer"] = wer(self.SENTENCE, final["text"])
            await ws.send(json.dumps({"command": "tts", "text": "Sure, let me check your last bill.",
                                      "playId": "r1"}))
            await asyncio.wait_for(until("trackEnd", playId="r1"), 120)
            row["replied"] = True
            await ws.send(json.dumps({"command": "hangup"}))
            await asyncio.wait_for(until("hangup"), 30)
            row["hung_up"] = True


async def run_conversations(n: int, speech: Path, workdir: Path) -> dict:
    """N concurrent inbound calls of real speech into a node with the default configuration."""
    config = app_config()
    agents = ConversationAgents(f"127.0.0.1:{config.serve.port}")
    sip_port = free_udp_port()
    config.transports.sip = config.transports.sip.model_validate({
        "enabled": True, "bind": "127.0.0.1", "port": sip_port, "max_calls": n,
        "webhook_url": f"http://127.0.0.1:{agents.port}/hook"})
    async with deployed(config):
        try:
            await agents.start()
            scen = workdir / "uac_conversation.xml"
            scen.write_text((ROOT / "bench/sip/uac_conversation.xml").read_text().replace("@SPEECH@", str(speech)))
            t0 = time.monotonic()
            sipp = await asyncio.create_subprocess_exec(
                "timeout", "-s", "KILL", "400", "sipp", "-sf", str(scen), "-i", "127.0.0.1",
                "-p", str(free_udp_port()), "-mp", str(free_media_ports(20000, 60000)), "-m", str(n), "-l", str(n),
                "-r", "20", "-nostdin", f"127.0.0.1:{sip_port}", stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL, cwd=workdir)
            rc = await sipp.wait()
            elapsed = time.monotonic() - t0
            await asyncio.gather(*agents.tasks, return_exceptions=True)
        finally:
            await agents.close()
    rows = agents.rows
    wers = sorted(r["wer"] for r in rows if r["wer"] is not None)
    return {"calls": n, "answered": sum(r["answered"] for r in rows), "transcribed": len(wers),
            "median_wer": round(wers[len(wers) // 2], 2) if wers else None,
            "replied": sum(r["replied"] for r in rows), "hung_up": sum(r["hung_up"] for r in rows),
            "sipp_ok": rc == 0, "seconds": round(elapsed, 1)}


def _procs(pids: list[int]) -> list[psutil.Process]:
    out = []
    for pid in pids:
        try:
            out.append(psutil.Process(pid))
        except psutil.NoSuchProcess:
            pass
    return out


def _kamailios(parent: int) -> list[psutil.Process]:
    try:
        return [p for p in psutil.Process(parent).children(recursive=True) if p.name() == "kamailio"]
    except psutil.NoSuchProcess:
        return []


def _replicas(tag: str) -> list[psutil.Process]:
    found = []
    for p in psutil.process_iter(["cmdline"]):
        try:
            if any(tag in part for part in (p.info["cmdline"] or [])):
                found.append(p)
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            pass
    return found


def _total(procs: list[psutil.Process], measure) -> float:
    """measure(p) summed over the processes still alive."""
    total = 0.0
    for p in procs:
        try:
            total += measure(p)
        except psutil.NoSuchProcess:
            pass
    return total


def _cpu(procs: list[psutil.Process]) -> float:
    return _total(procs, lambda p: sum(p.cpu_times()[:2]))  # user + system seconds


def _rss(procs: list[psutil.Process]) -> int:
    return int(_total(procs, lambda p: p.memory_info().rss))


async def _ua_processes(node) -> list[psutil.Process]:
    info = await node.ready.remote()
    node_pid = await node.pid.remote()
    return _procs([w["pid"] for w in info["workers"].values() if w["role"] == "sip"] + [node_pid]) + \
        _kamailios(node_pid)


async def idle_cores(node, window_s: float) -> float:
    """What the node's UA processes cost with no call up (pings, pj polling, Ray's own)."""
    await asyncio.sleep(3.0)
    procs = await _ua_processes(node)
    cpu0, t0 = _cpu(procs), time.monotonic()
    await asyncio.sleep(window_s)
    return round((_cpu(procs) - cpu0) / (time.monotonic() - t0), 3)


async def run_level(node, agents: Agents, n: int, sip_port: int, speech: Path, workdir: Path,
                    window_s: float) -> dict:
    hold_ms = int((window_s + 30 + n / 4) * 1000)  # every call stays up through the window
    scenario = (ROOT / "bench/sip/uac_bench.xml").read_text()
    scen = workdir / f"uac_bench_{n}.xml"
    scen.write_text(scenario.replace("@SPEECH@", str(speech)).replace("@HOLD_MS@", str(hold_ms)))
    sipp = subprocess.Popen(
        ["timeout", "-s", "KILL", str(int(hold_ms / 1000 + 60)), "sipp", "-sf", str(scen), "-i", "127.0.0.1",
         "-p", str(free_udp_port()), "-mp", str(free_media_ports(20000, 60000)),
         "-m", str(n), "-l", str(n), "-r", "20", "-nostdin", f"127.0.0.1:{sip_port}"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True, cwd=workdir)
    try:
        # Until all are answered, or no more are (refused: the old layout's limit).
        deadline = time.monotonic() + 20 + n / 4
        seen, changed = 0, time.monotonic()
        while time.monotonic() < deadline and len(agents.answered) < n:
            if len(agents.answered) != seen:
                seen, changed = len(agents.answered), time.monotonic()
            elif time.monotonic() - changed > 5 and time.monotonic() > deadline - 15 - n / 4 + n / 20:
                break
            await asyncio.sleep(0.2)
        await asyncio.sleep(3.0)  # jitter buffers and VAD warm up
        answered = len(agents.answered)
        info = await node.ready.remote()
        handles = [await node.worker.remote(k) for k, w in info["workers"].items() if w["role"] == "sip"]
        ua = await _ua_processes(node)
        ingress, vad = _replicas("Ingress"), _replicas("VadDeployment")
        stats0 = await asyncio.gather(*(h.media_stats.remote() for h in handles))
        cpu0 = (_cpu(ua), _cpu(ingress), _cpu(vad))
        t0 = time.monotonic()
        await asyncio.sleep(window_s)
        cpu1 = (_cpu(ua), _cpu(ingress), _cpu(vad))
        elapsed = time.monotonic() - t0
        stats1 = await asyncio.gather(*(h.media_stats.remote() for h in handles))
        rss = _rss(ua)
        live = sum(s["calls"] for s in stats1)
        per = max(answered, 1)
        fin = sum(s["frames_in"] for s in stats1) - sum(s["frames_in"] for s in stats0)
        fout = sum(s["frames_out"] for s in stats1) - sum(s["frames_out"] for s in stats0)
        ua_load, ingress_load, vad_load = ((b - a) / elapsed for a, b in zip(cpu0, cpu1, strict=True))
        return {
            "calls": n, "answered": answered, "live": live, "ua_processes": len(ua),
            "frames_in_per_call_s": round(fin / elapsed / per, 1),
            "frames_out_per_call_s": round(fout / elapsed / per, 1),
            "ua_cpu_pct_per_call": round(100 * ua_load / per, 2),
            "ingress_cpu_pct_per_call": round(100 * ingress_load / per, 2),
            "vad_cpu_pct_per_call": round(100 * vad_load / per, 2),
            "ua_cores": round(ua_load, 2),
            "ua_rss_mb": round(rss / 2**20), "ua_rss_mb_per_call": round(rss / 2**20 / per, 1),
        }
    finally:
        await agents.finish()
        try:
            await asyncio.to_thread(sipp.wait, 30)
        except subprocess.TimeoutExpired:
            os.killpg(sipp.pid, 9)
            sipp.wait()
        await asyncio.sleep(3.0)


async def run_layout(name: str, levels: list[int], window_s: float, speech: Path, workdir: Path) -> list[dict]:
    config = app_config()
    config.admission.asr_latency_s = None
    agents = Agents(f"127.0.0.1:{config.serve.port}")
    sip_port = free_udp_port()
    top = max(levels)
    config.transports.sip = config.transports.sip.model_validate({
        "enabled": True, "bind": "127.0.0.1", "port": sip_port, "rtp_port": 30000, "rtp_port_range": 8000,
        "max_calls": top, "webhook_url": f"http://127.0.0.1:{agents.port}/hook", "answer_timeout_s": 30,
    })
    config.transports.pool = config.transports.pool.model_validate({"webrtc_workers": 0, **LAYOUTS[name]["pool"]})
    config.media = config.media.model_copy(update=LAYOUTS[name]["media"])
    rows = []
    async with deployed(config) as node:
        try:
            await agents.start()
            idle = await idle_cores(node, window_s)
            print(json.dumps({"layout": name, "idle_ua_cores": idle}), file=sys.stderr, flush=True)
            for n in levels:
                row = {"layout": name, **await run_level(node, agents, n, sip_port, speech, workdir, window_s)}
                rows.append(row)
                print(json.dumps(row), file=sys.stderr, flush=True)
        finally:
            await agents.close()
    return rows


async def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--calls", type=int, nargs="+", default=[8, 32, 64])
    ap.add_argument("--layouts", nargs="+", default=["old", "new"], choices=sorted(LAYOUTS))
    ap.add_argument("--window", type=float, default=10.0, help="seconds measured per level")
    ap.add_argument("--json", help="also write the rows here")
    ap.add_argument("--conversations", type=int, metavar="N",
                    help="instead: N concurrent inbound calls of speech into a node with the default "
                         "configuration, each answered, transcribed, replied to and hung up by an agent")
    args = ap.parse_args()
    for tool in ("sipp", "sox"):
        if not shutil.which(tool):
            sys.exit(f"{tool} is needed (apt-get install sip-tester sox)")
    workdir = Path(tempfile.mkdtemp(prefix="voxray-sip-bench-"))
    speech = make_speech(workdir)
    if args.conversations:
        r = await run_conversations(args.conversations, speech, workdir)
        print(json.dumps(r), file=sys.stderr)
        print("\n| concurrent calls | answered | transcribed (median WER) | replied to (TTS) | hung up by the agent "
              "| every caller's scenario passed | seconds |")
        print("|---:|---:|---|---:|---:|---|---:|")
        print(f"| {r['calls']} | {r['answered']} | {r['transcribed']} ({r['median_wer']}) | {r['replied']} "
              f"| {r['hung_up']} | {'yes' if r['sipp_ok'] else 'no'} | {r['seconds']} |")
        return
    rows = []
    for layout in args.layouts:
        rows += await run_layout(layout, args.calls, args.window, speech, workdir)
    cores = psutil.cpu_count(logical=True)
    print(f"\nSIP calls into one node: sipp speech (PCMA 20 ms), VAD on, ASR off ({cores} logical cores, "
          f"{args.window:.0f} s window per level)\n")
    print("| layout | calls placed | answered | UA processes | RTP frames in / out per call-s "
          "| UA CPU % of a core per call | ingress % | VAD % | UA RSS MB (per call) |")
    print("|---|---:|---:|---:|---|---:|---:|---:|---|")
    for r in rows:
        print(f"| {r['layout']} | {r['calls']} | {r['answered']} | {r['ua_processes']} "
              f"| {r['frames_in_per_call_s']} / {r['frames_out_per_call_s']} | {r['ua_cpu_pct_per_call']} "
              f"| {r['ingress_cpu_pct_per_call']} | {r['vad_cpu_pct_per_call']} "
              f"| {r['ua_rss_mb']} ({r['ua_rss_mb_per_call']}) |")
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    asyncio.run(main())
