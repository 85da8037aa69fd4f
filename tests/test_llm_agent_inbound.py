"""The in-cluster LLM agent's pure parts, without Ray: the webhook's call, the socket URL the
runner connects to, `[agent]` config -> Serve options and constructor arguments, and the calls of
one replica (bounded, hung up on stop) with a stand-in for the runner.

End to end on Ray Serve with a real SIP caller: tests/test_llm_agent_serve.py.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from types import SimpleNamespace

import httpx
import pytest

from voxray.agents.llm.inbound import (
    InboundAgent, WebhookError, default_server_url, http_root, inbound_call, kill_url, outcome, parse_webhook,
    sip_call_url,
)
from voxray.agents.llm.playbook import Playbook, load_playbook, parse_playbook
from voxray.agents.llm.runner import _token, notes_url, with_call_id
from voxray.cluster.llm_agent import agent_init_args, agent_options, agent_playbook, bind_agent
from voxray.config import AgentSettings, Scaling, VoxrayConfig

ROOT = Path(__file__).resolve().parent.parent
PLAYBOOK = """---
llm:
  model: stub-model
  baseUrl: http://127.0.0.1:9/v1
greeting: "Hello, this is the clinic."
---
You are the receptionist of a dental clinic.
"""
# What the UA node POSTs for a ringing inbound call (ua_node/sip/inbound.py).
HOOK = {"caller": "sip:alice@127.0.0.1:5061", "callee": "sip:agent@127.0.0.1:5060",
        "call_id": "3f2a9c0d4b7e4f1a8c6d5e4f3a2b1c0d", "from_tag": "t1", "to_tag": "t2", "sip_call_id": "x@y",
        "dialogId": "3f2a9c0d4b7e4f1a8c6d5e4f3a2b1c0d", "createdAt": "2026-11-26T10:00:00.000+00:00",
        "event": "invite", "headers": ["Call-ID: x@y"], "offer": "v=0"}


# -- the webhook's call and the runner's socket ------------------------------------------------

def test_webhook_body_names_the_call():
    assert parse_webhook(json.dumps(HOOK).encode())["call_id"] == HOOK["call_id"]
    assert parse_webhook({"dialogId": "abc-1"})["call_id"] == "abc-1"  # active-call's name alone
    for body, status in ((b"{not json", 400), (b"[1, 2]", 422), (b"{}", 422), ({"call_id": "a/b"}, 422),
                         ({"call_id": "a?token=x"}, 422), ({"call_id": 12}, 422), ({"call_id": "x" * 129}, 422)):
        with pytest.raises(WebhookError) as err:
            parse_webhook(body)
        assert err.value.status == status, body


def test_server_url_defaults_to_this_app_on_the_replicas_own_node():
    assert default_server_url("0.0.0.0", 8000) == "ws://127.0.0.1:8000"
    assert default_server_url("127.0.0.1", 8123, "/") == "ws://127.0.0.1:8123"
    assert default_server_url("10.0.0.5", 9000, "/llm/") == "ws://10.0.0.5:9000/llm"
    assert default_server_url("::", 8000, "llm") == "ws://127.0.0.1:8000/llm"
    assert default_server_url("fd00::5", 8000) == "ws://[fd00::5]:8000"


def test_webhook_body_to_the_runners_socket_url():
    call = inbound_call(HOOK, "ws://127.0.0.1:8000/llm", "s3cret")
    assert call.url == f"ws://127.0.0.1:8000/llm/call/sip?id={HOOK['call_id']}&token=s3cret"
    assert (call.call_id, call.caller, call.callee) == (HOOK["call_id"], HOOK["caller"], HOOK["callee"])
    # What the runner makes of it: the same id (no new one), the token as its bearer, and the
    # summary filed on this app's call record.
    assert with_call_id(call.url) == (call.url, HOOK["call_id"])
    assert _token(call.url) == "s3cret"
    assert notes_url(call.url, call.call_id) == f"http://127.0.0.1:8000/llm/call/records/{HOOK['call_id']}/notes"
    # No token configured: none in the URL.
    assert inbound_call({"call_id": "c1"}, "ws://h:1").url == "ws://h:1/call/sip?id=c1"


def test_server_url_forms():
    assert sip_call_url("http://h:8000/", "c1") == "ws://h:8000/call/sip?id=c1"
    assert sip_call_url("https://h/pre/call", "c1") == "wss://h/pre/call/sip?id=c1"  # a /call URL: its root
    assert http_root("wss://h:443/pre") == "https://h:443/pre"
    assert kill_url("ws://127.0.0.1:8000/llm", "c1") == "http://127.0.0.1:8000/llm/call/kill/c1"
    for bad in ("127.0.0.1:8000", "ftp://h/", "ws://"):
        with pytest.raises(ValueError):
            sip_call_url(bad, "c1")


# -- [agent] config -> the deployment ---------------------------------------------------------

def test_agent_is_off_by_default_and_the_app_is_unchanged():
    config = VoxrayConfig()
    assert config.agent.enabled is False
    assert bind_agent(config) is None  # cluster/app.py passes no `agent` to the ingress then


def test_agent_options_from_its_scaling():
    config = VoxrayConfig()
    assert agent_options(config) == {"num_replicas": 1, "max_ongoing_requests": 16,
                                     "graceful_shutdown_timeout_s": 1860, "graceful_shutdown_wait_loop_s": 1.0}
    config.agent.scaling = Scaling(min_replicas=1, max_replicas=6, target_ongoing_requests=8,
                                   max_ongoing_requests=10, num_cpus=0.5, max_replicas_per_node=2)
    opts = agent_options(config, declared={"num_cpus": 0.1})
    assert opts["autoscaling_config"] == {"min_replicas": 1, "max_replicas": 6, "target_ongoing_requests": 8,
                                          "upscale_delay_s": 5.0, "downscale_delay_s": 120.0}
    assert opts["max_ongoing_requests"] == 10  # the calls of one replica
    assert opts["ray_actor_options"] == {"num_cpus": 0.5}
    assert opts["max_replicas_per_node"] == 2
    assert "graceful_shutdown_timeout_s" not in opts  # left to the deployment's own


def test_example_config_deploys_the_agent(monkeypatch):
    monkeypatch.chdir(ROOT)  # the example names its playbook relative to the checkout
    monkeypatch.delenv("VOXRAY_TOKEN", raising=False)
    config = VoxrayConfig.load(ROOT / "examples" / "cluster-llm-agent.toml")
    assert config.agent.enabled and config.agent.playbook
    assert config.transports.sip.webhook_url.endswith("/agent/webhook")
    args = agent_init_args(config, env={"OPENAI_API_KEY": "sk-test"})
    assert args["server_url"] == "ws://127.0.0.1:8000"
    assert args["token"] is None
    assert args["max_calls"] == agent_options(config)["max_ongoing_requests"]
    # A drain never cuts a call: the agent hangs up before Serve's budget runs out.
    assert config.agent.call_timeout_s < config.agent.scaling.graceful_shutdown_timeout_s
    defaults = AgentSettings()
    assert defaults.call_timeout_s < defaults.scaling.graceful_shutdown_timeout_s
    book = Playbook.model_validate(args["playbook"])  # what the replica rebuilds
    assert book == load_playbook(ROOT / config.agent.playbook, env={"OPENAI_API_KEY": "sk-test"})
    assert book.config.llm.api_key == "sk-test" and book.greeting


def test_agent_init_args_take_the_token_and_overrides(monkeypatch):
    monkeypatch.delenv("VOXRAY_TOKEN", raising=False)
    config = VoxrayConfig()
    config.serve.port, config.serve.route_prefix = 8100, "/llm"
    config.security.api_tokens = ["t0k"]
    config.agent = AgentSettings(enabled=True, playbook_text=PLAYBOOK, model="other-model",
                                 base_url="http://llm.local/v1", call_timeout_s=60)
    args = agent_init_args(config, env={})
    assert args["token"] == "t0k" and args["server_url"] == "ws://127.0.0.1:8100/llm"
    assert args["call_timeout_s"] == 60 and args["summary"] is True
    llm = Playbook.model_validate(args["playbook"]).config.llm
    assert (llm.model, llm.base_url) == ("other-model", "http://llm.local/v1")
    config.agent.server_url = "http://10.0.0.7:8000"
    assert agent_init_args(config, env={})["server_url"] == "http://10.0.0.7:8000"
    config.agent.server_url = "10.0.0.7:8000"
    with pytest.raises(ValueError):
        agent_init_args(config, env={})
    with pytest.raises(ValueError, match="playbook"):
        agent_playbook(AgentSettings(enabled=True), env={})


def test_every_shipped_playbook_survives_the_trip_to_the_replica():
    for path in (ROOT / "examples" / "playbooks").glob("*.md"):
        book = load_playbook(path, env={})
        assert Playbook.model_validate(book.model_dump()) == book, path


# -- one replica's calls ----------------------------------------------------------------------

class FakeRunner:
    """run_agent's stand-in: records its arguments; each call lasts until `end(call_id)`."""

    def __init__(self, fail: Exception | None = None) -> None:
        self.calls: list[dict] = []
        self.ends: dict[str, asyncio.Event] = {}
        self.fail = fail

    def end(self, call_id: str) -> None:
        self.ends.setdefault(call_id, asyncio.Event()).set()

    async def __call__(self, playbook, url, **kw):
        call_id = with_call_id(url)[1]
        self.calls.append({"playbook": playbook, "url": url, **kw})
        if self.fail:
            raise self.fail
        await self.ends.setdefault(call_id, asyncio.Event()).wait()
        return SimpleNamespace(
            call_id=call_id, hangup_reason="caller said goodbye", summary="s", summary_written=True,
            transcript="Caller: hi",
            events=[{"event": "answer", "sdp": "v=0"}, {"event": "trackEnd", "playId": "greeting"}],
            commands=[{"command": "accept", "option": {}}, {"command": "tts", "text": "Hi", "streaming": True,
                                                           "playId": "a1"}])


async def _until(cond, timeout: float = 2.0) -> None:
    async with asyncio.timeout(timeout):
        while not cond():
            await asyncio.sleep(0.005)


async def test_an_inbound_call_runs_the_playbook_on_its_sip_socket():
    run = FakeRunner()
    book = parse_playbook(PLAYBOOK, env={})
    agent = InboundAgent(book, "ws://127.0.0.1:8000/llm", token="t", call_timeout_s=90, run=run)
    task = asyncio.create_task(agent.answer(HOOK))
    await _until(lambda: run.calls)
    assert agent.result(HOOK["call_id"]) == {"status": "running"} and agent.stats()["calls"] == 1
    kw = run.calls[0]
    assert kw["playbook"] is book and kw["accept"] is True and kw["timeout_s"] == 90 and kw["summary"] is True
    assert kw["url"] == f"ws://127.0.0.1:8000/llm/call/sip?id={HOOK['call_id']}&token=t"
    assert (kw["caller"], kw["callee"]) == (HOOK["caller"], HOOK["callee"])
    run.end(HOOK["call_id"])
    out = await task
    assert out["status"] == "ended" and out["hangup_reason"] == "caller said goodbye" and out["id"] == HOOK["call_id"]
    assert {"event": "trackEnd", "playId": "greeting"} in out["events"]
    assert {"command": "tts", "playId": "a1", "streaming": True} in out["commands"]  # no text kept
    assert agent.result(HOOK["call_id"]) == out
    assert agent.stats() == {"calls": 0, "max_calls": 16, "taken": 1, "refused": 0, "stopping": False}


async def test_calls_per_replica_are_bounded_and_bad_bodies_refused():
    run = FakeRunner()
    agent = InboundAgent(parse_playbook(PLAYBOOK, env={}), "ws://h:1", max_calls=1, run=run)
    first = asyncio.create_task(agent.answer({"call_id": "c1"}))
    await _until(lambda: run.calls)
    assert await agent.answer({"call_id": "c2"}) == {"status": "refused", "why": "busy", "id": "c2"}
    assert (await agent.answer({"nope": 1}))["status"] == "refused"
    run.end("c1")
    assert (await first)["status"] == "ended"
    run.end("c3")
    assert (await agent.answer({"call_id": "c3"}))["status"] == "ended"  # room again
    assert agent.stats()["refused"] == 2


async def test_a_call_that_fails_ends_alone():
    agent = InboundAgent(parse_playbook(PLAYBOOK, env={}), "ws://h:1", run=FakeRunner(fail=OSError("refused")))
    out = await agent.answer({"call_id": "c1"})
    assert out["status"] == "failed" and "refused" in out["error"] and not agent.calls


async def test_stop_hangs_up_through_the_server_then_cancels_what_is_left():
    run = FakeRunner()
    agent = InboundAgent(parse_playbook(PLAYBOOK, env={}), "ws://127.0.0.1:8000/llm", token="t", run=run,
                         stop_wait_s=0.3)
    kills: list[tuple[str, str | None]] = []

    def server(request: httpx.Request) -> httpx.Response:
        kills.append((str(request.url), request.headers.get("authorization")))
        call_id = request.url.path.rsplit("/", 1)[1]
        if call_id == "c1":
            run.end(call_id)  # the server hangs up; this conversation ends as after any hangup
        return httpx.Response(200, json=True)

    calls = [asyncio.create_task(agent.answer({"call_id": c})) for c in ("c1", "c2")]  # c2 ignores the hangup
    await _until(lambda: len(run.calls) == 2)
    async with httpx.AsyncClient(transport=httpx.MockTransport(server)) as http:
        left = await agent.stop(http)
    assert left == 1
    assert sorted(kills) == [("http://127.0.0.1:8000/llm/call/kill/c1", "Bearer t"),
                             ("http://127.0.0.1:8000/llm/call/kill/c2", "Bearer t")]
    assert (await calls[0])["status"] == "ended"
    with pytest.raises(asyncio.CancelledError):
        await calls[1]
    assert agent.result("c2")["status"] == "cancelled" and not agent.calls
    assert (await agent.answer({"call_id": "c9"}))["why"] == "stopping"


async def test_the_ingress_hands_each_call_to_a_replica_and_asks_again_when_one_is_busy(monkeypatch):
    from voxray.deployments import llm_agent

    monkeypatch.setattr(llm_agent, "DISPATCH_RETRY_S", 0.0)
    answers = [{"status": "refused", "why": "busy"}, {"status": "ended", "hangup_reason": "bye"}]
    sent: list[dict] = []
    gate = asyncio.Event()

    async def answer(payload):
        sent.append(payload)
        await gate.wait()
        return answers.pop(0)

    handle = SimpleNamespace(answer=SimpleNamespace(remote=answer))
    dispatch = llm_agent.AgentDispatch(handle)
    assert dispatch.take(parse_webhook(HOOK)) == HOOK["call_id"]
    with pytest.raises(WebhookError) as err:
        dispatch.take(parse_webhook(HOOK))  # the same call twice
    assert err.value.status == 409
    task = dispatch.pending[HOOK["call_id"]]
    gate.set()
    assert await task == {"status": "ended", "hangup_reason": "bye"}
    assert len(sent) == 2 and sent[0]["call_id"] == HOOK["call_id"]
    await asyncio.sleep(0)
    assert not dispatch.pending


def test_outcome_of_a_result_without_events():
    out = outcome(SimpleNamespace(hangup_reason=None, summary=None, transcript=""))
    assert out["status"] == "ended" and out["events"] == [] and out["commands"] == []
