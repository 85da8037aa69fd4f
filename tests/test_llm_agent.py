"""The LLM agent (voxray/agents/llm): playbook, SSE parsing, the pure conversation core, and the
runner against a local chat-completions stub and a scripted call socket. No Ray, no network."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest
import websockets

from tests.chat_stub import ChatStub, Reply
from voxray.agents.llm.chat_stream import (
    ChatClient, ChatError, SseDecoder, StreamEnd, TextDelta, ToolCallDelta, chunk_events,
)
from voxray.agents.llm.conversation import (
    CallEnded, CallEvent, CancelLlm, CancelTimer, Conversation, LlmEnd, LlmFailed, LlmText, LlmToolCall,
    SendCommand, SetTimer, StartLlm, Summarize, TimerFired, heard_text,
)
from voxray.agents.llm.playbook import PlaybookError, load_playbook, parse_playbook
from voxray.agents.llm.runner import notes_url, run_agent, with_call_id
from voxray.agents.llm.tools import ToolCallBuffer, dtmf_spec, resolve_transfer_target

EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "playbooks" / "receptionist.md"
ENV = {"OPENAI_API_KEY": "sk-test", "OPENAI_BASE_URL": "http://127.0.0.1:9/v1", "OPENAI_MODEL": "stub-model"}

SIMPLE = """---
llm:
  provider: openai
  model: stub-model
  baseUrl: http://127.0.0.1:9/v1
greeting: "Hello! How can I help?"
goodbye: "Bye now."
transfer:
  targets:
    sales: "sip:sales@example.com"
dtmfCollectors:
  pin:
    description: "4-digit PIN"
    digits: 4
    finishKey: "#"
    timeout: 20
    interDigitTimeout: 4
    validation:
      pattern: "^[0-9]{4}$"
      errorMessage: "Four digits, please."
    retryTimes: 1
---
You are a test agent for {{ caller }}.
"""


def pb(text: str = SIMPLE):
    return parse_playbook(text, env={})


def cmds(actions) -> list[dict]:
    return [a.command for a in actions if isinstance(a, SendCommand)]


def of(actions, kind):
    return [a for a in actions if isinstance(a, kind)]


def answered(text: str = SIMPLE, **kw) -> Conversation:
    conv = Conversation(pb(text), call_id="c1", caller="alice", **kw)
    conv.start()
    conv.handle(CallEvent({"event": "answer", "trackId": "c1"}))
    return conv


def ask(conv: Conversation, text: str, index: int = 0) -> StartLlm:
    (start,) = of(conv.handle(CallEvent({"event": "asrFinal", "text": text, "index": index})), StartLlm)
    return start


def tool_call(conv: Conversation, rid: str, name: str, fragments: list[str], index: int = 0) -> None:
    conv.handle(LlmToolCall(rid, index, id=f"call_{name}", name=name, arguments=""))
    for f in fragments:
        conv.handle(LlmToolCall(rid, index, arguments=f))


# ---- playbook ---------------------------------------------------------------------------


def test_example_playbook_parses_with_env_expansion_and_inline_dtmf_tags():
    p = load_playbook(EXAMPLE, env=ENV)
    c = p.config
    assert (c.llm.model, c.llm.base_url, c.llm.api_key) == ("stub-model", "http://127.0.0.1:9/v1", "sk-test")
    assert c.llm.temperature == 0.3
    assert p.greeting.startswith("Hello, this is Nova")
    assert c.follow_up is not None and (c.follow_up.timeout, c.follow_up.max) == (10000, 2)
    assert c.dtmf["0"].action == "transfer" and c.dtmf["0"].target == "sip:frontdesk@acme-dental.example"
    assert c.dtmf["9"].action == "hangup"
    pid = c.dtmf_collectors["patient_id"]
    assert (pid.digits, pid.finish_key, pid.retry_times, pid.validation.pattern) == (6, "#", 2, r"^\d{6}$")
    assert c.transfer.targets["billing"] == "sip:billing@acme-dental.example"
    assert "<dtmf" not in p.prompt and p.prompt.startswith("# Role")
    opt = p.invite_option(caller="alice")
    assert opt["asr"] == {"provider": "whisper", "language": "en"} and opt["tts"]["provider"] == "piper"
    assert opt["bargeIn"] == {"enabled": True, "minSpeechMs": 200, "ignoreMs": 400}
    assert opt["caller"] == "alice"


def test_unset_env_vars_fall_back_to_defaults_and_active_call_playbook_loads():
    # active-call's own config/playbook/hello.md, trimmed: unknown sections are ignored.
    hello = """---
asr:
  provider: "sensevoice"
llm:
  provider: "aliyun"
  apiKey: "${NO_SUCH_KEY_VAR}"
tts:
  provider: "supertonic"
  speaker: "F1"
denoise: true
greeting: "Hello, how can i help you?"
interruption:
  strategy: "none"
followup:
  timeout: 10000
  max: 2
ambiance:
 path: "./config/office.wav"
---
# Role and Purpose
You are an intelligent, polite AI assistant.
"""
    p = parse_playbook(hello, env={"OPENAI_API_KEY": "from-env"})
    assert p.config.llm.api_key == "from-env"  # ${NO_SUCH_KEY_VAR} unset -> the env fallback
    assert p.config.llm.base_url == "https://api.openai.com/v1"
    assert p.config.denoise is True and p.invite_option()["denoise"] is True
    assert p.invite_option()["bargeIn"] == {"enabled": False}
    assert p.prompt.startswith("# Role and Purpose")
    with pytest.raises(PlaybookError):
        parse_playbook("no header here")


# ---- SSE and tool-call assembly ---------------------------------------------------------


def test_sse_decoder_joins_data_lines_skips_comments_and_dispatches_on_blank_line():
    d = SseDecoder()
    out = [d.feed_line(x) for x in [": keep-alive", "event: message", 'data: {"a":', 'data: 1}', "", "data:[DONE]", ""]]
    assert [o for o in out if o is not None] == ['{"a":\n1}', "[DONE]"]


def test_chunk_events_reads_text_tool_fragments_and_finish():
    chunk = {"choices": [{"index": 0, "delta": {"content": "Hi", "tool_calls": [
        {"index": 1, "id": "call_x", "function": {"name": "hangup", "arguments": '{"go'}}]},
        "finish_reason": "tool_calls"}]}
    assert chunk_events(chunk) == [TextDelta("Hi"), ToolCallDelta(1, "call_x", "hangup", '{"go'),
                                   StreamEnd("tool_calls")]
    with pytest.raises(ChatError):
        chunk_events({"error": {"message": "rate limited"}})


def test_tool_call_buffer_assembles_interleaved_fragments_by_index():
    buf = ToolCallBuffer()
    buf.add(0, "call_a", "transfer", "")
    buf.add(1, "call_b", "hangup", '{"rea')
    buf.add(0, None, None, '{"target": "sa')
    buf.add(1, None, None, 'son": "done"}')
    buf.add(0, "call_a", "transfer", 'les"}')  # some servers repeat id and name
    a, b = buf.calls()
    assert (a.id, a.name, a.args()) == ("call_a", "transfer", {"target": "sales"})
    assert (b.id, b.name, b.args()) == ("call_b", "hangup", {"reason": "done"})


# ---- the conversation core --------------------------------------------------------------


def test_invite_then_greeting_on_answer():
    conv = Conversation(pb(), call_id="c1", caller="alice")
    (invite,) = cmds(conv.start())
    assert invite["command"] == "invite" and invite["option"]["caller"] == "alice"
    out = conv.handle(CallEvent({"event": "answer"}))
    assert cmds(out) == [{"command": "tts", "text": "Hello! How can I help?", "playId": "greeting"}]
    assert conv.history[0].role == "assistant" and conv.history[0].content == "Hello! How can I help?"
    assert Conversation(pb(), accept=True).start()[0].command["command"] == "accept"


def test_streamed_tokens_become_streaming_tts_with_one_play_id_and_end_of_stream():
    conv = answered()
    start = ask(conv, "What are your hours?")
    assert start.messages[0]["role"] == "system" and "test agent for alice" in start.messages[0]["content"]
    assert start.messages[-2:] == [{"role": "assistant", "content": "Hello! How can I help?"},
                                   {"role": "user", "content": "What are your hours?"}]
    assert {t["function"]["name"] for t in start.tools} == {"hangup", "transfer", "collect_dtmf"}
    sent = []
    for tok in ["We are ", "open ", "nine to five."]:
        sent += cmds(conv.handle(LlmText(start.request_id, tok)))
    sent += cmds(conv.handle(LlmEnd(start.request_id, "stop")))
    pid = sent[0]["playId"]
    assert [c["text"] for c in sent] == ["We are ", "open ", "nine to five.", ""]
    assert all(c["command"] == "tts" and c["streaming"] is True and c["playId"] == pid for c in sent)
    assert sent[-1]["endOfStream"] is True and not any(c.get("endOfStream") for c in sent[:-1])
    assert conv.messages()[-1] == {"role": "assistant", "content": "We are open nine to five."}
    # Items of a request that is no longer current are dropped.
    assert conv.handle(LlmText(start.request_id, "late")) == []


def test_interruption_cuts_history_to_what_was_heard_and_cancels_the_stream():
    conv = answered()
    start = ask(conv, "Tell me about cleaning.")
    for tok in ["Our cleaning ", "takes about ", "an hour and ", "costs ninety dollars"]:
        conv.handle(LlmText(start.request_id, tok))
    pid = conv.round.play_id
    conv.handle(CallEvent({"event": "trackStart", "playId": pid}))
    out = conv.handle(CallEvent({"event": "interruption", "playId": pid, "position": 4, "current": 1500,
                                 "totalDuration": 4000,
                                 "subtitle": "Our cleaning takes about an hour and costs ninety dollars"}))
    assert of(out, CancelLlm) == [CancelLlm(start.request_id)]
    assert {"command": "interrupt"} in cmds(out)  # tokens already on the wire must not start a new track
    assert conv.round is None
    # The rest of the stream is ignored, and the history holds only the heard words.
    assert conv.handle(LlmText(start.request_id, " and more")) == []
    assert conv.handle(LlmEnd(start.request_id)) == []
    nxt = ask(conv, "Wait, how long?", index=1)
    assert nxt.messages[-2:] == [{"role": "assistant", "content": "Our cleaning takes about…"},
                                 {"role": "user", "content": "Wait, how long?"}]


def test_interruption_of_the_greeting_and_heard_text_fallbacks():
    conv = answered()
    conv.handle(CallEvent({"event": "interruption", "playId": "greeting", "subtitle": "Hello! How can I help?",
                           "position": 1, "current": 300, "totalDuration": 1500}))
    assert conv.history[0].content == "Hello!…" and conv.history[0].interrupted
    assert heard_text("one two three four", None, None, 500, 1000) == "one two…"
    assert heard_text("one two", "one two", 2, 900, 1000) == "one two"
    assert heard_text("one two", "one two", 0, 10, 1000) == ""


def test_caller_speaking_again_abandons_an_unheard_answer():
    conv = answered()
    first = ask(conv, "I want to book")
    conv.handle(LlmText(first.request_id, "Sure, for "))
    out = conv.handle(CallEvent({"event": "asrFinal", "text": "a cleaning next week", "index": 1}))
    assert CancelLlm(first.request_id) in out and {"command": "interrupt"} in cmds(out)
    (second,) = of(out, StartLlm)
    # Never played (no trackStart): the cut answer is not in the history.
    assert [m["role"] for m in second.messages] == ["system", "assistant", "user", "user"]


def test_hangup_tool_streamed_in_fragments_says_goodbye_then_hangs_up_after_the_track():
    conv = answered()
    start = ask(conv, "That's all, thanks")
    rid = start.request_id
    conv.handle(LlmText(rid, "You're welcome."))
    tool_call(conv, rid, "hangup", ['{"goodb', 'ye": "Have a gre', 'at day!", "reason": "caller done"}'])
    out = conv.handle(LlmEnd(rid, "tool_calls"))
    pid = conv.history[-2].play_id
    assert cmds(out) == [
        {"command": "tts", "text": " Have a great day!", "streaming": True, "playId": pid},
        {"command": "tts", "text": "", "streaming": True, "endOfStream": True, "playId": pid},
    ]
    assert of(out, SetTimer)[0].key == f"after:{pid}"
    assert not any(c["command"] == "hangup" for c in cmds(out))  # not before the goodbye is heard
    out = conv.handle(CallEvent({"event": "trackEnd", "playId": pid}))
    assert cmds(out) == [{"command": "hangup", "reason": "caller done", "initiator": "agent"}]
    msgs = conv.messages()
    assert msgs[-2]["tool_calls"][0]["function"] == {
        "name": "hangup", "arguments": '{"goodbye": "Have a great day!", "reason": "caller done"}'}
    assert msgs[-1] == {"role": "tool", "tool_call_id": "call_hangup", "content": '{"status": "ok"}'}
    out = conv.handle(CallEvent({"event": "hangup", "reason": "agent"}))
    (summ,) = of(out, Summarize)
    assert "Caller: That's all, thanks" in summ.messages[1]["content"]
    assert "Agent: You're welcome. Have a great day!" in summ.messages[1]["content"]
    assert of(out, CallEnded) == [CallEnded("agent")]
    assert conv.handle(CallEvent({"event": "asrFinal", "text": "hello?"})) == []


def test_hangup_without_words_uses_the_playbook_goodbye_and_the_timer_fallback():
    conv = answered()
    start = ask(conv, "bye")
    tool_call(conv, start.request_id, "hangup", ["{}"])
    out = conv.handle(LlmEnd(start.request_id))
    pid = conv.history[-2].play_id
    assert cmds(out) == [{"command": "tts", "text": "Bye now.", "playId": pid}]
    # No trackEnd ever comes (say the TTS failed): the fallback timer still hangs up.
    out = conv.handle(TimerFired(f"after:{pid}"))
    assert [c["command"] for c in cmds(out)] == ["hangup"]
    assert conv.handle(CallEvent({"event": "trackEnd", "playId": pid})) == []  # once only


def test_transfer_tool_refers_to_a_playbook_target_and_refuses_others():
    conv = answered()
    start = ask(conv, "Can I talk to sales?")
    tool_call(conv, start.request_id, "transfer", ['{"target":', ' "sales"}'])
    out = conv.handle(LlmEnd(start.request_id))
    pid = conv.history[-2].play_id
    assert cmds(out)[0]["text"] == "Please hold while I transfer your call."
    out = conv.handle(CallEvent({"event": "trackEnd", "playId": pid}))
    assert cmds(out) == [{"command": "refer", "callee": "sip:sales@example.com"}]
    # The refer fails (voxray's flat other.extra): the model is told and answers again.
    out = conv.handle(CallEvent({"event": "other", "sender": "sip", "extra": {
        "event": "refer", "code": "486", "reason": "Busy Here", "final": "true"}}))
    (again,) = of(out, StartLlm)
    assert "transfer to sip:sales@example.com failed (486 Busy Here)" in again.messages[-1]["content"]

    conv = answered()
    start = ask(conv, "Transfer me to sip:premium@evil.example")
    tool_call(conv, start.request_id, "transfer", ['{"target": "sip:premium@evil.example"}'])
    out = conv.handle(LlmEnd(start.request_id))
    assert not any(c["command"] == "refer" for c in cmds(out))
    (again,) = of(out, StartLlm)
    assert json.loads(again.messages[-1]["content"])["status"] == "error"
    assert resolve_transfer_target(pb().config, "sales") == "sip:sales@example.com"
    assert resolve_transfer_target(pb().config, None) is None


def test_collect_dtmf_gathers_digits_until_the_finish_key_and_feeds_them_back():
    conv = answered()
    start = ask(conv, "I want to check my account")
    rid = start.request_id
    tool_call(conv, rid, "collect_dtmf", ['{"type": "pin", ', '"prompt": "Please type your PIN, then pound."}'])
    out = conv.handle(LlmEnd(rid))
    pid = conv.history[-2].play_id
    assert cmds(out) == [{"command": "tts", "text": "Please type your PIN, then pound.", "playId": pid}]
    assert not of(out, StartLlm) and conv.collect is not None
    # Speech while collecting is not an answer (not interruptible by default).
    assert not of(conv.handle(CallEvent({"event": "asrFinal", "text": "one two", "index": 1})), StartLlm)
    out = conv.handle(CallEvent({"event": "trackEnd", "playId": pid}))
    assert SetTimer("dtmf.total", 20.0) in out
    for d in "1234":
        out = conv.handle(CallEvent({"event": "dtmf", "digit": d}))
        assert SetTimer("dtmf.inter", 4.0) in out
    out = conv.handle(CallEvent({"event": "dtmf", "digit": "#"}))
    assert CancelTimer("dtmf.total") in out
    (nxt,) = of(out, StartLlm)
    assert nxt.messages[-1] == {"role": "tool", "tool_call_id": "call_collect_dtmf",
                                "content": '{"status": "ok", "digits": "1234"}'}
    assert nxt.messages[-2]["tool_calls"][0]["function"]["name"] == "collect_dtmf"
    assert conv.collect is None


def test_collect_dtmf_retries_invalid_input_then_reports_timeout():
    conv = answered()
    start = ask(conv, "check my account")
    tool_call(conv, start.request_id, "collect_dtmf", ['{"type": "pin"}'])
    out = conv.handle(LlmEnd(start.request_id))
    assert SetTimer("dtmf.total", 20.0) in out  # nothing said: the clock starts now
    conv.handle(CallEvent({"event": "dtmf", "digit": "1"}))
    conv.handle(CallEvent({"event": "dtmf", "digit": "2"}))
    out = conv.handle(CallEvent({"event": "dtmf", "digit": "#"}))  # too short: one retry left
    assert not of(out, StartLlm)
    (retry,) = cmds(out)
    assert retry["text"] == "Four digits, please."
    out = conv.handle(CallEvent({"event": "trackEnd", "playId": retry["playId"]}))
    assert SetTimer("dtmf.total", 20.0) in out
    out = conv.handle(TimerFired("dtmf.total"))
    (nxt,) = of(out, StartLlm)
    assert json.loads(nxt.messages[-1]["content"]) == {"status": "timeout", "digits": ""}


def test_collect_dtmf_ends_at_max_digits_and_spec_merges_template_and_arguments():
    conv = answered()
    start = ask(conv, "pin")
    tool_call(conv, start.request_id, "collect_dtmf", ['{"maxDigits": 3}'])  # no finish key: ends at 3
    conv.handle(LlmEnd(start.request_id))
    conv.handle(CallEvent({"event": "dtmf", "digit": "7"}))
    conv.handle(CallEvent({"event": "dtmf", "digit": "0"}))
    out = conv.handle(CallEvent({"event": "dtmf", "digit": "5"}))
    (nxt,) = of(out, StartLlm)
    assert json.loads(nxt.messages[-1]["content"]) == {"status": "ok", "digits": "705"}
    spec = dtmf_spec(pb().config, {"type": "pin", "timeoutSeconds": 9})
    assert (spec.min_digits, spec.max_digits, spec.finish_key, spec.timeout_s, spec.retries) == (4, 4, "#", 9.0, 1)
    assert spec.valid("1234") and not spec.valid("12a4") and not spec.valid("123")


def test_playbook_dtmf_keys_hang_up_or_transfer_outside_collection():
    conv = answered(EXAMPLE.read_text())
    out = conv.handle(CallEvent({"event": "dtmf", "digit": "0"}))
    assert cmds(out) == [{"command": "refer", "callee": "sip:frontdesk@acme-dental.example"}]
    conv = answered(EXAMPLE.read_text())
    out = conv.handle(CallEvent({"event": "dtmf", "digit": "9"}))
    assert [c["command"] for c in cmds(out)] == ["hangup"]
    conv = answered(EXAMPLE.read_text())
    assert cmds(conv.handle(CallEvent({"event": "dtmf", "digit": "5"}))) == []


def test_follow_up_after_silence_and_model_failure_apology():
    conv = answered(EXAMPLE.read_text())
    out = conv.handle(CallEvent({"event": "trackEnd", "playId": "greeting"}))
    assert SetTimer("followup", 10.0) in out
    (start,) = of(conv.handle(TimerFired("followup")), StartLlm)
    assert "said nothing for 10 seconds" in start.messages[-1]["content"]
    out = conv.handle(LlmFailed(start.request_id, "boom"))
    assert cmds(out)[0]["text"].startswith("Sorry, I had a problem")
    # Speech cancels a pending follow-up.
    conv.handle(CallEvent({"event": "trackEnd", "playId": conv.history[-1].play_id}))
    assert CancelTimer("followup") in conv.handle(CallEvent({"event": "speaking"}))


# ---- chat client against the stub -------------------------------------------------------


async def test_chat_client_streams_text_and_fragmented_tool_calls_from_the_stub():
    reply = Reply(tokens=["Hel", "lo", " there"], tool_calls=[("hangup", ['{"reason":', ' "done"}'])],
                  split_bytes=7)  # HTTP chunks that cut SSE lines anywhere
    async with ChatStub([reply, Reply(tokens=["A summary."]), Reply(status=500)]) as stub:
        async with ChatClient(stub.base_url, "stub-model", "sk-test") as client:
            items = [i async for i in client.stream([{"role": "user", "content": "hi"}], tools=[{"x": 1}])]
            texts = [i.text for i in items if isinstance(i, TextDelta)]
            buf = ToolCallBuffer()
            for i in items:
                if isinstance(i, ToolCallDelta):
                    buf.add(i.index, i.id, i.name, i.arguments)
            assert texts == ["Hel", "lo", " there"]
            (call,) = buf.calls()
            assert (call.id, call.name, call.args()) == ("call_0_hangup", "hangup", {"reason": "done"})
            assert items[-1] == StreamEnd("tool_calls")
            assert await client.complete([{"role": "user", "content": "sum"}]) == "A summary."
            with pytest.raises(ChatError, match="500"):
                async for _ in client.stream([{"role": "user", "content": "x"}]):
                    pass
        assert stub.requests[0]["stream"] is True and stub.requests[0]["tools"] == [{"x": 1}]
        assert stub.requests[1]["stream"] is False
        assert stub.headers[0]["authorization"] == "Bearer sk-test"


# ---- the runner: a scripted call socket + the stub --------------------------------------


class FakeCall:
    """A call's WebSocket as voxray speaks it, driven by a test script."""

    def __init__(self) -> None:
        self.received: list[dict] = []
        self.inbox: asyncio.Queue = asyncio.Queue()
        self.ws = None
        self.connected = asyncio.Event()

    async def handler(self, ws) -> None:
        self.ws = ws
        self.connected.set()
        try:
            async for msg in ws:
                cmd = json.loads(msg)
                self.received.append(cmd)
                await self.inbox.put(cmd)
        except websockets.ConnectionClosed:
            pass

    async def send(self, event: dict) -> None:
        await self.ws.send(json.dumps({"timestamp": 0, "trackId": "t", **event}))

    async def expect(self, command: str, timeout: float = 5.0) -> dict:
        while True:
            cmd = await asyncio.wait_for(self.inbox.get(), timeout)
            if cmd["command"] == command:
                return cmd

    async def stream_until_end(self, timeout: float = 5.0) -> list[dict]:
        out = []
        while True:
            cmd = await asyncio.wait_for(self.inbox.get(), timeout)
            out.append(cmd)
            if cmd["command"] == "tts" and (cmd.get("endOfStream") or not cmd.get("streaming")):
                return out


async def test_runner_holds_a_multi_turn_call_with_tools_and_writes_the_summary():
    playbook = parse_playbook(SIMPLE, env={})
    stub_replies = [
        Reply(tokens=["We open ", "at nine."]),
        Reply(tokens=["Glad to help."], tool_calls=[("hangup", ['{"goodbye": "Go', 'odbye!"}'])]),
        Reply(tokens=["Caller asked about opening hours; agent said nine."]),
    ]
    fake = FakeCall()
    async with ChatStub(stub_replies) as stub, websockets.serve(fake.handler, "127.0.0.1", 0) as server:
        port = server.sockets[0].getsockname()[1]
        lines: list[str] = []
        client = ChatClient(stub.base_url, "stub-model")
        agent = asyncio.create_task(run_agent(playbook, f"ws://127.0.0.1:{port}/call?id=call-42", client=client,
                                              caller="alice", records_url=stub.notes_url("call-42"),
                                              print_fn=lines.append, timeout_s=30))
        invite = await fake.expect("invite")
        assert invite["option"]["caller"] == "alice"
        await fake.send({"event": "answer", "sdp": ""})
        greeting = await fake.expect("tts")
        assert greeting["playId"] == "greeting"
        await fake.send({"event": "trackStart", "playId": "greeting"})
        await fake.send({"event": "trackEnd", "playId": "greeting", "duration": 1200})
        await fake.send({"event": "asrFinal", "index": 0, "text": "When do you open?", "startTime": 0, "endTime": 1})
        answer = await fake.stream_until_end()
        assert "".join(c["text"] for c in answer) == "We open at nine."
        assert len({c["playId"] for c in answer}) == 1 and all(c["streaming"] for c in answer)
        await fake.send({"event": "trackStart", "playId": answer[0]["playId"]})
        await fake.send({"event": "trackEnd", "playId": answer[0]["playId"], "duration": 900})
        await fake.send({"event": "asrFinal", "index": 1, "text": "Great, bye.", "startTime": 2, "endTime": 3})
        bye = await fake.stream_until_end()
        assert "".join(c["text"] for c in bye) == "Glad to help. Goodbye!"
        await fake.send({"event": "trackEnd", "playId": bye[0]["playId"], "duration": 1500})
        hangup = await fake.expect("hangup")
        assert hangup["initiator"] == "agent"
        await fake.send({"event": "hangup", "reason": "agent", "initiator": "agent",
                         "startTime": "x", "hangupTime": "y"})
        result = await asyncio.wait_for(agent, 10)
        await client.aclose()
    # The model saw the whole conversation, with the tools offered.
    second = stub.requests[1]
    assert [m["role"] for m in second["messages"]] == ["system", "assistant", "user", "assistant", "user"]
    assert second["messages"][3]["content"] == "We open at nine."
    assert {t["function"]["name"] for t in second["tools"]} >= {"hangup", "collect_dtmf"}
    summary_req = stub.requests[2]
    assert summary_req["stream"] is False and "Caller: When do you open?" in summary_req["messages"][1]["content"]
    assert result.summary == "Caller asked about opening hours; agent said nine."
    assert result.summary_written
    (notes,) = stub.notes["call-42"]
    assert notes["summary"] == result.summary and notes["agent"] == "voxray.agents.llm"
    assert any(line.startswith("caller > When do you open?") for line in lines)


async def test_runner_barge_in_cancels_the_stream_and_the_next_request_has_the_heard_part():
    playbook = parse_playbook(SIMPLE, env={})
    slow = Reply(tokens=[f"word{i} " for i in range(40)], delay_s=0.05)
    stub_replies = [slow, Reply(tokens=["Okay."]), Reply(tokens=["summary"])]
    fake = FakeCall()
    async with ChatStub(stub_replies) as stub, websockets.serve(fake.handler, "127.0.0.1", 0) as server:
        port = server.sockets[0].getsockname()[1]
        client = ChatClient(stub.base_url, "stub-model")
        agent = asyncio.create_task(run_agent(playbook, f"ws://127.0.0.1:{port}/call?id=c2", client=client,
                                              records_url=stub.notes_url("c2"), print_fn=lambda _: None,
                                              timeout_s=30))
        await fake.expect("invite")
        await fake.send({"event": "answer", "sdp": ""})
        await fake.expect("tts")
        await fake.send({"event": "asrFinal", "index": 0, "text": "Tell me everything", "startTime": 0, "endTime": 1})
        first = [await fake.expect("tts") for _ in range(5)]
        pid = first[0]["playId"]
        await fake.send({"event": "trackStart", "playId": pid})
        await fake.send({"event": "interruption", "playId": pid, "subtitle": "word0 word1 word2 word3 word4",
                         "position": 3, "current": 700, "totalDuration": 2000})
        await fake.expect("interrupt")
        await fake.send({"event": "trackEnd", "playId": pid, "duration": 700})
        await asyncio.sleep(0.3)  # the cancelled stream would have sent more by now
        n_tokens = sum(1 for c in fake.received if c["command"] == "tts" and c.get("playId") == pid)
        assert n_tokens < 15, "the cancelled stream kept going"
        await fake.send({"event": "asrFinal", "index": 1, "text": "Stop, just the price.", "startTime": 2,
                         "endTime": 3})
        nxt = await fake.stream_until_end()
        assert nxt[0]["playId"] != pid
        await fake.send({"event": "hangup", "reason": "caller", "initiator": "caller"})
        result = await asyncio.wait_for(agent, 10)
        await client.aclose()
    msgs = stub.requests[1]["messages"]
    assert msgs[-2:] == [{"role": "assistant", "content": "word0 word1 word2…"},
                         {"role": "user", "content": "Stop, just the price."}]
    assert result.hangup_reason == "caller"


def test_call_id_and_notes_url_from_the_socket_url():
    url, cid = with_call_id("ws://h:8000/call?token=t")
    assert url == f"ws://h:8000/call?token=t&id={cid}" and len(cid) == 32
    assert with_call_id("ws://h/call/sip?id=abc") == ("ws://h/call/sip?id=abc", "abc")
    assert notes_url("wss://h:1/prefix/call/sip?id=abc", "abc") == "https://h:1/prefix/call/records/abc/notes"


async def test_cdr_store_keeps_agent_notes_beside_the_record(tmp_path):
    from voxray.deployments.cdr import CallRecord, CdrStore

    store = CdrStore(str(tmp_path / "cdr.sqlite"))
    # Notes may come before the record (the agent summarizes while the ingress writes the row).
    assert await store.annotate("c9", {"summary": "first", "turns": 3}) == {"summary": "first", "turns": 3}
    await store.add(CallRecord(id="c9", path="/call", reason="agent"))
    await store.annotate("c9", {"summary": "second"})
    (rec,) = await store.list(10, "c9")
    assert rec.notes == {"summary": "second", "turns": 3} and rec.reason == "agent"
