"""The UA worker pool's decisions (ua_node/pool.py) and the front's generated Kamailio
config (ua_node/front/config.py), checked by Kamailio itself, and the front's view of its
workers read back from a running Kamailio (ua_node/front/state.py)."""

from __future__ import annotations

import shutil
import socket
import subprocess
from itertools import count

import pytest

from voxray.ua_node.config import FrontSettings, PoolSettings
from voxray.ua_node.front.config import FrontDestination, dispatcher_list, kamailio_cfg
from voxray.ua_node.front.process import KamailioFront, kamailio_path
from voxray.ua_node.front.state import parse_dialog_stats, parse_dispatcher_list
from voxray.ua_node.pool import SIP, WEBRTC, WorkerSpec, WorkerState, choose, plan, sip_worker_count, use_front
from voxray.ua_node.sip.config import SipAccount, SipSettings

SIP_ON = SipSettings(enabled=True, bind="127.0.0.1", port=5060, rtp_port=20000, rtp_port_range=1000, max_calls=32,
                     trusted_sources=["10.0.0.0/8"],
                     account=SipAccount(registrar="sip:pbx.example", username="u", domain="pbx.example"))


def ports():
    it = count(40000)
    return lambda: next(it)


def test_behind_the_front_each_sip_worker_has_its_own_port_rtp_slice_and_calls():
    specs = plan(PoolSettings(), SIP_ON, cpus=2, front=True, free_port=ports())
    sip = [s for s in specs if s.role == SIP]
    assert len(sip) == 8 == sip_worker_count(PoolSettings(), SIP_ON)  # 32 calls / 4 per worker
    assert [s.role for s in specs].count(WEBRTC) == 2  # one per CPU
    settings = [SipSettings.model_validate(s.sip) for s in sip]
    assert len({s.port for s in settings}) == 8 and 5060 not in {s.port for s in settings}
    slices = sorted((s.rtp_port, s.rtp_port + s.rtp_port_range) for s in settings)
    assert all(a[1] <= b[0] for a, b in zip(slices, slices[1:])) and slices[-1][1] <= 21000
    assert all(s.max_calls == 4 and s.outbound_proxy == "sip:127.0.0.1:5060;lr" for s in settings)
    assert all(s.free_port_fallback for s in settings)  # a port taken meanwhile is no failure
    # Only the front checks the configured networks; workers take requests from it alone.
    assert all(s.trusted_sources == ["127.0.0.1/32"] for s in settings)
    # One registration for the node, pointing the registrar at the front.
    assert settings[0].account is not None and settings[0].contact == "sip:127.0.0.1:5060"
    assert all(s.account is None and s.contact is None for s in settings[1:])


def test_without_a_front_one_sip_worker_is_the_node_as_configured():
    specs = plan(PoolSettings(webrtc_workers=1), SIP_ON, cpus=8, front=False, free_port=ports())
    assert [(s.role, s.index) for s in specs] == [(SIP, 0), (WEBRTC, 0)]
    assert SipSettings.model_validate(specs[0].sip) == SIP_ON


def test_worker_counts_from_config_and_an_rtp_range_too_small_is_refused():
    pool = PoolSettings(sip_workers=3, webrtc_workers=0)
    assert [s.key for s in plan(pool, SIP_ON, cpus=2, front=True, free_port=ports())] == ["sip0", "sip1", "sip2"]
    assert plan(PoolSettings(), SIP_ON.model_copy(update={"enabled": False}), cpus=16, front=False,
                free_port=ports()) == [WorkerSpec(WEBRTC, i) for i in range(4)]  # at most 4 by default
    with pytest.raises(ValueError, match="rtp_port_range"):
        plan(pool, SIP_ON.model_copy(update={"rtp_port_range": 40}), cpus=2, front=True, free_port=ports())


def test_the_front_is_used_when_it_helps_and_can_run():
    assert use_front(PoolSettings(), 8, kamailio_found=True)
    assert not use_front(PoolSettings(), 1, kamailio_found=True)  # one worker: nothing to spread
    assert not use_front(PoolSettings(), 8, kamailio_found=False)
    assert not use_front(PoolSettings(front=FrontSettings(kind="none")), 8, kamailio_found=True)
    with pytest.raises(RuntimeError, match="not installed"):
        use_front(PoolSettings(front=FrontSettings(kind="kamailio")), 8, kamailio_found=False)


def _state(role: str, index: int, calls: int, up: bool = True, draining: bool = False) -> WorkerState:
    st = WorkerState(WorkerSpec(role, index))
    st.heard({"pid": 100 + index, "calls": calls, "draining": draining})
    st.up = up
    return st


def test_a_new_call_goes_to_the_least_loaded_live_worker_of_its_kind():
    states = [_state(SIP, 0, 3), _state(SIP, 1, 1), _state(SIP, 2, 0, up=False), _state(SIP, 3, 0, draining=True),
              _state(WEBRTC, 0, 0)]
    assert choose(states, SIP, per_worker=4).spec.index == 1
    assert choose(states, WEBRTC).spec.role == WEBRTC
    full = [_state(SIP, 0, 4), _state(SIP, 1, 4)]
    assert choose(full, SIP, per_worker=4) is None


def test_a_worker_answering_from_a_new_process_counts_as_restarted():
    st = WorkerState(WorkerSpec(SIP, 0))
    assert not st.heard({"pid": 10, "calls": 2, "sip_port": 5081})
    assert st.missed_ping() == 1 and not st.up
    assert st.heard({"pid": 11, "calls": 0, "sip_port": 5081})
    assert st.up and st.restarts == 1 and st.calls == 0 and st.missed == 0


def test_dispatcher_list_gives_each_worker_its_call_limit():
    text = dispatcher_list([FrontDestination("sip:127.0.0.1:5081", "sip0-11", 4),
                            FrontDestination("sip:127.0.0.1:5082", "sip1-12", 4)])
    # Priorities in file order: at equal load Kamailio takes sip0 first.
    assert text.splitlines()[1:] == ["1 sip:127.0.0.1:5081 0 2 duid=sip0-11;maxload=4",
                                     "1 sip:127.0.0.1:5082 0 1 duid=sip1-12;maxload=4"]


@pytest.mark.parametrize("trusted", [[], ["127.0.0.1/32", "10.1.0.0/16"]])
def test_kamailio_accepts_the_generated_config(tmp_path, trusted):
    if not shutil.which("kamailio") and not shutil.which("/usr/sbin/kamailio"):
        pytest.skip("kamailio is not installed")
    (tmp_path / "d.list").write_text(dispatcher_list([FrontDestination("sip:127.0.0.1:5081", "sip0-1", 4)]))
    cfg = tmp_path / "k.cfg"
    cfg.write_text(kamailio_cfg(FrontSettings(), bind="127.0.0.1", port=5999, public_address="192.0.2.10",
                                list_file=str(tmp_path / "d.list"), ctl_socket=str(tmp_path / "ctl"),
                                trusted=trusted, retry_after_s=5))
    binary = shutil.which("kamailio") or "/usr/sbin/kamailio"
    out = subprocess.run([binary, "-c", "-f", str(cfg)], capture_output=True, text=True, timeout=30)
    assert out.returncode == 0, out.stdout + out.stderr
    assert ("is_in_subnet" in cfg.read_text()) == bool(trusted)



async def test_the_front_reports_each_workers_flags_and_call_load_from_kamailio(tmp_path):
    if kamailio_path(FrontSettings()) is None:
        pytest.skip("kamailio is not installed")
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    front = KamailioFront(FrontSettings(), bind="127.0.0.1", port=port, public_address=None, trusted=[],
                          retry_after_s=5, run_dir=str(tmp_path))
    await front.start([FrontDestination("sip:127.0.0.1:5081", "sip0-1", 4),
                       FrontDestination("sip:127.0.0.1:5082", "sip1-2", 3)])
    try:
        targets = await front.targets()
        assert [(t.uri, t.duid, t.load, t.max_load) for t in targets] == [
            ("sip:127.0.0.1:5081", "sip0-1", 0, 4), ("sip:127.0.0.1:5082", "sip1-2", 0, 3)]
        assert all(t.active for t in targets), targets
        assert await front.dialogs() == {"starting": 0, "connecting": 0, "answering": 0, "ongoing": 0, "all": 0}
        await front.set_destinations([FrontDestination("sip:127.0.0.1:5081", "sip0-9", 4)])
        assert [(t.duid, t.max_load) for t in await front.targets()] == [("sip0-9", 4)]
    finally:
        await front.stop()


def test_front_state_parses_an_inactive_worker_with_calls():
    text = """SET: { ID: 1 TARGETS: {
        DEST: {
            URI: sip:127.0.0.1:5081
            FLAGS: IP
            PRIORITY: 2
            ATTRS: {
                DUID: sip0-4
                MAXLOAD: 4
            }
            RUNTIME: {
                DLGLOAD: 3
            }
        }
    } }"""
    (t,) = parse_dispatcher_list(text)
    assert (t.uri, t.duid, t.flags, t.load, t.max_load, t.active) == ("sip:127.0.0.1:5081", "sip0-4", "IP", 3, 4, False)

FALLBACK_CHILD = """
import asyncio, socket, sys
from voxray.ua_node.sip.config import SipSettings
from voxray.ua_node.sip.stack import PjStack

async def main(fallback):
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as holder:
        holder.bind(("127.0.0.1", 0))
        taken = holder.getsockname()[1]
        stack = PjStack(SipSettings(enabled=True, port=taken, free_port_fallback=fallback), asyncio.get_running_loop())
        try:
            await asyncio.to_thread(stack.start)
        except RuntimeError:
            print("refused")
            return
        print("taken", taken, "got", stack.port)
        await asyncio.to_thread(stack.stop)

asyncio.run(main(sys.argv[1] == "1"))
"""


def test_a_sip_worker_whose_port_was_taken_listens_on_a_free_one():
    # In a child process: pjsua allows one endpoint per process.
    import sys

    pytest.importorskip("pjsua2")
    out = subprocess.run([sys.executable, "-c", FALLBACK_CHILD, "1"], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr[-2000:]
    last = out.stdout.strip().splitlines()[-1]
    assert last.startswith("taken "), out.stdout[-1000:]  # "refused": the taken port failed the start
    _, taken, _, got = last.split()
    assert got != taken and int(got) > 0, last


def test_front_dialog_stats_by_state():
    text = "{\n\tstarting: 0\n\tconnecting: 1\n\tanswering: 2\n\tongoing: 13\n\tall: 16\n}\n"
    assert parse_dialog_stats(text) == {"starting": 0, "connecting": 1, "answering": 2, "ongoing": 13, "all": 16}
