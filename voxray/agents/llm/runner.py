"""The asyncio adapter: one call's WebSocket, the model client and timers around a Conversation.

Everything that happens (socket events, stream items, timers) goes through one queue into
`Conversation.handle`, so the core is only ever touched from this loop, in order; the actions
it returns are carried out here. After the call: one summary request, attached to the call
record (`POST /call/records/{id}/notes`) and, when the playbook has a `posthook.url`, posted there.

Run: voxray agent --playbook examples/playbooks/receptionist.md --url ws://127.0.0.1:8000/call
"""

from __future__ import annotations

import asyncio
import json
import os
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit, urlunsplit

import httpx
import websockets

from voxray.agents.llm.chat_stream import ChatClient, StreamEnd, TextDelta, ToolCallDelta
from voxray.agents.llm.conversation import (
    CallEnded, CallEvent, CancelLlm, CancelTimer, Conversation, LlmEnd, LlmFailed, LlmText, LlmToolCall,
    SendCommand, SetTimer, StartLlm, Summarize, TimerFired, Transcript,
)
from voxray.agents.llm.playbook import Playbook


@dataclass
class AgentResult:
    call_id: str
    events: list[dict[str, Any]] = field(default_factory=list)  # every JSON event received
    commands: list[dict[str, Any]] = field(default_factory=list)  # every command sent
    messages: list[dict[str, Any]] = field(default_factory=list)  # the chat history at the end
    transcript: str = ""
    summary: str | None = None
    summary_written: bool = False  # the call record has it
    hangup_reason: str | None = None


def client_for(playbook: Playbook, *, base_url: str | None = None, model: str | None = None,
               api_key: str | None = None) -> ChatClient:
    """The playbook's model; flags (or the caller's code) win over its header."""
    llm = playbook.config.llm
    return ChatClient(base_url or llm.base_url or "", model or llm.model or "", api_key or llm.api_key,
                      temperature=llm.temperature, max_tokens=llm.max_tokens)


def with_call_id(url: str) -> tuple[str, str]:
    """The socket URL with an `id` (one is made when absent: the summary is filed under it)."""
    parts = urlsplit(url)
    query = parse_qs(parts.query)
    if query.get("id"):
        return url, query["id"][0]
    call_id = uuid.uuid4().hex
    q = (parts.query + "&" if parts.query else "") + urlencode({"id": call_id})
    return urlunsplit(parts._replace(query=q)), call_id


def notes_url(ws_url: str, call_id: str) -> str:
    """ws://host:port[/prefix]/call... -> http://host:port[/prefix]/call/records/{id}/notes."""
    parts = urlsplit(ws_url)
    scheme = {"ws": "http", "wss": "https"}.get(parts.scheme, parts.scheme)
    root = parts.path[:parts.path.find("/call")] if "/call" in parts.path else ""
    return urlunsplit((scheme, parts.netloc, f"{root}/call/records/{call_id}/notes", "", ""))


def _token(url: str) -> str | None:
    return (parse_qs(urlsplit(url).query).get("token") or [None])[0] or os.environ.get("VOXRAY_TOKEN")


async def run_agent(playbook: Playbook, url: str, *, client: ChatClient | None = None,
                    caller: str | None = None, callee: str | None = None, accept: bool = False,
                    caller_wav: str | None = None, records_url: str | None = None, summary: bool = True,
                    print_fn: Callable[[str], None] = print, timeout_s: float | None = None) -> AgentResult:
    """Hold one call with the playbook's agent; return what happened."""
    url, call_id = with_call_id(url)
    own_client = client is None
    client = client or client_for(playbook)
    conv = Conversation(playbook, call_id=call_id, caller=caller, callee=callee, accept=accept)
    result = AgentResult(call_id=call_id)
    queue: asyncio.Queue = asyncio.Queue()
    llm_tasks: dict[str, asyncio.Task] = {}
    timers: dict[str, asyncio.Task] = {}
    summary_messages: list[dict] | None = None
    closed = object()
    caller_may_speak = asyncio.Event()  # the stand-in caller starts after the greeting

    async def pump(request_id: str, messages: list[dict], tools: list[dict]) -> None:
        try:
            async for item in client.stream(messages, tools):
                if isinstance(item, TextDelta):
                    queue.put_nowait(LlmText(request_id, item.text))
                elif isinstance(item, ToolCallDelta):
                    queue.put_nowait(LlmToolCall(request_id, item.index, item.id, item.name, item.arguments))
                elif isinstance(item, StreamEnd):
                    queue.put_nowait(LlmEnd(request_id, item.finish_reason))
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # the core apologizes; the call goes on
            queue.put_nowait(LlmFailed(request_id, repr(exc)))
        finally:
            llm_tasks.pop(request_id, None)

    async def timer(key: str, seconds: float) -> None:
        await asyncio.sleep(seconds)
        timers.pop(key, None)
        queue.put_nowait(TimerFired(key))

    async def read(ws) -> None:
        try:
            async for message in ws:
                if isinstance(message, str):
                    queue.put_nowait(CallEvent(json.loads(message)))
        except websockets.ConnectionClosed:
            pass
        finally:
            queue.put_nowait(closed)

    async def send(ws, command: dict) -> None:
        result.commands.append(command)
        try:
            await ws.send(json.dumps(command))
        except websockets.ConnectionClosed:
            pass

    headers = {"Authorization": f"Bearer {t}"} if (t := _token(url)) else None
    try:
        async with websockets.connect(url, max_size=2**22, additional_headers=headers) as ws:
            tasks = [asyncio.create_task(read(ws))]
            if caller_wav:
                from voxray.agents.demo import stream_wav

                tasks.append(asyncio.create_task(stream_wav(ws, caller_wav, caller_may_speak)))
            pending = conv.start()
            try:
                async with asyncio.timeout(timeout_s):
                    finished = False
                    while not finished:
                        for action in pending:
                            if isinstance(action, SendCommand):
                                await send(ws, action.command)
                            elif isinstance(action, StartLlm):
                                llm_tasks[action.request_id] = asyncio.create_task(
                                    pump(action.request_id, action.messages, action.tools))
                            elif isinstance(action, CancelLlm):
                                task = llm_tasks.pop(action.request_id, None)
                                if task:
                                    task.cancel()
                            elif isinstance(action, SetTimer):
                                if (old := timers.pop(action.key, None)) is not None:
                                    old.cancel()
                                timers[action.key] = asyncio.create_task(timer(action.key, action.seconds))
                            elif isinstance(action, CancelTimer):
                                if (old := timers.pop(action.key, None)) is not None:
                                    old.cancel()
                            elif isinstance(action, Transcript):
                                print_fn(f"{action.speaker:<6} > {action.text}")
                            elif isinstance(action, Summarize):
                                summary_messages = action.messages
                            elif isinstance(action, CallEnded):
                                result.hangup_reason = action.reason
                                finished = True
                        if finished:
                            break
                        item = await queue.get()
                        if item is closed:
                            item = CallEvent({"event": "hangup", "reason": "agent socket closed"})
                        elif isinstance(item, CallEvent):
                            result.events.append(item.data)
                            name = item.data.get("event")
                            if (name == "trackEnd" and item.data.get("playId") == "greeting") or (
                                    name == "answer" and not playbook.greeting):
                                caller_may_speak.set()
                        pending = conv.handle(item)
            except TimeoutError:
                print_fn("agent  : call timed out; hanging up")
                await send(ws, {"command": "hangup", "reason": "agent timeout", "initiator": "agent"})
                pending = conv.handle(CallEvent({"event": "hangup", "reason": "agent timeout"}))
                summary_messages = next((a.messages for a in pending if isinstance(a, Summarize)), None)
                result.hangup_reason = "agent timeout"
            finally:
                for task in [*tasks, *llm_tasks.values(), *timers.values()]:
                    task.cancel()
        result.messages = conv.messages()
        result.transcript = conv.transcript()
        if summary and summary_messages is not None:
            await _summarize(conv, client, summary_messages, result, records_url or notes_url(url, call_id),
                             _token(url), print_fn)
    finally:
        if own_client:
            await client.aclose()
    return result


async def _summarize(conv: Conversation, client: ChatClient, messages: list[dict], result: AgentResult,
                     records_url: str, token: str | None, print_fn: Callable[[str], None]) -> None:
    try:
        result.summary = (await client.complete(messages)).strip()
    except Exception as exc:
        print_fn(f"summary: failed: {exc!r}")
        return
    print_fn(f"summary: {result.summary}")
    notes = {"summary": result.summary, "transcript": result.transcript, "agent": "voxray.agents.llm",
             "playbook": conv.playbook.name, "model": client.model}
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    async with httpx.AsyncClient(timeout=10.0) as http:
        try:
            resp = await http.post(records_url, json=notes, headers=headers)
            resp.raise_for_status()
            result.summary_written = True
        except httpx.HTTPError as exc:
            print_fn(f"summary: not attached to the call record ({records_url}): {exc!r}")
        hook = conv.config.posthook
        if hook and hook.url:  # active-call's posthook: the summary to the playbook's own endpoint
            body: dict[str, Any] = {"callId": result.call_id, "summary": result.summary,
                                    "hangupReason": result.hangup_reason}
            if hook.include_history:
                body["history"] = result.messages
            try:
                await http.request(hook.method or "POST", hook.url, json=body, headers=hook.headers or {})
            except httpx.HTTPError as exc:
                print_fn(f"summary: posthook {hook.url} failed: {exc!r}")
