"""What permessage-deflate costs an agent's socket: CPU per 20 ms audio frame, each end.

The same sans-I/O protocols uvicorn's server (`WebSocketsSansIOProtocol`, with the
extension settings it offers) and a `websockets` client use, fed the bench's Piper
sentence as 20 ms frames, PCM and G.711 mu-law, with and without the extension; each
side's parse and frame work is timed on one thread (CPU time). Run:
`.venv/bin/python bench/ws_compression.py`.
"""

from __future__ import annotations

import time

import numpy as np
from websockets.client import ClientProtocol
from websockets.extensions.permessage_deflate import ClientPerMessageDeflateFactory, ServerPerMessageDeflateFactory
from websockets.server import ServerProtocol
from websockets.uri import parse_uri

from voxray.media.codecs import make_codec
from voxray.speech import piper_speech

SENTENCE = "I would like to book a table for two people tonight at seven."
ROUNDS = 20


def connected(deflate: bool) -> tuple[ServerProtocol, ClientProtocol]:
    """A server and a client protocol after their handshake (uvicorn's extension settings)."""
    server = ServerProtocol(extensions=[ServerPerMessageDeflateFactory(
        server_max_window_bits=12, client_max_window_bits=12, compress_settings={"memLevel": 5})] if deflate else [])
    client = ClientProtocol(parse_uri("ws://127.0.0.1/call"),
                            extensions=[ClientPerMessageDeflateFactory()] if deflate else [])
    client.send_request(client.connect())
    for data in client.data_to_send():
        server.receive_data(data)
    server.send_response(server.accept(server.events_received()[0]))
    for data in server.data_to_send():
        client.receive_data(data)
    client.events_received()
    assert (server.extensions != []) == deflate
    return server, client


def hop(sender, receiver, frame: bytes) -> tuple[float, float, int]:
    """One frame from one protocol to the other: CPU seconds to send it and to take it in, and its wire bytes."""
    t0 = time.process_time()
    sender.send_binary(frame)
    wire = sender.data_to_send()
    t1 = time.process_time()
    for data in wire:
        receiver.receive_data(data)
    receiver.events_received()
    return t1 - t0, time.process_time() - t1, sum(len(d) for d in wire)


def timed(frames: list[bytes], deflate: bool) -> dict[str, float]:
    """Microseconds of CPU per frame: server receiving, server sending, client sending, client receiving."""
    server, client = connected(deflate)
    cpu = dict.fromkeys(("server in", "server out", "client out", "client in"), 0.0)
    wire = 0
    for _ in range(ROUNDS):
        for frame in frames:
            client_out, server_in, _ = hop(client, server, frame)
            server_out, client_in, down = hop(server, client, frame)
            cpu["client out"] += client_out
            cpu["server in"] += server_in
            cpu["server out"] += server_out
            cpu["client in"] += client_in
            wire += down
    n = ROUNDS * len(frames)
    out = {k: v / n * 1e6 for k, v in cpu.items()}
    out["wire bytes"] = wire / n
    return out


def main() -> None:
    speech = np.concatenate((np.zeros(8000, np.int16), piper_speech(SENTENCE, 16000), np.zeros(8000, np.int16)))
    print("permessage-deflate on an agent's socket: CPU us per 20 ms frame (one thread), the bench's sentence")
    print(f"{'codec':6} {'deflate':8} {'frame B':>7} {'wire B':>7} {'srv in':>7} {'srv out':>7} "
          f"{'cli out':>7} {'cli in':>7} {'both ends':>9}")
    for name in ("pcm", "pcmu"):
        codec = make_codec(name)
        pcm = speech if codec.sample_rate == 16000 else speech[::2]
        step = codec.sample_rate // 50
        frames = [codec.encode(pcm[i:i + step]) for i in range(0, pcm.size - step + 1, step)]
        for deflate in (True, False):
            r = timed(frames, deflate)
            total = r["server in"] + r["server out"] + r["client out"] + r["client in"]
            print(f"{name:6} {'on' if deflate else 'off':8} {len(frames[0]):7d} {r['wire bytes']:7.0f} "
                  f"{r['server in']:7.1f} {r['server out']:7.1f} {r['client out']:7.1f} {r['client in']:7.1f} "
                  f"{total:9.1f}")


if __name__ == "__main__":
    main()
