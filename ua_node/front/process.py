"""Runs the node's Kamailio and steers it over its control socket (kamcmd).

Kamailio is a child of the UA node's process and dies with it (PR_SET_PDEATHSIG); a
Kamailio left over by a node that was killed is stopped by pid file before a new one
takes the port. Workers that restart get a new dispatcher entry (a new `duid`, so the
calls they lost no longer count as their load) and the list is reloaded in place.
"""

from __future__ import annotations

import asyncio
import ctypes
import os
import shutil
import signal
import tempfile
from pathlib import Path

from voxray.logs import get_logger
from voxray.ua_node.config import FrontSettings
from voxray.ua_node.front.config import FrontDestination, dispatcher_list, kamailio_cfg
from voxray.ua_node.front.state import FrontTarget, parse_dialog_stats, parse_dispatcher_list

log = get_logger("voxray.sip.front")


def kamailio_path(s: FrontSettings) -> str | None:
    return shutil.which(s.binary) or next(
        (p for p in (f"/usr/sbin/{s.binary}", f"/usr/local/sbin/{s.binary}") if os.path.exists(p)), None)


def _die_with_parent() -> None:  # runs in the child before exec
    try:
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except OSError:
        pass


class KamailioFront:
    def __init__(self, s: FrontSettings, *, bind: str, port: int, public_address: str | None,
                 trusted: list[str], retry_after_s: int, run_dir: str | None = None) -> None:
        self.settings = s
        self.bind, self.port = bind, port
        base = Path(run_dir or Path(tempfile.gettempdir()) / "voxray-front")
        self.dir = base / f"{bind}-{port}"
        self.dir.mkdir(parents=True, exist_ok=True)
        self.cfg_path = self.dir / "kamailio.cfg"
        self.list_path = self.dir / "dispatcher.list"
        self.ctl = self.dir / "ctl.sock"
        self.pid_file = self.dir / "kamailio.pid"
        self.log_path = self.dir / "kamailio.log"
        self.cfg = kamailio_cfg(s, bind=bind, port=port, public_address=public_address,
                                list_file=str(self.list_path), ctl_socket=str(self.ctl), trusted=trusted,
                                retry_after_s=retry_after_s)
        self.proc: asyncio.subprocess.Process | None = None
        self.destinations: list[FrontDestination] = []
        self.binary = kamailio_path(s)

    @property
    def uri(self) -> str:
        return f"sip:{self.bind}:{self.port}"

    async def start(self, destinations: list[FrontDestination]) -> None:
        if self.binary is None:
            raise RuntimeError(f"{self.settings.binary} is not installed (apt-get install kamailio)")
        self._stop_leftover()
        self.destinations = list(destinations)
        self.cfg_path.write_text(self.cfg)
        self.list_path.write_text(dispatcher_list(self.destinations))
        check = await asyncio.create_subprocess_exec(
            self.binary, "-c", "-f", str(self.cfg_path), stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT)
        out, _ = await check.communicate()
        if check.returncode != 0:
            raise RuntimeError(f"kamailio rejected its config: {out.decode(errors='replace')[-2000:]}")
        logf = open(self.log_path, "ab")  # noqa: SIM115 (the child keeps it)
        try:
            self.proc = await asyncio.create_subprocess_exec(
                self.binary, "-DD", "-E", "-f", str(self.cfg_path), "-P", str(self.pid_file),
                "-Y", str(self.dir), "-m", str(self.settings.shm_mb), "-M", "8",
                stdout=logf, stderr=logf, preexec_fn=_die_with_parent)
        finally:
            logf.close()
        for _ in range(100):  # up when its control socket answers
            if self.proc.returncode is not None:
                raise RuntimeError(f"kamailio exited ({self.proc.returncode}): {self.log_tail()}")
            if self.ctl.exists() and await self._rpc("core.version", check=False) is not None:
                log.info("sip front up", extra={"port": self.port, "workers": len(self.destinations)})
                return
            await asyncio.sleep(0.1)
        raise RuntimeError(f"kamailio did not come up: {self.log_tail()}")

    def log_tail(self, n: int = 3000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-n:]
        except OSError:
            return ""

    def _stop_leftover(self) -> None:
        try:
            pid = int(self.pid_file.read_text().strip())
        except (OSError, ValueError):
            return
        try:
            if b"kamailio" in Path(f"/proc/{pid}/cmdline").read_bytes():
                os.kill(pid, signal.SIGTERM)
                log.warning("stopped a kamailio left over by an earlier node", extra={"pid": pid})
        except OSError:
            pass

    async def _rpc(self, *args: str, check: bool = True) -> str | None:
        kamcmd = shutil.which("kamcmd") or "/usr/sbin/kamcmd"
        proc = await asyncio.create_subprocess_exec(
            kamcmd, "-s", f"unix:{self.ctl}", *args, stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT)
        try:
            out, _ = await asyncio.wait_for(proc.communicate(), 5)
        except asyncio.TimeoutError:
            proc.kill()
            if check:
                raise
            return None
        if proc.returncode != 0:
            if check:
                raise RuntimeError(f"kamcmd {' '.join(args)}: {out.decode(errors='replace')}")
            return None
        return out.decode(errors="replace")

    async def set_destinations(self, destinations: list[FrontDestination]) -> None:
        if destinations == self.destinations:
            return
        self.destinations = list(destinations)
        self.list_path.write_text(dispatcher_list(self.destinations))
        await self._rpc("dispatcher.reload")
        log.info("sip front workers changed", extra={"workers": [d.uri for d in destinations]})

    async def targets(self) -> list[FrontTarget]:
        """Kamailio's view of the workers: in the set or not, and the calls it counts on each."""
        return parse_dispatcher_list(await self._rpc("dispatcher.list") or "")

    async def dialogs(self) -> dict[str, int]:
        """The dialogs the front tracks, by state (starting, connecting, answering, ongoing)."""
        return parse_dialog_stats(await self._rpc("dlg.stats_active") or "")

    async def set_draining(self, draining: bool) -> None:
        await self._rpc("pv.shvSet", "draining", "int", "1" if draining else "0")

    async def stop(self) -> None:
        if self.proc is None or self.proc.returncode is not None:
            return
        self.proc.terminate()
        try:
            await asyncio.wait_for(self.proc.wait(), 5)
        except asyncio.TimeoutError:
            self.proc.kill()
            await self.proc.wait()
