"""Crash hunt for the UA node process: calls set up and torn down in a loop, gc.collect() between.

Each run is a child process holding a UA node core as the Ray actor does (aiortc
and, when SIP is loaded, pjsua2 in one process; real Silero VAD; no Ray), with
faulthandler dumping every thread on a fatal signal. It goes through the paths:

- `webrtc`:     an aiortc caller offers, the node answers, ICE/DTLS connect, audio flows, hang up;
- `webrtc-bad`: offers the node must refuse (SAVPF/DTLS mismatches, no audio, garbage, truncated);
- `sip-in`:     sipp calls the node, the agent's `accept` answers, sipp hangs up;
- `sip-out`:    the node calls a sipp UAS, the answer comes back, the node hangs up;
- `mixed`:      all four at once.

A child that dies of a signal is a crash: its exit and the fatal-error dump are shown.
`--old-lifetime` runs the SIP paths as before the fix (pjsua2 objects freed by Python's
GC) side by side; `--port-race` is the 40-line core of the bug on the bare bridge.

    .venv/bin/python bench/ua_stress.py                        # 1000 per path, SIP loaded and not
    .venv/bin/python bench/ua_stress.py --calls 100 --old-lifetime --port-race
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("VOXRAY_LOG_LEVEL", "ERROR")

PATHS = ("webrtc", "webrtc-bad", "sip-in", "sip-out", "mixed")
SIP_PATHS = ("sip-in", "sip-out")
CONCURRENCY = 4  # pjsua2-python's compile-time call limit per process


from tests.sip_env import free_media_ports, free_udp_port  # noqa: E402 (after the path set-up)


# -- the child: one UA node core, one path ------------------------------------------------------

class Stress:
    def __init__(self, core, sip_port: int | None, uas_port: int | None) -> None:
        self.core = core
        self.sip_port = sip_port
        self.uas_port = uas_port
        self.ok: dict[str, int] = {}
        self.failed: dict[str, list[str]] = {}
        self.n = 0

    def _done(self, path: str, error: str | None) -> None:
        if error is None:
            self.ok[path] = self.ok.get(path, 0) + 1
        else:
            self.failed.setdefault(path, []).append(error)
        self.n += 1
        gc.collect()  # every set-up and tear-down is followed by a full collection
        if self.n % 10 == 0:  # how far a child got, should it die
            print(json.dumps({"progress": self.n}), flush=True)

    async def _events_until(self, call_id: str, name: str, timeout_s: float) -> dict | None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            batch = await self.core.next_events(call_id, min(1.0, deadline - time.monotonic()))
            if batch is None:
                return None
            for event in batch:
                if event.event == name:
                    return event.model_dump(by_alias=True)
        return None

    async def webrtc(self, i: int) -> None:
        from aiortc import RTCPeerConnection, RTCSessionDescription
        from aiortc.mediastreams import AudioStreamTrack

        call_id = f"rtc-{i}"
        pc = RTCPeerConnection()
        pc.addTrack(AudioStreamTrack())  # the caller's (silent) microphone
        connected = asyncio.Event()

        @pc.on("connectionstatechange")
        def _state() -> None:
            if pc.connectionState == "connected":
                connected.set()
        error = None
        try:
            await pc.setLocalDescription(await pc.createOffer())
            r = await self.core.open_call(call_id, "webrtc", {"offer": pc.localDescription.sdp})
            if not r.ok:
                raise RuntimeError(f"refused: {r.code} {r.error}")
            answer = await self._events_until(call_id, "answer", 10)
            if answer is None:
                raise RuntimeError("no answer event")
            await pc.setRemoteDescription(RTCSessionDescription(sdp=answer["sdp"], type="answer"))
            await asyncio.wait_for(connected.wait(), 10)
            session = self.core.calls[call_id].session
            deadline = time.monotonic() + 5
            while not session.audio_started and time.monotonic() < deadline:  # caller audio arrived
                await asyncio.sleep(0.02)
            if not session.audio_started:
                raise RuntimeError("no caller audio reached the session")
        except Exception as exc:
            error = repr(exc)
        finally:
            await self.core.end_call(call_id, "stress", "system")
            await self._events_until(call_id, "hangup", 5)
            await pc.close()
        self._done("webrtc", error)

    BAD_OFFERS = (
        "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\nm=audio 9 UDP/TLS/RTP/SAVPF 111\r\n"
        "c=IN IP4 0.0.0.0\r\na=rtpmap:111 opus/48000/2\r\na=sendrecv\r\n",  # no ICE, no fingerprint
        "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\nm=audio 9 RTP/AVP 0\r\nc=IN IP4 127.0.0.1\r\n",
        "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\nm=video 9 UDP/TLS/RTP/SAVPF 96\r\n",
        "not sdp at all",
        "v=0\r\nm=audio",
        "",
    )

    async def webrtc_bad(self, i: int) -> None:
        call_id = f"bad-{i}"
        r = await self.core.open_call(call_id, "webrtc", {"offer": self.BAD_OFFERS[i % len(self.BAD_OFFERS)]})
        self._done("webrtc-bad", None if not r.ok and r.code == 400 else f"not refused with 400: {r}")

    async def sip_out(self, i: int) -> None:
        call_id = f"out-{i}"
        error = None
        r = await self.core.open_call(call_id, "sip", {"callee": f"sip:stress@127.0.0.1:{self.uas_port}"})
        if not r.ok:
            self._done("sip-out", f"invite refused: {r.code} {r.error}")
            return
        try:
            if await self._events_until(call_id, "answer", 10) is None:
                raise RuntimeError("no answer event")
            await asyncio.sleep(0.1)  # media up: the bridge port is on the conference clock
        except Exception as exc:
            error = repr(exc)
        finally:
            await self.core.end_call(call_id, "stress", "system")
            await self._events_until(call_id, "hangup", 5)
            # Torn down means pjsua let the call go (BYE answered, slot free), not only "BYE sent".
            if not await self._sip_released(call_id) and error is None:
                error = "the pjsua call was not released within 10 s"
        self._done("sip-out", error)

    async def _sip_released(self, call_id: str, timeout_s: float = 10.0) -> bool:
        from voxray.ua_node import sip as sipmod

        deadline = time.monotonic() + timeout_s
        while call_id in sipmod._endpoint.live and time.monotonic() < deadline:
            await asyncio.sleep(0.02)
        return call_id not in sipmod._endpoint.live

    async def answer_inbound(self, stop: asyncio.Event) -> None:
        """The agent for sip-in: accept every ringing inbound call, then follow it to its hangup."""
        from voxray.ua_node.sip.transport import SipTransport

        seen: set[str] = set()

        async def follow(call_id: str) -> None:
            r = await self.core.command(call_id, json.dumps({"command": "accept", "option": {}}))
            hung = await self._events_until(call_id, "hangup", 15) if r.ok else None
            self._done("sip-in", None if hung is not None else f"accept: {r.code} {r.error}" if not r.ok
                       else "no hangup after the caller's BYE")

        tasks = set()
        while not stop.is_set():
            for c in list(self.core.calls.values()):
                if (c.call_id not in seen and isinstance(c.transport, SipTransport) and c.transport.inbound
                        and not c.ended):
                    seen.add(c.call_id)
                    t = asyncio.get_running_loop().create_task(follow(c.call_id))
                    tasks.add(t)
                    t.add_done_callback(tasks.discard)
            await asyncio.sleep(0.01)
        if tasks:
            await asyncio.wait(tasks, timeout=20)

    async def sip_in(self, n: int, limit: int = CONCURRENCY) -> None:
        stop = asyncio.Event()
        agent = asyncio.get_running_loop().create_task(self.answer_inbound(stop))
        sipp = await asyncio.create_subprocess_exec(
            "timeout", "-s", "KILL", str(60 + n), "sipp", "-sn", "uac", "-i", "127.0.0.1",
            "-p", str(free_udp_port()), "-mp", str(free_media_ports()),
            "-m", str(n), "-l", str(limit), "-r", "50", "-d", "200",
            "-nostdin", "-timeout", str(60 + n), *os.environ.get("STRESS_SIPP_ARGS", "").split(),
            f"127.0.0.1:{self.sip_port}",
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
        rc = await sipp.wait()
        await asyncio.sleep(2)
        stop.set()
        await agent
        if rc != 0:  # calls the node refused or never answered do not reach the agent above
            self.failed.setdefault("sip-in", []).append(f"sipp exited {rc}: some of its calls failed")

    async def run(self, path: str, n: int) -> None:
        sem = asyncio.Semaphore(CONCURRENCY)

        async def bounded(fn, i):
            async with sem:
                await fn(i)
        if path == "webrtc":
            await asyncio.gather(*(bounded(self.webrtc, i) for i in range(n)))
        elif path == "webrtc-bad":
            await asyncio.gather(*(bounded(self.webrtc_bad, i) for i in range(n)))
        elif path == "sip-out":
            await asyncio.gather(*(bounded(self.sip_out, i) for i in range(n)))
        elif path == "sip-in":
            await self.sip_in(n)
        elif path == "mixed":
            # SIP in and out share pjsua's four call slots (a slot is free again only once
            # its call is DISCONNECTED): two for sipp, one for outbound. WebRTC beside them.
            quarter = n // 4
            rtc_sem, sip_sem = asyncio.Semaphore(2), asyncio.Semaphore(1)

            async def with_sem(s, fn, i):
                async with s:
                    await fn(i)
            jobs = [with_sem(rtc_sem, self.webrtc, i) for i in range(quarter)]
            jobs += [self.webrtc_bad(i) for i in range(quarter)]
            if self.sip_port:
                jobs += [with_sem(sip_sem, self.sip_out, i) for i in range(quarter)]
                jobs.append(self.sip_in(n - 3 * quarter, limit=2))
            else:
                jobs += [with_sem(rtc_sem, self.webrtc, quarter + i) for i in range(n - 2 * quarter)]
            await asyncio.gather(*jobs)


class VadOnlyServices:
    """Real Silero VAD (batched across calls, on a worker thread); ASR and TTS off."""

    def __init__(self) -> None:
        from voxray.media.vad_batcher import VadBatcher
        from voxray.providers.silero_vad import InProcessVad

        self.vad_batcher = VadBatcher(InProcessVad().infer)

    async def vad(self, chunk):
        return await self.vad_batcher.submit(chunk)

    async def transcribe(self, req):
        from voxray.media.messages import AsrResult

        return AsrResult(text="", provider="off")

    async def synthesize(self, req):
        return
        yield


async def child(args: argparse.Namespace) -> None:
    import faulthandler

    faulthandler.enable(all_threads=True)
    from voxray.ua_node.node import UaNodeCore
    from voxray.ua_node.webrtc import register as register_webrtc

    core = UaNodeCore(VadOnlyServices())
    register_webrtc(core, {})
    sip_port = uas = None
    uas_proc = None
    if args.sip:
        from voxray.ua_node import sip as sipmod

        if args.old_lifetime:  # pjsua2 objects left to Python's GC, as before the fix
            import voxray.ua_node.sip.endpoint as ep_mod
            import voxray.ua_node.sip.pjcall as pjcall_mod
            pjcall_mod.destroy = ep_mod.destroy = lambda obj: None
        sip_port = free_udp_port()
        await sipmod.register(core, {
            "enabled": True, "port": sip_port, "rtp_port": random.randrange(30000, 40000, 2),
            "rtp_port_range": 400, "webhook_url": "http://127.0.0.1:9/unused"})
        endpoint = sipmod._endpoint
        if "sip" not in core.transports:
            sys.exit("the SIP stack did not start")

        async def ring(t, info, route):  # the webhook's job: the agent below sees the call
            pass
        endpoint.inbound.route = ring
        uas = free_udp_port()
        uas_proc = subprocess.Popen(
            ["timeout", "-s", "KILL", "3600", "sipp", "-sn", "uas", "-i", "127.0.0.1", "-p", str(uas),
             "-mp", str(free_media_ports()), "-nostdin"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
        await asyncio.sleep(0.5)
    stress = Stress(core, sip_port, uas)
    t0 = time.monotonic()
    try:
        await stress.run(args.child, args.calls)
    finally:
        if uas_proc is not None:
            os.killpg(uas_proc.pid, signal.SIGKILL)
        await core.shutdown()
    print(json.dumps({"ok": stress.ok, "failed": {k: (len(v), v[:3]) for k, v in stress.failed.items()},
                      "seconds": round(time.monotonic() - t0, 1)}), flush=True)


# -- the bare bug: bridge ports on the conference clock ------------------------------------------

def port_race(mode: str, n: int) -> None:
    """Create four bridge ports, connect two, free them (mode: gc or explicit), n times."""
    import faulthandler

    faulthandler.enable(all_threads=True)
    import numpy as np
    import pjsua2 as pj

    from voxray.ua_node.sip.lifetime import destroy
    from voxray.ua_node.sip.media_port import BridgePort, audio_format

    ep = pj.Endpoint()
    ep.libCreate()
    cfg = pj.EpConfig()
    cfg.uaConfig.threadCnt = 0
    cfg.uaConfig.mainThreadOnly = True
    cfg.logConfig.consoleLevel = 0
    cfg.medConfig.clockRate = cfg.medConfig.sndClockRate = 16000
    ep.libInit(cfg)
    ep.audDevManager().setNullDev()
    ep.libStart()
    silence = np.zeros(320, np.int16)
    for i in range(n):
        ports = []
        for k in range(4):
            p = BridgePort(lambda pcm: None, lambda: silence)
            p.createPort(f"p{i}-{k}", audio_format())
            ports.append(p)
        ports[0].startTransmit(ports[1])
        ports[1].startTransmit(ports[0])
        ep.libHandleEvents(5)
        if mode == "explicit":
            for p in ports:
                destroy(p)
        ports = None
        gc.collect()
        print(json.dumps({"progress": i + 1}), flush=True)
    ep.libDestroy()
    print(json.dumps({"ok": {"port-race": n}}), flush=True)


# -- the parent: runs children, prints the table ------------------------------------------------

def run_child(argv: list[str], timeout_s: float, log: Path) -> tuple[dict | None, str, int]:
    """(result, crash report, set-ups done before the end)."""
    with open(log, "wb") as fh:
        proc = subprocess.run([sys.executable, __file__, *argv], stdout=subprocess.PIPE, stderr=fh,
                              timeout=timeout_s, cwd=ROOT)
    out = proc.stdout.decode().strip().splitlines()
    progress = [json.loads(x)["progress"] for x in out if x.startswith('{"progress"')]
    done = progress[-1] if progress else 0
    if proc.returncode < 0:
        sig = signal.Signals(-proc.returncode).name
        text = log.read_text(errors="replace")
        at = text.find("Fatal Python error")
        return None, f"{sig} after {done} set-ups: " + (text[at:at + 600] if at >= 0 else text[-600:]), done
    if proc.returncode != 0 or not out:
        return None, f"exit {proc.returncode}: " + log.read_text(errors="replace")[-600:], done
    return json.loads(out[-1]), "", done


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--calls", type=int, default=1000, help="set-ups and tear-downs per path")
    ap.add_argument("--paths", nargs="+", default=list(PATHS), choices=PATHS)
    ap.add_argument("--old-lifetime", action="store_true",
                    help="also run the SIP paths with the old object lifetimes (expect crashes)")
    ap.add_argument("--port-race", action="store_true", help="also run the bare bridge-port race, old and new")
    ap.add_argument("--child", help=argparse.SUPPRESS)
    ap.add_argument("--sip", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--port-race-child", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.port_race_child:
        port_race(args.port_race_child, args.calls)
        return
    if args.child:
        asyncio.run(child(args))
        return
    if not shutil.which("sipp"):
        sys.exit("sipp is needed (apt-get install sip-tester)")
    logs = Path(tempfile.mkdtemp(prefix="voxray-stress-"))
    runs: list[tuple[str, str, list[str]]] = []
    if args.port_race:
        runs += [("port-race", "pjsua2 only, GC frees ports (old)", ["--port-race-child", "gc"]),
                 ("port-race", "pjsua2 only, explicit destroy (new)", ["--port-race-child", "explicit"])]
    for path in args.paths:
        runs.append((path, "SIP loaded", ["--child", path, "--sip"]))
        if args.old_lifetime and (path in SIP_PATHS or path == "mixed"):
            runs.append((path, "SIP loaded, old lifetimes", ["--child", path, "--sip", "--old-lifetime"]))
        if path not in SIP_PATHS:
            runs.append((path, "SIP not loaded", ["--child", path]))
    rows = []
    for path, how, argv in runs:
        t0 = time.monotonic()
        result, crash, done = run_child([*argv, "--calls", str(args.calls)], 120 + args.calls * 3,
                                        logs / f"{path}-{len(rows)}.log")
        ok = sum((result or {}).get("ok", {}).values())
        failed = sum(n for n, _ in (result or {}).get("failed", {}).values())
        crashed = f"1 (after {done})" if crash else "0"
        rows.append((path, how, args.calls, ok, failed, crashed, round(time.monotonic() - t0, 1)))
        print(json.dumps({"path": path, "how": how, "result": result, "crash": crash[:1500]}), file=sys.stderr,
              flush=True)
    print(f"\nUA node set-up/tear-down stress ({args.calls} per path, gc.collect() after each; logs in {logs})\n")
    print("| path | process | set-ups | completed | failed | crashes | seconds |")
    print("|---|---|---:|---:|---:|---:|---:|")
    for r in rows:
        print("| " + " | ".join(str(x) for x in r) + " |")
    if any(r[5] != "0" for r in rows if "old" not in r[1]):
        sys.exit(1)


if __name__ == "__main__":
    main()
