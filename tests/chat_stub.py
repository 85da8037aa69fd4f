"""A local OpenAI-compatible chat-completions server for tests (no network, no keys).

It speaks the real wire format: `POST /v1/chat/completions` with `"stream": true` answers
`text/event-stream` in chunked transfer encoding, one `data: {chat.completion.chunk}` event
per chunk and `data: [DONE]` at the end; tool calls come as `delta.tool_calls[i]` fragments
(id and name first, then the arguments JSON in pieces). Without `stream` it answers one
`chat.completion`. Each request is recorded; a test scripts the answers in order. It also
takes `POST /call/records/{id}/notes` (voxray's endpoint) so the agent's summary can be checked.
"""

from __future__ import annotations

import asyncio
import json
import time
from dataclasses import dataclass, field
from typing import Any


def _chunk(delta: dict[str, Any], finish: str | None = None, model: str = "stub-model") -> dict[str, Any]:
    return {"id": "chatcmpl-stub", "object": "chat.completion.chunk", "created": int(time.time()), "model": model,
            "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}]}


@dataclass
class Reply:
    """One scripted answer: text tokens, then tool calls (name, argument fragments)."""

    tokens: list[str] = field(default_factory=list)
    tool_calls: list[tuple[str, list[str]]] = field(default_factory=list)
    delay_s: float = 0.0  # between chunks (for cancellation tests)
    status: int = 200
    split_bytes: int = 0  # >0: cut the SSE byte stream into HTTP chunks of this size (mid-line)

    def chunks(self) -> list[dict[str, Any]]:
        out = [_chunk({"role": "assistant", "content": ""})]
        out += [_chunk({"content": t}) for t in self.tokens]
        for i, (name, fragments) in enumerate(self.tool_calls):
            out.append(_chunk({"tool_calls": [{"index": i, "id": f"call_{i}_{name}", "type": "function",
                                               "function": {"name": name, "arguments": ""}}]}))
            out += [_chunk({"tool_calls": [{"index": i, "function": {"arguments": f}}]}) for f in fragments]
        out.append(_chunk({}, "tool_calls" if self.tool_calls else "stop"))
        return out

    def message(self) -> dict[str, Any]:
        return {"id": "chatcmpl-stub", "object": "chat.completion", "created": int(time.time()), "model": "stub-model",
                "choices": [{"index": 0, "finish_reason": "stop",
                             "message": {"role": "assistant", "content": "".join(self.tokens)}}]}


class ChatStub:
    def __init__(self, replies: list[Reply] | None = None, script=None) -> None:
        self.replies = list(replies or [])
        # script(request body) -> Reply: answers chosen from what the model is asked (e2e tests,
        # where speech recognition decides how many turns there are); else `replies` in order.
        self.script = script
        self.requests: list[dict[str, Any]] = []  # chat request bodies, in order
        self.headers: list[dict[str, str]] = []
        self.notes: dict[str, list[dict[str, Any]]] = {}  # call id -> notes posted
        self.aborted = 0  # streams the client hung up on before [DONE]
        self.port = 0
        self._server: asyncio.base_events.Server | None = None

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def notes_url(self, call_id: str) -> str:
        return f"http://127.0.0.1:{self.port}/call/records/{call_id}/notes"

    async def __aenter__(self) -> ChatStub:
        self._server = await asyncio.start_server(self._conn, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc) -> None:
        assert self._server is not None
        self._server.close()
        # Keep-alive connections the client has not closed yet: do not wait on them.

    async def _conn(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                line = await reader.readline()
                if not line:
                    return
                method, path, _ = line.decode().split(" ", 2)
                headers: dict[str, str] = {}
                while (h := await reader.readline()) not in (b"\r\n", b"\n", b""):
                    k, _, v = h.decode().partition(":")
                    headers[k.strip().lower()] = v.strip()
                body = await reader.readexactly(int(headers.get("content-length", "0")))
                await self._handle(method, path, headers, body, writer)
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()

    async def _handle(self, method: str, path: str, headers: dict[str, str], body: bytes,
                      writer: asyncio.StreamWriter) -> None:
        if method == "POST" and path.startswith("/call/records/") and path.endswith("/notes"):
            call_id = path[len("/call/records/"):-len("/notes")]
            self.notes.setdefault(call_id, []).append(json.loads(body))
            return self._json(writer, 200, {"id": call_id, "notes": json.loads(body)})
        if method != "POST" or path != "/v1/chat/completions":
            return self._json(writer, 404, {"error": {"message": f"no route {method} {path}"}})
        req = json.loads(body)
        self.requests.append(req)
        self.headers.append(headers)
        if self.script is not None:
            reply = self.script(req)
        elif self.replies:
            reply = self.replies.pop(0)
        else:
            return self._json(writer, 500, {"error": {"message": "the test scripted no more replies"}})
        if reply.status != 200:
            return self._json(writer, reply.status, {"error": {"message": "scripted failure"}})
        if not req.get("stream"):
            return self._json(writer, 200, reply.message())
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nCache-Control: no-cache\r\n"
                     b"Transfer-Encoding: chunked\r\n\r\n")
        events = [f"data: {json.dumps(c)}\n\n".encode() for c in reply.chunks()] + [b"data: [DONE]\n\n"]
        try:
            if reply.split_bytes:
                stream = b"".join(events)
                events = [stream[i:i + reply.split_bytes] for i in range(0, len(stream), reply.split_bytes)]
            for piece in events:
                writer.write(b"%x\r\n%s\r\n" % (len(piece), piece))
                await writer.drain()
                if reply.delay_s:
                    await asyncio.sleep(reply.delay_s)
            writer.write(b"0\r\n\r\n")
            await writer.drain()
        except ConnectionError:
            self.aborted += 1
            raise

    @staticmethod
    def _json(writer: asyncio.StreamWriter, status: int, obj: dict[str, Any]) -> None:
        data = json.dumps(obj).encode()
        writer.write(b"HTTP/1.1 %d X\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s"
                     % (status, len(data), data))
