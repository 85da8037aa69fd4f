"""OpenAI-compatible chat completions: the SSE wire format and an httpx client for it.

A streamed answer is Server-Sent Events: `data: {chunk JSON}` lines, a blank line after each
event, and `data: [DONE]` at the end. Each chunk's `choices[0].delta` holds a text token
(`content`) or tool-call fragments (`tool_calls[i]`: `index`, then `id` and `function.name`
once, then `function.arguments` in pieces). Parsing is kept apart from I/O (`SseDecoder`,
`chunk_events`) so it is tested byte for byte without a server.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import httpx


@dataclass(frozen=True)
class TextDelta:
    text: str


@dataclass(frozen=True)
class ToolCallDelta:
    """One fragment of a streamed tool call; `index` ties the fragments of one call together."""

    index: int
    id: str | None = None
    name: str | None = None
    arguments: str = ""


@dataclass(frozen=True)
class StreamEnd:
    finish_reason: str | None = None


StreamItem = TextDelta | ToolCallDelta | StreamEnd


class ChatError(RuntimeError):
    pass


class SseDecoder:
    """Lines in, event data out (the WHATWG event-stream rules that chat servers use)."""

    def __init__(self) -> None:
        self._data: list[str] = []

    def feed_line(self, line: str) -> str | None:
        line = line.rstrip("\r\n")
        if not line:  # a blank line dispatches the event collected so far
            return self.flush()
        if line.startswith(":"):  # comment (keep-alives)
            return None
        field, _, value = line.partition(":")
        if value.startswith(" "):
            value = value[1:]
        if field == "data":
            self._data.append(value)
        return None  # event:, id:, retry: carry nothing chat completions use

    def flush(self) -> str | None:
        if not self._data:
            return None
        data, self._data = "\n".join(self._data), []
        return data


def chunk_events(chunk: dict[str, Any]) -> list[StreamItem]:
    """One `chat.completion.chunk` as stream items (only the first choice is used)."""
    if "error" in chunk:
        err = chunk["error"]
        raise ChatError(err.get("message", str(err)) if isinstance(err, dict) else str(err))
    out: list[StreamItem] = []
    for choice in chunk.get("choices") or []:
        if choice.get("index", 0) != 0:
            continue
        delta = choice.get("delta") or {}
        if delta.get("content"):
            out.append(TextDelta(delta["content"]))
        for i, tc in enumerate(delta.get("tool_calls") or []):
            fn = tc.get("function") or {}
            out.append(ToolCallDelta(index=tc.get("index", i), id=tc.get("id"), name=fn.get("name"),
                                     arguments=fn.get("arguments") or ""))
        if choice.get("finish_reason"):
            out.append(StreamEnd(choice["finish_reason"]))
    return out


class ChatClient:
    """POST {base_url}/chat/completions; `stream` yields items as they arrive, `complete` the whole answer."""

    def __init__(self, base_url: str, model: str, api_key: str | None = None, *,
                 temperature: float | None = None, max_tokens: int | None = None,
                 timeout_s: float = 60.0, http: httpx.AsyncClient | None = None) -> None:
        self.url = base_url.rstrip("/") + "/chat/completions"
        self.model = model
        self.temperature = temperature
        self.max_tokens = max_tokens
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        # connect/read timeouts apply per chunk, so a long answer is fine while tokens keep coming.
        self._http = http or httpx.AsyncClient(headers=headers, timeout=httpx.Timeout(timeout_s, connect=10.0))
        self._own_http = http is None

    async def aclose(self) -> None:
        if self._own_http:
            await self._http.aclose()

    async def __aenter__(self) -> ChatClient:
        return self

    async def __aexit__(self, *exc) -> None:
        await self.aclose()

    def _body(self, messages: list[dict], tools: list[dict] | None, stream: bool) -> dict[str, Any]:
        body: dict[str, Any] = {"model": self.model, "messages": messages, "stream": stream}
        if tools:
            body["tools"] = tools
            body["tool_choice"] = "auto"
        if self.temperature is not None:
            body["temperature"] = self.temperature
        if self.max_tokens is not None:
            body["max_tokens"] = self.max_tokens
        return body

    async def stream(self, messages: list[dict], tools: list[dict] | None = None) -> AsyncIterator[StreamItem]:
        """Items of one streamed answer, always ending with one StreamEnd."""
        decoder = SseDecoder()
        finish: str | None = None
        async with self._http.stream("POST", self.url, json=self._body(messages, tools, True)) as resp:
            if resp.status_code >= 400:
                detail = (await resp.aread()).decode("utf-8", "replace")[:500]
                raise ChatError(f"chat completions answered {resp.status_code}: {detail}")
            done = False
            async for line in resp.aiter_lines():
                data = decoder.feed_line(line)
                if data is None:
                    continue
                if data.strip() == "[DONE]":
                    done = True
                    break
                for item in chunk_events(json.loads(data)):
                    if isinstance(item, StreamEnd):
                        finish = item.finish_reason
                    else:
                        yield item
            if not done:  # a server that closes without a blank line after its last event
                data = decoder.flush()
                if data and data.strip() != "[DONE]":
                    for item in chunk_events(json.loads(data)):
                        if isinstance(item, StreamEnd):
                            finish = item.finish_reason
                        else:
                            yield item
        yield StreamEnd(finish)

    async def complete(self, messages: list[dict]) -> str:
        """One non-streamed answer's text (the post-call summary)."""
        resp = await self._http.post(self.url, json=self._body(messages, None, False))
        if resp.status_code >= 400:
            raise ChatError(f"chat completions answered {resp.status_code}: {resp.text[:500]}")
        choices = resp.json().get("choices") or []
        if not choices:
            raise ChatError("chat completions answered no choices")
        return (choices[0].get("message") or {}).get("content") or ""
