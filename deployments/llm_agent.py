"""The LLM agent inside the cluster: inbound SIP calls answered by a Serve deployment.

The UA node POSTs each ringing inbound call to its webhook; pointed at the ingress's
`POST /agent/webhook` (deployments/ingress.py), the call is handed to `LlmAgentDeployment`
as one `answer` request that lasts as long as the call: the replica runs the playbook's
conversation (voxray/agents/llm/runner.py) on `/call/sip?id=<call id>` back through the
ingress, as an outside agent would. So, as for the ingress's WebSockets, one call is one
ongoing request: `max_ongoing_requests` bounds the calls of a replica (more wait at the
ingress until one frees, ringing meanwhile, up to `transports.sip.answer_timeout_s`) and
autoscaling aims at `target_ongoing_requests` calls per replica ([agent.scaling]).

A replica being stopped (scaled down, redeployed, deleted) takes no new calls and Serve waits
for its calls (ongoing requests) to end, up to graceful_shutdown_timeout_s, before it stops the
replica; a call still up then would be cut (its socket drops; the server ends the call), so the
default budget (1860 s) outlasts `agent.call_timeout_s` (1800 s), at which the agent hangs up
itself. `__del__` then hangs up, through the server (`POST /call/kill/{id}`), any conversation the
replica still runs outside a request, and cancels what outlasts that (a backstop: Serve reaches
it after the drain).

Deployed only with `[agent] enabled = true` (cluster/llm_agent.py, cluster/app.py).
"""

from __future__ import annotations

import asyncio
import contextvars
import os
from typing import Any

from ray import serve

from voxray.agents.llm.inbound import DEFAULT_MAX_CALLS, InboundAgent, WebhookError, parse_webhook
from voxray.agents.llm.playbook import Playbook
from voxray.faults import enable_fault_dumps
from voxray.logs import bind_call, get_logger

__all__ = ["AgentDispatch", "LlmAgentDeployment", "WebhookError", "parse_webhook"]

log = get_logger("voxray.agent")
DISPATCH_TRIES = 3  # a replica that answered "busy" or "stopping": ask again (Serve may pick another)
DISPATCH_RETRY_S = 0.5


@serve.deployment(
    ray_actor_options={"num_cpus": 0.1},  # I/O only: sockets to the ingress and the model's API
    # One call is one ongoing request for its whole life (the same number bounds InboundAgent).
    max_ongoing_requests=DEFAULT_MAX_CALLS,
    graceful_shutdown_timeout_s=1860,  # above AgentSettings.call_timeout_s: a drain never cuts a call
    graceful_shutdown_wait_loop_s=1.0,
)
class LlmAgentDeployment:
    def __init__(self, playbook: dict, server_url: str, token: str | None = None,
                 max_calls: int = DEFAULT_MAX_CALLS, call_timeout_s: float | None = 1800.0,
                 summary: bool = True, api_key_env: str | None = None) -> None:
        enable_fault_dumps()
        book = Playbook.model_validate(playbook)
        if api_key_env and os.environ.get(api_key_env):  # the key where the replica runs wins
            book.config.llm.api_key = os.environ[api_key_env]
        self.agent = InboundAgent(book, server_url, token=token, max_calls=max_calls,
                                  call_timeout_s=call_timeout_s, summary=summary)
        log.info("LLM agent ready", extra={"playbook": book.name, "model": book.config.llm.model,
                                           "server": server_url, "max_calls": max_calls})

    async def answer(self, payload: dict) -> dict:
        """Hold one inbound call (the webhook's body) until it ends; its outcome."""
        return await self.agent.answer(payload)

    def stats(self) -> dict:
        return self.agent.stats()

    def call_result(self, call_id: str) -> dict | None:
        """A recent call's outcome (`running` while it lasts): events, commands, summary."""
        return self.agent.result(call_id)

    async def __del__(self) -> None:
        # Serve awaits this when the replica stops (after its graceful drain).
        agent = getattr(self, "agent", None)
        if agent is not None and not agent.stopping:
            await agent.stop()


class AgentDispatch:
    """The ingress's half: each webhook becomes one `answer` request to an agent replica, held
    (here, in a task of its own) for as long as the call lasts; the webhook is answered at once.

    The request is made outside the webhook request's context, so that request's end (or the
    UA node giving up on it) never cancels the call."""

    def __init__(self, handle) -> None:
        self.handle = handle
        self.pending: dict[str, asyncio.Task] = {}

    def take(self, payload: dict[str, Any]) -> str:
        call_id = payload["call_id"]
        if call_id in self.pending:
            raise WebhookError(f"call '{call_id}' is already with the agent", 409)
        task = asyncio.get_running_loop().create_task(self._hold(payload), context=contextvars.Context())
        self.pending[call_id] = task
        task.add_done_callback(lambda _: self.pending.pop(call_id, None))
        return call_id

    async def _hold(self, payload: dict[str, Any]) -> dict[str, Any] | None:
        call_id = payload["call_id"]
        with bind_call(call_id):
            out: dict[str, Any] | None = None
            for attempt in range(DISPATCH_TRIES):
                try:
                    out = await self.handle.answer.remote(payload)
                except Exception as exc:  # the replica died mid-call, or the deployment is gone
                    log.warning("agent call lost", extra={"error": repr(exc)})
                    return None
                if (out or {}).get("status") == "refused" and out.get("why") in ("busy", "stopping") \
                        and attempt + 1 < DISPATCH_TRIES:
                    await asyncio.sleep(DISPATCH_RETRY_S)
                    continue
                break
            out = out or {}
            log.info("agent call done", extra={k: out.get(k) for k in ("status", "why", "hangup_reason",
                                                                         "duration_s", "error")})
            return out
