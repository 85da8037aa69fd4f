"""pjsua2 object lifetimes in the UA node process (the SIGSEGV of issue 17, and the slot reuse it hid).

Each check runs in a child process of its own (bench/ua_stress.py): a crash there is
a failed test here, not a dead test session.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.sip_env import SIP_ENV

ROOT = Path(__file__).resolve().parent.parent
STRESS = ROOT / "bench" / "ua_stress.py"

pytestmark = pytest.mark.timeout(180)

if not SIP_ENV.available:
    pytest.skip("pjsua2 is not installed (pip install pjsua2-python)", allow_module_level=True)


def _child(*argv: str, timeout: float = 150) -> dict:
    proc = subprocess.run([sys.executable, str(STRESS), *argv], capture_output=True, text=True,
                          timeout=timeout, cwd=ROOT)
    assert proc.returncode == 0, f"child exited {proc.returncode}: {proc.stderr[-3000:]}"
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_bridge_ports_freed_on_the_pj_thread_survive_the_conference_clock():
    # Ports created, cross-connected and freed while the clock thread calls them every
    # 20 ms: freed by Python's GC instead, this crashes within a few rounds.
    assert _child("--port-race-child", "explicit", "--calls", "150") == {"ok": {"port-race": 150}}


@pytest.mark.skipif(not shutil.which("sipp"), reason="sipp is not installed (apt-get install sip-tester)")
def test_back_to_back_inbound_calls_at_the_call_limit_are_all_answered():
    # sipp keeps pjsua's 4 call slots busy, so every new INVITE lands in a slot a call
    # just left. A call object destroyed after its slot was reused used to hang the new
    # call up (603 Decline): here each one must be accepted and ended by the caller's BYE.
    got = _child("--child", "sip-in", "--sip", "--calls", "24")
    assert got["ok"] == {"sip-in": 24}, got
    assert got["failed"] == {}


@pytest.mark.skipif(not shutil.which("sipp"), reason="sipp is not installed (apt-get install sip-tester)")
def test_sip_and_webrtc_calls_set_up_and_torn_down_together_in_one_process():
    got = _child("--child", "mixed", "--sip", "--calls", "24")
    assert got["failed"] == {}, got
    assert got["ok"] == {"webrtc": 6, "webrtc-bad": 6, "sip-out": 6, "sip-in": 6}


def test_pjsua2_is_loaded_only_where_sip_is_enabled():
    probe = (
        "import asyncio, sys\n"
        "from voxray.ua_node.node import UaNodeCore\n"
        "from voxray.ua_node.webrtc import register as register_webrtc\n"
        "from voxray.ua_node import sip\n"
        "import voxray.config, voxray.ua_node.actor, voxray.cluster.app\n"
        "class NoModels:\n"
        "    pass\n"
        "async def main():\n"
        "    core = UaNodeCore(NoModels())\n"
        "    register_webrtc(core, {})\n"
        "    await sip.register(core, {'enabled': False})\n"
        "    print('pjsua2' in sys.modules, sorted(core.transports))\n"
        "asyncio.run(main())\n"
    )
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.split() == ["False", "['webrtc']"]
