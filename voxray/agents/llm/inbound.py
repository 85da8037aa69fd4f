"""Inbound SIP calls answered by the LLM agent inside the cluster: the webhook's call, the
socket URL the runner connects to, and the calls of one process (bounded, ended on shutdown).

No Ray here: deployments/llm_agent.py wraps `InboundAgent` in a Serve deployment, and these
pieces are tested alone (tests/test_llm_agent_inbound.py) with a stand-in for the runner.

The UA node POSTs `{caller, callee, call_id, ...}` (active-call's `dialogId` too) for each
ringing inbound call; the agent connects `<server>/call/sip?id=<call_id>` (with the API token
when the server has one), answers with `accept` and holds the conversation until a hangup.
"""

from __future__ import annotations

import asyncio
import re
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote, urlencode, urlsplit, urlunsplit

import httpx

from voxray.agents.llm.playbook import Playbook
from voxray.logs import bind_call, get_logger

log = get_logger("voxray.agent")

# Call ids the UA node makes are uuid4 hex; anything else that is URL-safe is taken too.
_CALL_ID = re.compile(r"[A-Za-z0-9._~-]{1,128}")
DEFAULT_MAX_CALLS = 16
STOP_WAIT_S = 10.0  # on shutdown: how long hung-up calls get to finish (their summaries)
RECENT_RESULTS = 100  # finished calls whose outcome `result()` still answers


class WebhookError(ValueError):
    """The webhook's body does not name a call (HTTP `status` for the answer)."""

    def __init__(self, message: str, status: int = 422) -> None:
        super().__init__(message)
        self.status = status


@dataclass(frozen=True)
class InboundCall:
    call_id: str
    caller: str | None
    callee: str | None
    url: str  # the call's /call/sip WebSocket, id (and token) in the query


def parse_webhook(body: bytes | str | dict) -> dict[str, Any]:
    """The UA node's webhook body as a dict with a valid `call_id` (WebhookError otherwise)."""
    if isinstance(body, (bytes, str)):
        import json

        try:
            body = json.loads(body or b"null")
        except ValueError:
            raise WebhookError("the webhook body must be JSON", 400) from None
    if not isinstance(body, dict):
        raise WebhookError("the webhook body must be a JSON object")
    call_id = body.get("call_id") or body.get("dialogId")
    if not isinstance(call_id, str) or not _CALL_ID.fullmatch(call_id):
        raise WebhookError("the webhook body needs a `call_id` (letters, digits, '._~-', at most 128)")
    return {**body, "call_id": call_id}


def default_server_url(host: str, port: int, route_prefix: str = "/") -> str:
    """This app as seen from a replica: Serve runs a proxy on every node with a replica, so the
    replica's own node answers on the serve port (a wildcard bind is reached on loopback)."""
    if host in ("", "0.0.0.0", "::", "[::]"):
        host = "127.0.0.1"
    elif ":" in host and not host.startswith("["):
        host = f"[{host}]"
    prefix = "" if route_prefix in ("", "/") else "/" + route_prefix.strip("/")
    return f"ws://{host}:{port}{prefix}"


def _root(server_url: str, scheme_map: dict[str, str]) -> str:
    parts = urlsplit(server_url)
    if parts.scheme not in scheme_map or not parts.netloc:
        raise ValueError(f"server URL must be ws://, wss://, http:// or https://host:port[/prefix]: {server_url!r}")
    path = parts.path.rstrip("/")
    if path.endswith("/call"):  # a /call URL given as the server: its root
        path = path[: -len("/call")]
    return urlunsplit((scheme_map[parts.scheme], parts.netloc, path, "", ""))


def ws_root(server_url: str) -> str:
    return _root(server_url, {"ws": "ws", "wss": "wss", "http": "ws", "https": "wss"})


def http_root(server_url: str) -> str:
    return _root(server_url, {"ws": "http", "wss": "https", "http": "http", "https": "https"})


def sip_call_url(server_url: str, call_id: str, token: str | None = None) -> str:
    """ws://host:port[/prefix]/call/sip?id=<call_id>[&token=...]: the runner's socket for the call."""
    query = {"id": call_id}
    if token:
        query["token"] = token  # the runner sends it as a bearer header too, and on the notes POST
    return f"{ws_root(server_url)}/call/sip?{urlencode(query)}"


def kill_url(server_url: str, call_id: str) -> str:
    return f"{http_root(server_url)}/call/kill/{quote(call_id, safe='')}"


def inbound_call(payload: dict[str, Any], server_url: str, token: str | None = None) -> InboundCall:
    body = parse_webhook(payload)
    caller, callee = body.get("caller"), body.get("callee")
    return InboundCall(call_id=body["call_id"], caller=caller if isinstance(caller, str) else None,
                       callee=callee if isinstance(callee, str) else None,
                       url=sip_call_url(server_url, body["call_id"], token))


# run(playbook, url, caller=, callee=, accept=True, summary=, print_fn=, timeout_s=) -> AgentResult
Runner = Callable[..., Awaitable[Any]]


def _default_runner() -> Runner:
    from voxray.agents.llm.runner import run_agent

    return run_agent


def outcome(result: Any) -> dict[str, Any]:
    """What a finished call leaves for `result()`: its ending, summary and what went over its socket
    (event names with their playId, commands without the streamed text)."""
    events = [{k: e[k] for k in ("event", "playId", "reason", "initiator") if k in e}
              for e in getattr(result, "events", [])]
    commands = [{k: c[k] for k in ("command", "playId", "reason", "initiator", "streaming", "endOfStream") if k in c}
                for c in getattr(result, "commands", [])]
    return {"status": "ended", "hangup_reason": getattr(result, "hangup_reason", None),
            "summary": getattr(result, "summary", None),
            "summary_written": getattr(result, "summary_written", False),
            "transcript": getattr(result, "transcript", ""), "events": events, "commands": commands}


class InboundAgent:
    """The calls one process answers: at most `max_calls` at a time, each one `run` (the runner's
    `run_agent`) on its own /call/sip socket; `stop()` hangs them all up through the server."""

    def __init__(self, playbook: Playbook, server_url: str, *, token: str | None = None,
                 max_calls: int = DEFAULT_MAX_CALLS, call_timeout_s: float | None = None, summary: bool = True,
                 run: Runner | None = None, stop_wait_s: float = STOP_WAIT_S) -> None:
        ws_root(server_url)  # fails now on a URL it could never connect to
        self.playbook = playbook
        self.server_url = server_url
        self.token = token
        self.max_calls = max_calls
        self.call_timeout_s = call_timeout_s
        self.summary = summary
        self.run = run or _default_runner()
        self.stop_wait_s = stop_wait_s
        self.calls: dict[str, asyncio.Task] = {}
        self.results: OrderedDict[str, dict[str, Any]] = OrderedDict()
        self.stopping = False
        self.taken = 0
        self.refused = 0

    def stats(self) -> dict[str, Any]:
        return {"calls": len(self.calls), "max_calls": self.max_calls, "taken": self.taken,
                "refused": self.refused, "stopping": self.stopping}

    def result(self, call_id: str) -> dict[str, Any] | None:
        """A call's outcome: `running` while it lasts, then what `answer` returned (recent calls)."""
        if call_id in self.calls:
            return {"status": "running"}
        return self.results.get(call_id)

    def _refuse(self, call_id: str | None, why: str) -> dict[str, Any]:
        self.refused += 1
        with bind_call(call_id):
            log.warning("inbound call not taken", extra={"why": why, "calls": len(self.calls)})
        return {"status": "refused", "why": why, "id": call_id}

    async def answer(self, payload: dict[str, Any]) -> dict[str, Any]:
        """Hold one inbound call until it ends; returns its outcome (or why it was not taken)."""
        try:
            call = inbound_call(payload, self.server_url, self.token)
        except WebhookError as exc:
            return self._refuse(None, str(exc))
        if self.stopping:
            return self._refuse(call.call_id, "stopping")
        if len(self.calls) >= self.max_calls:
            return self._refuse(call.call_id, "busy")
        if call.call_id in self.calls:
            return self._refuse(call.call_id, "already answering this call")
        task = asyncio.current_task()
        assert task is not None
        self.calls[call.call_id] = task
        self.taken += 1
        started = time.monotonic()
        out: dict[str, Any] = {"status": "cancelled"}  # what is left when the task is cancelled
        try:
            out = await self._converse(call)
        except Exception as exc:  # connect refused, 403, a broken socket: this call only
            with bind_call(call.call_id):
                log.warning("agent call failed", extra={"error": repr(exc)})
            out = {"status": "failed", "error": repr(exc)}
        finally:
            self.calls.pop(call.call_id, None)
            out["id"] = call.call_id
            out["duration_s"] = round(time.monotonic() - started, 3)
            self.results[call.call_id] = out
            while len(self.results) > RECENT_RESULTS:
                self.results.popitem(last=False)
        return out

    async def _converse(self, call: InboundCall) -> dict[str, Any]:
        def say(line: str) -> None:
            with bind_call(call.call_id):
                log.info("agent: %s", line, extra={"line": line})

        with bind_call(call.call_id):
            log.info("answering inbound call", extra={"caller": call.caller, "callee": call.callee})
        result = await self.run(self.playbook, call.url, caller=call.caller, callee=call.callee, accept=True,
                                summary=self.summary, print_fn=say, timeout_s=self.call_timeout_s)
        return outcome(result)

    async def stop(self, http: httpx.AsyncClient | None = None) -> int:
        """Take no more calls; hang up those held (`POST /call/kill/{id}`: the conversation sees its
        `hangup` and ends as after any hangup, summary included), wait up to `stop_wait_s`, then
        cancel what is left (its socket closes and the server ends the call). Returns how many calls
        had to be cancelled."""
        self.stopping = True
        if not self.calls:
            return 0
        own = http is None
        http = http or httpx.AsyncClient(timeout=5.0)
        headers = {"Authorization": f"Bearer {self.token}"} if self.token else {}
        try:
            async def kill(call_id: str) -> None:
                try:
                    r = await http.post(kill_url(self.server_url, call_id), headers=headers)
                    if r.status_code >= 300 and r.status_code != 404:  # 404: it ended meanwhile
                        log.warning("hangup on stop refused", extra={"status": r.status_code})
                except httpx.HTTPError as exc:
                    with bind_call(call_id):
                        log.warning("hangup on stop failed", extra={"error": repr(exc)})

            log.info("stopping: hanging up calls", extra={"calls": len(self.calls)})
            await asyncio.gather(*(kill(c) for c in list(self.calls)))
        finally:
            if own:
                await http.aclose()
        tasks = list(self.calls.values())
        if tasks:
            await asyncio.wait(tasks, timeout=self.stop_wait_s)
        left = [t for t in tasks if not t.done()]
        for t in left:
            t.cancel()
        if left:
            await asyncio.wait(left, timeout=2.0)
        return len(left)
