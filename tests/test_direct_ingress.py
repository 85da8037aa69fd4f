"""deployments/direct_ingress.py: a uvicorn server shutting down keeps its open WebSockets.

A real uvicorn server (the one Ray's direct ingress runs in each Ingress replica) and a
real WebSocket client: the server is told to exit while a call is open, as Ray does when
the replica drains.
"""

from __future__ import annotations

import asyncio
import json
import socket
import subprocess
import sys

import uvicorn
import websockets
from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol

from voxray.deployments import direct_ingress
from voxray.deployments.direct_ingress import _patch, _patch_compression


async def echo_app(scope, receive, send) -> None:
    assert scope["type"] == "websocket"
    assert (await receive())["type"] == "websocket.connect"
    await send({"type": "websocket.accept"})
    while True:
        msg = await receive()
        if msg["type"] == "websocket.disconnect":
            return
        await send({"type": "websocket.send", "text": msg.get("text") or ""})


async def serve(protocol: type) -> tuple[uvicorn.Server, asyncio.Task, int]:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(echo_app, ws=protocol, lifespan="off", log_level="warning"))
    server.install_signal_handlers = lambda: None  # as Ray does: not the main thread's server
    task = asyncio.create_task(server.serve(sockets=[sock]))
    while not server.started:
        await asyncio.sleep(0.01)
    return server, task, port


async def shut_down_during_a_call(protocol: type) -> dict:
    server, task, port = await serve(protocol)
    out: dict = {}
    async with websockets.connect(f"ws://127.0.0.1:{port}/call") as ws:
        await ws.send("before")
        assert await ws.recv() == "before"
        server.should_exit = True  # what Ray's drain does to the replica's server
        await asyncio.sleep(0.5)
        try:
            await ws.send("during")
            out["during"] = await asyncio.wait_for(ws.recv(), 2)
        except websockets.ConnectionClosed as exc:
            out["closed_with"] = exc.rcvd.code if exc.rcvd else None
        try:
            await asyncio.wait_for(websockets.connect(f"ws://127.0.0.1:{port}/call"), 2)
            out["new_connection"] = "accepted"
        except (OSError, asyncio.TimeoutError, websockets.InvalidHandshake):
            out["new_connection"] = "refused"
        out["server_waits_for_the_call"] = not task.done()
    await asyncio.wait_for(task, 5)  # the call closed: the server finishes its shutdown
    return out


async def test_uvicorn_alone_cuts_an_open_call_with_1012():
    class Plain(WebSocketsSansIOProtocol):
        pass

    out = await shut_down_during_a_call(Plain)
    assert out["closed_with"] == 1012 and "during" not in out, out


async def test_patched_the_call_goes_on_while_the_listener_refuses_new_ones():
    class Kept(WebSocketsSansIOProtocol):
        pass

    assert _patch(Kept) and not _patch(Kept)  # idempotent
    out = await shut_down_during_a_call(Kept)
    assert out.get("during") == "during", out
    assert out["new_connection"] == "refused", out
    assert out["server_waits_for_the_call"], out


def test_keep_calls_through_shutdown_patches_the_protocol_uvicorn_picks():
    # In a fresh interpreter: the patch is process-wide, as it is in the replica.
    code = ("import json\n"
            "from voxray.deployments.direct_ingress import keep_calls_through_shutdown as keep\n"
            "from uvicorn.protocols.websockets.auto import AutoWebSocketsProtocol as P\n"
            "print(json.dumps([keep(), keep(), P.__name__, getattr(P.shutdown, '_voxray_keeps_calls', False)]))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True)
    first, second, picked, marked = json.loads(out.stdout.strip().splitlines()[-1])
    assert picked in first and second == [] and marked is True, out.stdout


async def extensions_agreed(protocol: type) -> str | None:
    """What a client offering permessage-deflate (websockets' default) and the server agreed on."""
    server, task, port = await serve(protocol)
    try:
        async with websockets.connect(f"ws://127.0.0.1:{port}/call") as ws:
            await ws.send("x" * 2000)
            assert await ws.recv() == "x" * 2000
            return ws.response.headers.get("Sec-WebSocket-Extensions")
    finally:
        server.should_exit = True
        await asyncio.wait_for(task, 5)


async def test_compression_is_declined_when_set_off_and_offered_when_set_on(monkeypatch):
    class Plain(WebSocketsSansIOProtocol):
        pass

    assert "permessage-deflate" in (await extensions_agreed(Plain) or "")  # uvicorn alone agrees to it

    class Patched(WebSocketsSansIOProtocol):
        pass

    assert _patch_compression(Patched) and not _patch_compression(Patched)  # idempotent
    monkeypatch.setattr(direct_ingress, "_compression", {"enabled": False})
    assert await extensions_agreed(Patched) is None  # declined: the call goes on in plain frames
    monkeypatch.setattr(direct_ingress, "_compression", {"enabled": True})
    assert "permessage-deflate" in (await extensions_agreed(Patched) or "")
