"""The node's Kamailio front between real SIP peers: sipp calls through it to a sipp
callee standing in for a worker, so the front's own decisions show on the wire."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from tests.sip_env import free_udp_port
from tests.test_sip import HERE, peers, sip_workdir, sipp  # noqa: F401  (fixtures)
from voxray.ua_node.config import FrontSettings
from voxray.ua_node.front.config import FrontDestination
from voxray.ua_node.front.process import KamailioFront, kamailio_path

pytestmark = [pytest.mark.e2e, pytest.mark.skipif(kamailio_path(FrontSettings()) is None or not shutil.which("sipp"),
                                                  reason="kamailio or sipp is not installed")]


def _builtin(name: str, workdir: Path) -> Path:
    """One of sipp's built-in scenarios, as a file (the sipp helper runs scenario files)."""
    path = workdir / f"builtin_{name}.xml"
    out = subprocess.run(["sipp", "-sd", name], capture_output=True, text=True, timeout=10).stdout  # exits 99
    assert "<scenario" in out, out[-500:]
    path.write_text(out)
    return path


async def test_a_worker_the_count_calls_full_still_gets_the_call_it_can_take(tmp_path, sip_workdir, peers):  # noqa: F811
    """Kamailio's call count is a hint (a list reload zeroes it, a BYE it never saw keeps a
    call in it): when it says every worker is full, the workers are tried anyway, and their
    own limits decide. Here the count allows one call, the callee takes both."""
    uac, uas = _builtin("uac", sip_workdir), _builtin("uas", sip_workdir)
    callee_port, front_port = free_udp_port(), free_udp_port()
    callee = await peers(sipp(uas, sip_workdir, "-m", "2", port=callee_port, timeout_s=60))
    front = KamailioFront(FrontSettings(), bind="127.0.0.1", port=front_port, public_address=None, trusted=[],
                          retry_after_s=5, run_dir=str(tmp_path))
    await front.start([FrontDestination(f"sip:127.0.0.1:{callee_port}", "w0-1", 1)])
    try:
        # Two calls at once, each 3 s long, hung up by the caller (built-in scenarios: no Route
        # header on the ACK and BYE, the front's dialog tracking finds the worker).
        caller = await peers(sipp(uac, sip_workdir, "-m", "2", "-d", "3000", "-l", "2", "-r", "10",
                                  f"127.0.0.1:{front_port}", timeout_s=60))
        assert await caller.wait(40) == 0, caller.text()[-2500:] + front.log_tail()
        assert await callee.wait(20) == 0, callee.text()[-2500:]
        assert "all workers counted full; trying them anyway" in front.log_tail(20000)
        (target,) = await front.targets()
        assert target.load == 0, target  # the counted call left the count with its BYE
        assert "cannot find load" not in front.log_tail(20000)  # the uncounted one was never looked for
    finally:
        await front.stop()


async def test_a_bye_from_the_worker_along_the_route_set_takes_the_call_out_of_the_count(
        tmp_path, sip_workdir, peers):  # noqa: F811
    """The usual end of a call: the worker (pjsua2) hangs up, its BYE routed through the
    front by the Record-Route; the caller follows the route set too."""
    callee_port, front_port = free_udp_port(), free_udp_port()
    callee = await peers(sipp(HERE / "uas_hangs_up.xml", sip_workdir, port=callee_port, timeout_s=30))
    front = KamailioFront(FrontSettings(), bind="127.0.0.1", port=front_port, public_address=None, trusted=[],
                          retry_after_s=5, run_dir=str(tmp_path))
    await front.start([FrontDestination(f"sip:127.0.0.1:{callee_port}", "w0-1", 4)])
    try:
        caller = await peers(sipp(HERE / "uac_until_bye.xml", sip_workdir, f"127.0.0.1:{front_port}", timeout_s=30))
        assert await caller.wait(20) == 0, caller.text()[-2500:] + front.log_tail()
        assert await callee.wait(20) == 0, callee.text()[-2500:]
        (target,) = await front.targets()
        assert target.load == 0, target
        assert (await front.dialogs())["all"] == 0
    finally:
        await front.stop()


async def test_an_invite_no_worker_answers_gets_503_and_leaves_no_call_in_the_count(tmp_path):
    """A worker that never answers an INVITE (pjsua2 drops some malformed ones silently: the
    SIP fuzz sends such) is passed over for the next, the call's count moving along. Past
    the last one the caller gets 503 and the count must let the call go: it held a slot on
    the last worker for up to a minute (CI's pool tests found one taken with all idle)."""
    import asyncio
    import socket

    from tests.test_sip import sip_request

    # Nobody on the workers' ports: each try times out (front.worker_timeout_ms, 4 s).
    workers, front_port = [free_udp_port(), free_udp_port()], free_udp_port()
    front = KamailioFront(FrontSettings(), bind="127.0.0.1", port=front_port, public_address=None, trusted=[],
                          retry_after_s=5, run_dir=str(tmp_path))
    await front.start([FrontDestination(f"sip:127.0.0.1:{p}", f"w{i}-1", 4) for i, p in enumerate(workers)])
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.bind(("127.0.0.1", 0))
            msg, _ = sip_request("INVITE", f"sip:agent@127.0.0.1:{front_port}", port=s.getsockname()[1])
            s.sendto(msg, ("127.0.0.1", front_port))
            s.settimeout(20.0)
            reply = "SIP/2.0 100"
            while reply.startswith("SIP/2.0 1"):  # 100 Trying first: the front took it
                reply = (await asyncio.to_thread(s.recv, 65535)).decode(errors="replace")
        assert reply.startswith("SIP/2.0 503"), reply[:300]
        log = front.log_tail()
        assert log.count("trying the next worker") == 2, log  # both were tried
        assert [t.load for t in await front.targets()] == [0, 0], (await front.targets(), log)
    finally:
        await front.stop()
