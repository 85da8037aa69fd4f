"""The Serve ingress: per-call WebSockets and the small HTTP API."""

# No `from __future__ import annotations` here: FastAPI must see real types in
# the route signatures (string annotations turn `ws: WebSocket` into a query param).

import asyncio
import json
import os
import threading
import time
import uuid
from typing import Protocol

from urllib.parse import urlencode

from fastapi import FastAPI, HTTPException, Request, WebSocket
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import HTMLResponse
import ray
from ray import serve

from voxray.deployments.auth import TokenGuard
from voxray.deployments.registry import CallInfo, code_listing, documented_listing
from voxray.admission import Admission, AdmissionSettings
from voxray.config import SecuritySettings
from voxray.media.services import ServeModelServices
from voxray.deployments.agent_channel import DEFAULT_PING_S, AgentChannel, iso, outlive_cancel, ping_interval
from voxray.deployments.call_dump import CallDump
from voxray.deployments.call_media import LocalMedia
from voxray.deployments.console import router as console_router
from voxray.deployments.direct_ingress import keep_calls_through_shutdown, set_compression
from voxray.providers.silero_vad import InProcessVad
from voxray.deployments.remote_media import RemoteMedia
from voxray.deployments.ws_receive import pace_serve_receive
from voxray import metrics
from voxray.faults import enable_fault_dumps
from voxray.loop_watch import LoopWatch
from voxray.logs import bind_call, get_logger
from voxray.protocol.errors import ProtocolError
from voxray.protocol.events import Error, dump_event
from voxray.media.config import MediaConfig
from voxray.media.echo import preload as preload_echo

log = get_logger("voxray.ingress")
NOTES_MAX_BYTES = 64 * 1024  # an agent's notes on one call record (POST /call/records/{id}/notes)
UA_NODE_PLACEMENT_S = 5.0  # how soon a node that joined gets its UA node

class UaNodes(Protocol):
    """Where the UA nodes are (cluster.placement.UaNodeDirectory, given at deploy time)."""

    def local(self, app_name: str, media: dict, transports: dict, admission: dict): ...
    def all(self) -> list: ...
    def place_missing(self, app_name: str, media: dict, transports: dict, admission: dict) -> int: ...


# The schema and its pages are served by the Ingress below, behind the same token as the
# API (FastAPI's own routes would be open to anyone who reaches the port).
api = FastAPI(title="voxray", description="Voice-agent calls over WebSocket; see PROTOCOL.md.",
              docs_url=None, redoc_url=None, openapi_url=None)
api.include_router(console_router)  # GET /console: the WebRTC softphone page


@serve.deployment(
    ray_actor_options={"num_cpus": 0.5},
    # One open call is one ongoing request for its whole life.
    max_ongoing_requests=200,
    graceful_shutdown_timeout_s=60,
)
@serve.ingress(api)
class Ingress:
    def __init__(self, vad, asr, tts, registry, media: dict | None = None,
                 transports: dict | None = None, app_name: str = "voxray",
                 security: dict | None = None, admission: dict | None = None,
                 ua_nodes: UaNodes | None = None, agent=None) -> None:
        enable_fault_dumps()
        if os.environ.get("RAY_SERVE_ENABLE_DIRECT_INGRESS") == "1":
            keep_calls_through_shutdown()  # this replica serves its WebSockets itself (serve.proxy = "haproxy")
        self.ua_nodes = ua_nodes
        self.agent = None  # the in-cluster LLM agent's handle, when deployed ([agent] enabled)
        if agent is not None:
            from voxray.deployments.llm_agent import AgentDispatch

            self.agent = AgentDispatch(agent)
        sec = SecuritySettings.model_validate(security or {})
        self.admission_dict = admission or {}
        # This replica's own gate, fed by its /call sessions' ASR answer times; SIP and
        # WebRTC media live on the UA nodes, which gate their calls themselves.
        self.admission = Admission(AdmissionSettings.model_validate(self.admission_dict),
                                   lambda: self._active("/call"),
                                   lambda v: metrics.set_gauge("admission_limit", v, where="ingress"))
        self.guard = TokenGuard(sec.tokens())
        self.resume_grace_s = sec.resume_grace_s
        self.dump_dir = sec.dump_dir
        self.media_config_dict = media or {}
        self.media_config = MediaConfig(**self.media_config_dict)
        if os.environ.get("RAY_SERVE_ENABLE_DIRECT_INGRESS") == "1":
            set_compression(self.media_config.ws_compression)  # its default lives in MediaConfig alone
        preload_echo()  # calls may turn echo cancellation on: not a 0.3 s import inside the first one
        local_vad = InProcessVad(self.media_config.vad_model) if self.media_config.vad_in_process else None
        self.services = ServeModelServices(vad, asr, tts, on_asr_time=self.admission.observe_asr,
                                           vad_window_s=self.media_config.vad_batch_window_ms / 1000,
                                           vad_infer=local_vad.infer if local_vad else None)
        self.registry = registry
        self.transports = transports or {}
        self.app_name = app_name
        self.ice_server_list = list(self.transports.get("webrtc", {}).get("ice_servers", []))
        self._ua_node = None
        self.calls: dict[str, AgentChannel] = {}
        ctx = serve.get_replica_context()
        self.replica = ctx.replica_id.unique_id if ctx else uuid.uuid4().hex
        self.node_id = ray.get_runtime_context().get_node_id()  # the registry ends our calls if it dies
        self._kill_task: asyncio.Task | None = None
        self.loop_watch = LoopWatch("ingress")  # the calls' loop: started with the first call
        if ua_nodes is not None:
            # Blocking GCS look-ups, every few seconds: a thread of its own, off the event loop.
            threading.Thread(target=self._place_ua_nodes, name="ua-node-placer", daemon=True).start()

    def _place_ua_nodes(self) -> None:
        """Nodes that join the cluster get their UA node from whichever replica looks first
        (the actor name makes it one per node); a node that leaves takes its own with it."""
        while True:
            try:
                started = self.ua_nodes.place_missing(self.app_name, self.media_config_dict, self.transports,
                                                      self.admission_dict)
                if started:
                    log.info("UA nodes started on nodes that joined", extra={"started": started})
            except Exception as exc:
                log.warning("UA node placement failed", extra={"error": repr(exc)})
            time.sleep(UA_NODE_PLACEMENT_S)

    def _ensure_kill_listener(self) -> None:
        if self._kill_task is None or self._kill_task.done():
            self._kill_task = asyncio.get_running_loop().create_task(self._kill_listener())

    async def _kill_listener(self) -> None:
        synced = False  # the registry holds this replica's calls (false after it failed)
        while True:
            try:
                if not synced:
                    await self.registry.sync.remote(self.replica, [c.info for c in self.calls.values() if c.info])
                    synced = True
                ids = await self.registry.wait_kills.remote(self.replica, 10.0)
            except Exception as exc:
                log.warning("registry unreachable", extra={"error": repr(exc)})
                synced = False  # it may come back empty (a replacement): tell it our calls again
                await asyncio.sleep(1.0)
                continue
            for call_id in ids:
                call = self.calls.get(call_id)
                if call is not None:
                    await call.hangup("killed", "system")

    def _authorize(self, request: Request) -> None:
        # Checked in each handler (not a FastAPI dependency): Serve runs a copy of the
        # app object in the replica, so module-level state would not be this replica's.
        if not self.guard.allows(request.headers, request.query_params):
            metrics.inc("auth_rejected_total")
            log.warning("rejected http request: bad or missing token",
                        extra={"path": request.url.path, "rejected_total": self.guard.rejected})
            raise HTTPException(status_code=401, detail="missing or invalid token",
                                headers={"WWW-Authenticate": "Bearer"})

    async def _admit(self, ws: WebSocket, call_id: str, gate: bool = False) -> bool:
        """Auth, then: a new call (True), a resumed one (held here until it ends), or refused.

        gate: apply this replica's admission control (calls whose media runs here)."""
        self.loop_watch.ensure_started()
        self._ensure_kill_listener()
        if not self.guard.allows(ws.headers, ws.query_params):
            metrics.inc("auth_rejected_total")
            log.warning("rejected websocket: bad or missing token",
                        extra={"path": ws.url.path, "client": ws.client.host if ws.client else None,
                               "rejected_total": self.guard.rejected})
            await ws.close(code=1008)  # before accept: the client sees HTTP 403
            return False
        await ws.accept()
        existing = self.calls.get(call_id)
        if existing is not None and existing.suspended:
            await existing.resume(ws)
            return False
        if existing is not None:
            await ws.send_text(dump_event(Error(sender="protocol", error=f"call id '{call_id}' is in use", code=409),
                                          call_id))
            await ws.close(1008)
            return False
        why = self.admission.refusal() if gate else None
        if why is not None:
            metrics.inc("calls_refused_total", path=ws.url.path, reason=why.reason)
            with bind_call(call_id):
                log.warning("call refused", extra={"why": why.text, "refused_total": self.admission.refused})
            retry = self.admission.settings.retry_after_s
            await ws.send_text(dump_event(Error(sender="server", code=503,
                                                error=f"{why.text}; try again in {retry} s"), call_id))
            await ws.close(1013)  # Try Again Later
            return False
        return True

    async def _channel(self, ws: WebSocket, call_id: str, path: str, factory) -> AgentChannel:
        dump = ws.query_params.get("dump", "").lower() in ("1", "true", "yes")
        try:
            ping_s = ping_interval(ws.query_params.get("ping"))
        except ProtocolError as exc:  # told, and the call goes on with the default
            ping_s = DEFAULT_PING_S
            await ws.send_text(dump_event(Error(sender="protocol", error=exc.message, code=exc.code), call_id))
        return AgentChannel(ws, call_id, path, factory, on_answer=self._on_answer, on_end=self._on_end,
                            resume_grace_s=self.resume_grace_s, ping_s=ping_s,
                            recordings_dir=self.media_config.recordings_dir,
                            dump=CallDump(self.dump_dir, call_id) if dump else None)

    @api.websocket("/call")
    async def call(self, ws: WebSocket, id: str | None = None, dump: bool = False) -> None:
        call_id = id or uuid.uuid4().hex
        if not await self._admit(ws, call_id, gate=True):
            return

        def local_media(ch: AgentChannel) -> LocalMedia:
            return LocalMedia(call_id, self.services, self.media_config,
                              emit=ch.emit, send_audio=ch.send_audio, hangup=ch.request_hangup)

        channel = await self._channel(ws, call_id, "/call", local_media)
        # The caller's 20 ms frames come from Serve's proxy one pull per VAD chunk, not one each.
        paced = pace_serve_receive(ws, self.media_config.ws_receive_max_wait_ms / 1000, due=channel.input_due)
        channel.on_reply_expected = paced.wake if paced else None
        await self._hold(channel)

    async def _hold(self, call: AgentChannel) -> None:
        # The call outlives its socket's handler, which Serve's direct ingress cancels as the
        # socket drops: it waits for the agent to come back (resume_grace_s), then ends.
        await outlive_cancel(self._keep(call))

    async def _keep(self, call: AgentChannel) -> None:
        self.calls[call.call_id] = call
        self._count_active(call.path)
        try:
            await call.run()
        finally:
            self.calls.pop(call.call_id, None)
            self._count_active(call.path)
            metrics.inc("calls_total", path=call.path, reason=call.reason or "unknown")

    def _active(self, path: str) -> int:
        return sum(1 for c in self.calls.values() if c.path == path)

    def _count_active(self, path: str) -> None:
        metrics.set_gauge("calls_active", self._active(path), path=path)

    async def _remote_call(self, ws: WebSocket, call_id: str | None, kind: str) -> None:
        """A call whose media a UA worker holds; this socket carries only commands and events."""
        call_id = call_id or uuid.uuid4().hex
        if not await self._admit(ws, call_id):
            return

        async def place():
            node = await self._local_ua_node()
            return await node.place.remote(kind)

        def remote_media(ch: AgentChannel) -> RemoteMedia:
            return RemoteMedia(None, call_id, kind, emit=ch.emit, channel=ch, place=place)

        await self._hold(await self._channel(ws, call_id, f"/call/{kind}", remote_media))

    async def _local_ua_node(self):
        if self._ua_node is None:
            if self.ua_nodes is None:
                raise RuntimeError("this app was deployed without UA nodes (see cluster/app.py)")
            # Looking the actor up (or creating it) is a blocking GCS round trip: off the loop.
            ua = await asyncio.to_thread(self.ua_nodes.local, self.app_name, self.media_config_dict,
                                         self.transports, self.admission_dict)
            await ua.ready.remote()
            self._ua_node = ua
        return self._ua_node

    @api.websocket("/call/webrtc")
    async def call_webrtc(self, ws: WebSocket, id: str | None = None, dump: bool = False) -> None:
        await self._remote_call(ws, id, "webrtc")

    @api.websocket("/call/sip")
    async def call_sip(self, ws: WebSocket, id: str | None = None, dump: bool = False) -> None:
        """Outbound: no id (or a new one), then `invite` with `callee`. Inbound: `?id=` of a
        call a UA node announced (webhook or rule), then accept/reject/ringing."""
        worker = await self._worker_holding(id) if id else None
        if worker is None:
            await self._remote_call(ws, id, "sip")
            return
        if not await self._admit(ws, id):
            return
        from voxray.deployments.sip_media import InboundSipMedia

        def inbound_media(ch: AgentChannel) -> InboundSipMedia:
            return InboundSipMedia(worker, id, emit=ch.emit, channel=ch)

        await self._hold(await self._channel(ws, id, "/call/sip", inbound_media))

    async def _worker_holding(self, call_id: str):
        """The UA worker that holds call_id (an inbound SIP call waiting for its agent), or None."""
        local = await self._local_ua_node()
        worker = await local.find_call.remote(call_id)
        if worker is not None:
            return worker
        for ua in await asyncio.to_thread(self.ua_nodes.all):  # GCS look-ups block: off the loop
            try:
                worker = await ua.find_call.remote(call_id)
            except Exception as exc:
                log.warning("ua node unreachable", extra={"error": repr(exc)})
                continue
            if worker is not None:
                return worker
        return None

    @api.post("/agent/webhook")
    async def agent_webhook(self, request: Request) -> dict:
        """An inbound SIP call for the in-cluster LLM agent (deployments/llm_agent.py): the UA
        node's webhook body; answered at once, the agent connects /call/sip?id= and accepts."""
        self._authorize(request)
        if self.agent is None:
            raise HTTPException(status_code=404, detail="no LLM agent in this app ([agent] enabled = false)")
        from voxray.deployments.llm_agent import WebhookError, parse_webhook

        try:
            payload = parse_webhook(await request.body())
            if await self._worker_holding(payload["call_id"]) is None:
                raise WebhookError(f"no inbound call '{payload['call_id']}' is waiting for an agent", 404)
            return {"id": self.agent.take(payload), "agent": "llm"}
        except WebhookError as exc:
            raise HTTPException(status_code=exc.status, detail=str(exc)) from None

    @api.get("/openapi.json", include_in_schema=False)
    async def openapi(self, request: Request) -> dict:
        self._authorize(request)
        return api.openapi()

    @api.get("/docs", include_in_schema=False)
    async def docs(self, request: Request) -> HTMLResponse:
        self._authorize(request)
        token = TokenGuard.presented(request.headers, request.query_params)
        # The page fetches the schema itself: it carries the token it was opened with.
        query = f"?{urlencode({'token': token})}" if token else ""
        url = request.scope.get("root_path", "") + "/openapi.json" + query
        return get_swagger_ui_html(openapi_url=url, title="voxray API")

    @api.get("/iceservers")
    async def ice_servers(self, request: Request) -> list[dict]:
        self._authorize(request)
        return self.ice_server_list

    async def _on_answer(self, call: AgentChannel) -> None:
        opt = call.option
        info = CallInfo(id=call.call_id, replica=self.replica, path=call.path, codec=opt.codec,
                        caller=opt.caller, callee=opt.callee, created_at=iso(call.start_time),
                        answered_at=iso(call.answer_time), node=self.node_id)
        call.info = info  # kept for re-registering with a replaced registry
        try:
            await self.registry.register.remote(info)
        except Exception as exc:  # the call works without the registry; only listing suffers
            log.warning("register failed", extra={"error": repr(exc)})

    async def _on_end(self, call: AgentChannel) -> None:
        try:
            await self.registry.unregister.remote(call.call_id)
            if call.option is not None:  # a socket that never set a call up leaves no record
                await self.registry.record.remote(call.record())
        except Exception as exc:
            log.warning("call record failed", extra={"error": repr(exc)})

    @api.get("/call/records")
    async def records(self, request: Request, limit: int = 100, id: str | None = None) -> dict:
        self._authorize(request)
        recs = await self.registry.records.remote(max(1, min(limit, 1000)), id)
        return {"records": [r.model_dump() for r in recs]}

    @api.post("/call/records/{call_id}/notes")
    async def annotate_record(self, call_id: str, request: Request) -> dict:
        """An agent's notes on its call (a JSON object, merged by key; e.g. the LLM agent's summary)."""
        self._authorize(request)
        body = await request.body()
        if len(body) > NOTES_MAX_BYTES:
            raise HTTPException(status_code=413, detail=f"notes over {NOTES_MAX_BYTES} bytes")
        try:
            notes = json.loads(body)
        except ValueError:
            raise HTTPException(status_code=400, detail="notes must be JSON") from None
        if not isinstance(notes, dict) or not notes:
            raise HTTPException(status_code=422, detail="notes must be a non-empty JSON object")
        return {"id": call_id, "notes": await self.registry.annotate.remote(call_id, notes)}

    @api.get("/call/lists")
    async def list_calls(self, request: Request) -> dict:
        self._authorize(request)
        calls = await self.registry.list.remote()
        return {"calls": [documented_listing(c) for c in calls]}

    @api.get("/list")
    async def list_calls_code_form(self, request: Request) -> dict:
        """active-call's running code serves its list here, in this shape."""
        self._authorize(request)
        calls = await self.registry.list.remote()
        return {"active_calls": [code_listing(c) for c in calls]}

    async def _kill(self, call_id: str) -> bool:
        self._ensure_kill_listener()
        local = self.calls.get(call_id)
        if local is not None:
            await local.hangup("killed", "system")
            return True
        return await self.registry.request_kill.remote(call_id)

    @api.post("/call/kill/{call_id}")
    async def kill(self, call_id: str, request: Request) -> bool:
        self._authorize(request)
        if await self._kill(call_id):
            return True  # active-call's documented answer
        raise HTTPException(status_code=404, detail=f"no active call '{call_id}'")

    @api.get("/kill/{call_id}")
    async def kill_code_form(self, call_id: str, request: Request) -> dict:
        """active-call's running code: GET, and a status in the body either way."""
        self._authorize(request)
        return {"status": "killed" if await self._kill(call_id) else "not_found", "id": call_id}

    @api.get("/healthz")
    async def healthz(self) -> dict:
        return {"ok": True, "calls": len(self.calls), "replica": self.replica,
                "rejected_auth": self.guard.rejected, "refused_calls": self.admission.refused,
                "admission_limit": round(self.admission.limit, 2), "last_asr_s": self.admission.last_asr_s}
