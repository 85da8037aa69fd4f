"""Tokens on the API, call records (CDR), and calls that survive the agent's socket dropping."""

from __future__ import annotations

import asyncio
import os

import httpx
import pytest
import websockets

from tests.records import call_record
from tests.wsclient import CallClient
from voxray.deployments.auth import TokenGuard

pytestmark = pytest.mark.e2e

TOKEN = "s3cret-token"


def test_token_guard_unit():
    open_guard = TokenGuard([])
    assert open_guard.allows({}, {}) and not open_guard.enabled
    g = TokenGuard(["a", "bb"])
    assert g.allows({"authorization": "Bearer bb"}, {})
    assert g.allows({}, {"token": "a"})
    assert not g.allows({"authorization": "Bearer nope"}, {})
    assert not g.allows({"authorization": "Basic a"}, {})
    assert not g.allows({}, {})
    assert g.rejected == 3


MAX_CALLS = 3


@pytest.fixture(scope="module")
def secure_server(voxray_server, tmp_path_factory):
    """A second voxray app on the same cluster: tokens on, a 3 s resume grace, its own CDR file,
    at most MAX_CALLS calls at a time."""
    from ray import serve

    from voxray.config import VoxrayConfig
    from voxray.cluster.app import build_app

    config = VoxrayConfig()
    config.serve.app_name = "voxray-secure"
    config.security.api_tokens = [TOKEN]
    config.security.resume_grace_s = 3.0
    config.security.cdr_path = str(tmp_path_factory.mktemp("cdr") / "cdr.sqlite")
    config.admission.max_calls = MAX_CALLS
    # Deleting the app at teardown must not wait out a production-length drain of calls.
    config.ingress.graceful_shutdown_timeout_s = 5
    serve.run(build_app(config), name="voxray-secure", route_prefix="/secure")
    yield f"{voxray_server}/secure"
    serve.delete("voxray-secure")


async def _call(server: str, call_id: str, **headers) -> CallClient:
    url = f"ws://{server}/call?id={call_id}" + ("" if headers else f"&token={TOKEN}")
    client = CallClient(await websockets.connect(url, additional_headers=headers, max_size=2**22))
    return client


async def test_websocket_needs_a_token(secure_server):
    for url in (f"ws://{secure_server}/call", f"ws://{secure_server}/call?token=wrong"):
        with pytest.raises(websockets.InvalidStatus) as info:
            await websockets.connect(url)
        assert info.value.response.status_code == 403
    for client in (await _call(secure_server, "tok-q"),
                   await _call(secure_server, "tok-h", Authorization=f"Bearer {TOKEN}")):
        await client.send({"command": "invite", "option": {"codec": "pcm"}})
        await client.wait_for("answer", timeout=15)
        await client.send({"command": "hangup"})
        await client.wait_for("hangup")
        await client.close()


async def test_http_api_needs_a_token(secure_server):
    async with httpx.AsyncClient(base_url=f"http://{secure_server}") as http:
        assert (await http.get("/call/lists")).status_code == 401
        assert (await http.get("/call/lists", params={"token": "wrong"})).status_code == 401
        r = await http.get("/call/lists", headers={"Authorization": f"Bearer {TOKEN}"})
        assert r.status_code == 200 and "calls" in r.json()
        assert (await http.get("/healthz")).json()["rejected_auth"] >= 2


async def test_the_api_schema_and_its_page_need_the_token_too(secure_server):
    async with httpx.AsyncClient(base_url=f"http://{secure_server}") as http:
        for path in ("/openapi.json", "/docs"):
            assert (await http.get(path)).status_code == 401, path
            assert (await http.get(path, params={"token": "wrong"})).status_code == 401, path
        assert (await http.get("/redoc")).status_code == 404  # not served at all
        schema = await http.get("/openapi.json", headers={"Authorization": f"Bearer {TOKEN}"})
        assert schema.status_code == 200 and "/call/lists" in schema.json()["paths"]
        page = await http.get("/docs", params={"token": TOKEN})
        # The page fetches the schema with the token it was opened with.
        assert page.status_code == 200 and f"/openapi.json?token={TOKEN}" in page.text


async def _records(server: str, call_id: str) -> list[dict]:
    rec = await call_record(server, call_id, token=TOKEN, timeout_s=5.0, interval_s=0.1)
    return [rec] if rec else []


async def test_every_call_leaves_a_record(secure_server):
    client = await _call(secure_server, "cdr-1")
    await client.send({"command": "invite", "option": {"codec": "pcmu", "caller": "alice", "callee": "bob"}})
    await client.wait_for("answer", timeout=15)
    await client.send({"command": "tts", "text": "Recorded.", "playId": "r"})
    await client.wait_for("trackEnd", timeout=20)
    await client.send({"command": "hangup", "reason": "done", "initiator": "agent"})
    await client.wait_for("hangup")
    await client.close()
    (rec,) = await _records(secure_server, "cdr-1")
    assert (rec["caller"], rec["callee"], rec["codec"], rec["path"]) == ("alice", "bob", "pcmu", "/call")
    assert (rec["reason"], rec["initiator"]) == ("done", "agent")
    assert rec["start_time"] <= rec["answer_time"] <= rec["hangup_time"]
    assert rec["frames_out"] > 10 and rec["metrics"]["ttfb.tts.piper"]["count"] == 1


async def test_dropped_agent_resumes_within_grace(secure_server):
    client = await _call(secure_server, "resume-1")
    await client.answer_then_drop_mid_track("p", answer_timeout_s=15, start_timeout_s=20)
    again = await _call(secure_server, "resume-1")
    # Events from while it was away arrive first (the track ended meanwhile).
    end = await again.wait_for("trackEnd", timeout=10, playId="p")
    assert end["duration"] > 500
    await again.send({"command": "tts", "text": "Welcome back.", "playId": "q"})
    await again.wait_for("trackEnd", timeout=20, playId="q")
    await again.send({"command": "hangup"})
    await again.wait_for("hangup")
    await again.close()
    (rec,) = await _records(secure_server, "resume-1")
    assert rec["reason"] == "hangup"


async def test_dropped_agent_not_back_in_time_ends_the_call(secure_server):
    client = await _call(secure_server, "gone-1")
    await client.send({"command": "invite", "option": {"codec": "pcm"}})
    await client.wait_for("answer", timeout=15)
    await client.ws.close()
    await asyncio.sleep(4.0)  # grace is 3 s
    (rec,) = await _records(secure_server, "gone-1")
    assert (rec["reason"], rec["initiator"]) == ("agent_gone", "system")
    # The id is free again: a new call may use it.
    fresh = await _call(secure_server, "gone-1")
    await fresh.send({"command": "invite", "option": {"codec": "pcm"}})
    await fresh.wait_for("answer", timeout=15)
    await fresh.close()


def test_env_token_is_read_by_config(monkeypatch):
    from voxray.config import SecuritySettings

    monkeypatch.setenv("VOXRAY_TOKEN", "from-env")
    assert SecuritySettings(api_tokens=["a"]).tokens() == ["a", "from-env"]
    monkeypatch.delenv("VOXRAY_TOKEN")
    assert os.environ.get("VOXRAY_TOKEN") is None and SecuritySettings().tokens() == []


async def test_console_uses_the_token_for_webrtc_and_the_api(secure_server, tmp_path, speech16k):
    """The console opened as /console?token=...: its WebSocket and fetches carry the token."""
    from tests.test_console_browser import CHROMIUM, chromium_args
    from voxray.speech import write_wav

    if not CHROMIUM.exists():
        pytest.skip(f"{CHROMIUM} is absent (apt-get install chromium; scripts/install.sh does)")
    from playwright.async_api import async_playwright

    wav = tmp_path / "mic.wav"
    write_wav(wav, speech16k)
    async with async_playwright() as pw:
        ctx = await pw.chromium.launch_persistent_context(
            str(tmp_path / "profile"), executable_path=str(CHROMIUM), headless=True,
            args=chromium_args(wav), permissions=["microphone"])
        try:
            page = await ctx.new_page()
            await page.goto(f"http://{secure_server}/console")  # no token: the socket is refused
            await page.click("#call")
            await page.wait_for_function("['failed', 'ended'].includes(window.voxray.state)", timeout=30_000)
            await page.goto(f"http://{secure_server}/console?token={TOKEN}")
            await page.click("#call")
            await page.wait_for_function("window.voxray.state === 'in-call'", timeout=60_000)
            call_id = await page.evaluate("window.voxray.callId")
            # The call list (an authorized fetch) shows this call.
            await page.wait_for_function(
                f"document.body.innerText.includes({call_id!r})", timeout=15_000)
            await page.click("#hangup")
            await page.wait_for_function("window.voxray.events.some(e => e.event === 'hangup')", timeout=30_000)
        finally:
            await ctx.close()


async def test_dump_writes_every_command_and_event(secure_server, tmp_path):
    import uuid

    from voxray.config import SecuritySettings

    call_id = f"dumped-{uuid.uuid4().hex[:8]}"
    client = CallClient(await websockets.connect(
        f"ws://{secure_server}/call?id={call_id}&dump=true&token={TOKEN}", max_size=2**22))
    await client.send({"command": "invite", "option": {"codec": "pcm"}})
    await client.wait_for("answer", timeout=15)
    await client.send("{broken")
    await client.wait_for("error")
    await client.send({"command": "hangup"})
    await client.wait_for("hangup")
    await client.close()
    path = os.path.expanduser(os.path.join(SecuritySettings().dump_dir, f"{call_id}.jsonl"))
    for _ in range(50):
        if os.path.exists(path) and "hangup" in open(path).read():
            break
        await asyncio.sleep(0.1)
    import json

    lines = [json.loads(line) for line in open(path)]
    assert [(x["dir"], json.loads(x["msg"])["command"] if x["dir"] == "in" and x["msg"].startswith('{"') else None)
            for x in lines][0] == ("in", "invite")
    events = [json.loads(x["msg"])["event"] for x in lines if x["dir"] == "out"]
    assert events == ["answer", "error", "hangup"]
    assert any(x["msg"] == "{broken" for x in lines)


async def _health_once_idle(server: str) -> dict:
    """/healthz once the replica holds no call (or after 20 s)."""
    async with httpx.AsyncClient() as http:
        for _ in range(100):
            health = (await http.get(f"http://{server}/healthz", params={"token": TOKEN})).json()
            if health["calls"] == 0:
                break
            await asyncio.sleep(0.2)
    return health


async def test_calls_over_max_calls_are_refused_with_503_and_admitted_again(secure_server):
    await _health_once_idle(secure_server)  # calls of earlier tests (held for resume) end first
    clients = [await _call(secure_server, f"cap-{i}") for i in range(MAX_CALLS)]
    try:
        for c in clients:
            await c.send({"command": "invite", "option": {"codec": "pcm"}})
            await c.wait_for("answer", timeout=15)
        extra = await _call(secure_server, "cap-extra")
        err = await extra.wait_for("error", timeout=10)
        assert err["code"] == 503 and "max_calls" in err["error"] and "try again" in err["error"], err
        await asyncio.wait_for(extra.closed.wait(), 10)
        assert extra.ws.close_code == 1013  # Try Again Later
        # The admitted calls are untouched; one ends, and a new call gets in.
        await clients[0].send({"command": "hangup"})
        await clients[0].wait_for("hangup")
        await clients[0].close()
        again = None
        for _ in range(50):
            candidate = await _call(secure_server, "cap-again")
            try:
                await candidate.send({"command": "invite", "option": {"codec": "pcm"}})
                await candidate.wait_for("answer", timeout=10)
                again = candidate
                break
            except (AssertionError, websockets.ConnectionClosed):  # the ended call may still be leaving
                await candidate.close()
                await asyncio.sleep(0.2)
        assert again is not None, "no new call admitted after one ended"
        clients[0] = again
        async with httpx.AsyncClient() as http:
            health = (await http.get(f"http://{secure_server}/healthz", params={"token": TOKEN})).json()
        assert health["refused_calls"] >= 1
    finally:
        for c in clients:
            await c.close()
    health = await _health_once_idle(secure_server)
    assert health["calls"] == 0, health
