"""The LLM agent's brain, with no I/O: call events and model stream items in, actions out.

Like h11 for HTTP, this class never touches a socket, a clock or a task. The runner feeds it
what happened (`handle(event)`) and carries out what it returns: commands to send on the
call's WebSocket, model requests to start or cancel, timers to set, the post-call summary
to write. So every behaviour (a streamed answer becoming `tts` commands, a barge-in cutting
the history to what the caller heard, tool calls, DTMF collection) is tested by feeding
events and reading actions, with no server, model or sleep.

Playback ids: the greeting plays as `greeting`; each model request `rN` speaks on its own
`aN`, so `trackStart`/`trackEnd`/`interruption` name the assistant message they belong to.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from voxray.agents.llm.playbook import Playbook, render_vars
from voxray.agents.llm.tools import (
    COLLECT_DTMF, HANGUP, TRANSFER, DtmfSpec, ToolCall, ToolCallBuffer, dtmf_spec, enabled_tools,
    resolve_transfer_target, tool_specs,
)

# ---- events in ------------------------------------------------------------------------


@dataclass(frozen=True)
class CallEvent:
    """One JSON event from the call's WebSocket, as received."""

    data: dict[str, Any]


@dataclass(frozen=True)
class LlmText:
    request_id: str
    text: str


@dataclass(frozen=True)
class LlmToolCall:
    """A fragment of a streamed tool call (see chat_stream.ToolCallDelta)."""

    request_id: str
    index: int
    id: str | None = None
    name: str | None = None
    arguments: str = ""


@dataclass(frozen=True)
class LlmEnd:
    request_id: str
    finish_reason: str | None = None


@dataclass(frozen=True)
class LlmFailed:
    request_id: str
    error: str


@dataclass(frozen=True)
class TimerFired:
    key: str


Event = CallEvent | LlmText | LlmToolCall | LlmEnd | LlmFailed | TimerFired

# ---- actions out ----------------------------------------------------------------------


@dataclass(frozen=True)
class SendCommand:
    command: dict[str, Any]


@dataclass(frozen=True)
class StartLlm:
    request_id: str
    messages: list[dict[str, Any]]
    tools: list[dict[str, Any]]


@dataclass(frozen=True)
class CancelLlm:
    request_id: str


@dataclass(frozen=True)
class SetTimer:
    """(Re)arm `key` to fire TimerFired(key) after `seconds`."""

    key: str
    seconds: float


@dataclass(frozen=True)
class CancelTimer:
    key: str


@dataclass(frozen=True)
class Transcript:
    """A line of the conversation, for the console or logs (`speaker`: caller, agent, system)."""

    speaker: str
    text: str


@dataclass(frozen=True)
class Summarize:
    """Ask the model once (not streamed) with these messages and attach the answer to the call record."""

    messages: list[dict[str, Any]]


@dataclass(frozen=True)
class CallEnded:
    reason: str | None


Action = SendCommand | StartLlm | CancelLlm | SetTimer | CancelTimer | Transcript | Summarize | CallEnded

# ---- state ----------------------------------------------------------------------------

VOICE_GUIDANCE = (
    "You are talking with a caller on a phone line; a speech synthesizer speaks your words. "
    "Answer in short, plain spoken sentences: no markdown, lists, emoji or links. The caller's "
    "words come from speech recognition and may contain mistakes. If an assistant message of yours "
    "ends with '…', the caller interrupted you there and heard nothing after it."
)
TOOL_HINTS = {
    HANGUP: "When the conversation is over or the caller says goodbye, call the hangup tool.",
    TRANSFER: "When the caller needs a human or another department, call the transfer tool.",
    COLLECT_DTMF: "To read numbers such as account numbers or PINs, call collect_dtmf: the caller types "
                  "them on the keypad and you get the digits as the tool's result.",
}
SUMMARY_PROMPTS = {
    "short": "Summarize this phone call in one or two sentences.",
    "detailed": "Summarize this phone call in detail, including key points, decisions, and action items.",
    "intent": "Identify and summarize the caller's main intent and needs in this phone call.",
    "json": "Output a summary of this phone call as JSON with fields: intent, key_points, sentiment.",
}
APOLOGY = "Sorry, I had a problem answering. Could you say that again?"
AFTER_SPEECH_S = 5.0  # fallback wait for a track's end, plus per word below
SECONDS_PER_WORD = 0.6
GREETING_PLAY_ID = "greeting"


@dataclass
class Turn:
    """One message of the history; `play_id` ties an assistant message to the track that spoke it."""

    role: str  # system | user | assistant | tool
    content: str = ""
    play_id: str | None = None
    tool_calls: list[ToolCall] = field(default_factory=list)
    tool_call_id: str | None = None
    interrupted: bool = False

    def message(self) -> dict[str, Any] | None:
        if self.role == "assistant":
            if not self.content and not self.tool_calls:
                return None  # nothing was said (or heard) and nothing was done
            msg: dict[str, Any] = {"role": "assistant", "content": self.content or None}
            if self.tool_calls:
                msg["tool_calls"] = [c.wire() for c in self.tool_calls]
            return msg
        if self.role == "tool":
            return {"role": "tool", "tool_call_id": self.tool_call_id, "content": self.content}
        return {"role": self.role, "content": self.content}


@dataclass
class Round:
    """One model request and the answer it is streaming."""

    request_id: str
    play_id: str
    turn: Turn
    tools: ToolCallBuffer = field(default_factory=ToolCallBuffer)
    streamed: bool = False  # a streaming tts was sent for this answer (so endOfStream is owed)


@dataclass
class Collection:
    """A collect_dtmf tool call waiting for digits; its tool message is filled in at the end."""

    spec: DtmfSpec
    result: Turn
    retries_left: int
    digits: str = ""
    armed: bool = False  # the overall timeout runs from the end of the prompt, or the first key


def heard_text(content: str, subtitle: str | None, position: int | None,
               current_ms: int | None, total_ms: int | None) -> str:
    """What the caller heard of `content` when cut off.

    voxray's `interruption` carries the track's text (`subtitle`) and the word index reached
    (`position`, from the share of synthesized audio played); active-call's means the same.
    Without them, the share of time played (`current`/`totalDuration`) is applied to the words.
    """
    if subtitle is not None and position is not None:
        words, n = subtitle.split(), max(0, position)
    else:
        words = content.split()
        if not current_ms or not total_ms:
            return ""
        n = round(len(words) * min(1.0, current_ms / total_ms))
    heard = " ".join(words[:n])
    return heard + "…" if heard and n < len(words) else heard


class Conversation:
    def __init__(self, playbook: Playbook, *, call_id: str | None = None, caller: str | None = None,
                 callee: str | None = None, accept: bool = False) -> None:
        self.playbook = playbook
        self.config = playbook.config
        self.call_id = call_id
        self.caller, self.callee = caller, callee
        self.accept = accept  # inbound (/call/sip?id=): accept instead of invite
        self.history: list[Turn] = []
        self.round: Round | None = None
        self.plays: dict[str, Turn] = {}
        self.started: set[str] = set()
        self.after_speech: dict[str, list[dict[str, Any]]] = {}  # play id -> commands once it ends
        self.collect: Collection | None = None
        self.pending_transfer: str | None = None
        self.closing = False  # hangup or transfer decided: no more answers
        self.ended = False
        self.greeted = False
        self.followups = 0
        self._followup_armed = False
        self._n = 0
        self._retry_n = 0
        self.tools = tool_specs(self.config)

    # -- the prompt ----------------------------------------------------------------------

    def system_prompt(self) -> str:
        variables = {"caller": self.caller or "", "callee": self.callee or "", "session_id": self.call_id or ""}
        guidance = self.config.llm.tool_instructions
        if guidance is None:
            guidance = " ".join([VOICE_GUIDANCE] + [TOOL_HINTS[t] for t in enabled_tools(self.config)])
        return "\n\n".join(p for p in (render_vars(self.playbook.prompt, variables), guidance) if p)

    def messages(self) -> list[dict[str, Any]]:
        out = [{"role": "system", "content": self.system_prompt()}]
        out.extend(m for m in (t.message() for t in self.history) if m is not None)
        return out

    def transcript(self) -> str:
        lines = []
        for t in self.history:
            if t.role == "user":
                lines.append(f"Caller: {t.content}")
            elif t.role == "assistant":
                if t.content:
                    lines.append(f"Agent: {t.content}" + (" (interrupted)" if t.interrupted else ""))
                for c in t.tool_calls:
                    lines.append(f"[agent called {c.name}({c.arguments})]")
            elif t.role == "tool":
                lines.append(f"[tool result: {t.content}]")
            else:
                lines.append(f"[{t.content}]")
        return "\n".join(lines)

    def summary_messages(self) -> list[dict[str, Any]]:
        kind = (self.config.posthook.summary if self.config.posthook else None) or "short"
        prompt = SUMMARY_PROMPTS.get(kind.lower(), kind)
        return [{"role": "system", "content": prompt},
                {"role": "user", "content": f"Transcript of the call:\n\n{self.transcript() or '(nothing was said)'}"}]

    # -- entry points --------------------------------------------------------------------

    def start(self) -> list[Action]:
        opt = self.playbook.invite_option(self.caller, self.callee)
        return [SendCommand({"command": "accept" if self.accept else "invite", "option": opt})]

    def handle(self, event: Event) -> list[Action]:
        if self.ended:
            return []
        if isinstance(event, CallEvent):
            return self._on_call_event(event.data)
        if isinstance(event, TimerFired):
            return self._on_timer(event.key)
        rnd = self.round
        if rnd is None or event.request_id != rnd.request_id:
            return []  # a cancelled request's late items
        if isinstance(event, LlmText):
            return self._on_text(rnd, event.text)
        if isinstance(event, LlmToolCall):
            rnd.tools.add(event.index, event.id, event.name, event.arguments)
            return []
        if isinstance(event, LlmEnd):
            return self._finish_round(rnd)
        if isinstance(event, LlmFailed):
            return self._fail_round(rnd, event.error)
        return []

    # -- call events ---------------------------------------------------------------------

    def _on_call_event(self, ev: dict[str, Any]) -> list[Action]:
        name = ev.get("event")
        if name == "answer":
            return self._greet()
        if name == "asrFinal":
            return self._on_user_text((ev.get("text") or "").strip())
        if name in ("asrDelta", "speaking"):
            return self._cancel_followup()
        if name == "trackStart":
            if ev.get("playId"):
                self.started.add(ev["playId"])
            return []
        if name == "trackEnd":
            return self._on_track_end(ev.get("playId"))
        if name == "interruption":
            return self._on_interruption(ev)
        if name == "dtmf":
            return self._on_dtmf(str(ev.get("digit") or ""))
        if name == "hangup":
            return self._on_hangup(ev.get("reason"))
        if name == "error":
            if self.pending_transfer and "refer" in str(ev.get("error", "")).lower():
                return self._transfer_failed(str(ev.get("error")))
            return []
        if name == "other":
            return self._on_other(ev.get("extra") or {})
        return []

    def _greet(self) -> list[Action]:
        if self.greeted:
            return []
        self.greeted = True
        text = self.playbook.greeting
        if not text:
            return []
        turn = Turn("assistant", text, play_id=GREETING_PLAY_ID)
        self.history.append(turn)
        self.plays[GREETING_PLAY_ID] = turn
        return [SendCommand({"command": "tts", "text": text, "playId": GREETING_PLAY_ID}), Transcript("agent", text)]

    def _on_user_text(self, text: str) -> list[Action]:
        if not text:
            return []
        actions: list[Action] = [Transcript("caller", text), *self._cancel_followup()]
        if self.collect is not None:
            if not self.collect.spec.interruptible:
                return actions  # keypad only while collecting (active-call's default)
            return actions + self._finish_collect("spoke", speech=text)
        self.history.append(Turn("user", text))
        if self.closing:
            return actions  # kept for the summary; the call is ending
        self.followups = 0
        if self.round is not None:
            actions += self._abandon_round(self.round)
        return actions + self._start_round()

    def _abandon_round(self, rnd: Round) -> list[Action]:
        """The caller spoke again before this answer was done: stop it."""
        self.round = None
        actions: list[Action] = [CancelLlm(rnd.request_id)]
        if rnd.play_id not in self.started:
            rnd.turn.content = ""  # nothing of it was heard; an `interruption` would say otherwise
        if rnd.streamed:
            # What was already sent would still play (the new answer may take a while to start).
            actions.append(SendCommand({"command": "interrupt"}))
        return actions

    def _on_track_end(self, play_id: str | None) -> list[Action]:
        actions: list[Action] = []
        if play_id and play_id in self.after_speech:
            actions += self._run_after_speech(play_id)
        if (play_id in self.plays and self.round is None and self.collect is None and not self.closing
                and self.config.follow_up and self.followups < self.config.follow_up.max):
            self._followup_armed = True
            actions.append(SetTimer("followup", self.config.follow_up.timeout / 1000))
        return actions

    def _on_interruption(self, ev: dict[str, Any]) -> list[Action]:
        play_id = ev.get("playId")
        turn = self.plays.get(play_id) if play_id else None
        if turn is None:
            return []
        turn.content = heard_text(turn.content, ev.get("subtitle"), ev.get("position"),
                                  ev.get("current"), ev.get("totalDuration"))
        turn.interrupted = True
        actions: list[Action] = [Transcript("system", f"interrupted; the caller heard: {turn.content!r}")]
        if self.round is not None and self.round.play_id == play_id:
            # The caller cut in while the model was still writing: stop it (its tool calls too),
            # and drop any tokens that crossed the interruption on the wire (they would start
            # a new track with this playId).
            actions.append(CancelLlm(self.round.request_id))
            if self.round.streamed:
                actions.append(SendCommand({"command": "interrupt"}))
            self.round = None
        return actions

    def _on_other(self, extra: dict[str, Any]) -> list[Action]:
        if extra.get("event") != "refer" or not self.pending_transfer:
            return []
        if str(extra.get("final")).lower() != "true":
            return []
        try:
            code = int(extra.get("code"))
        except (TypeError, ValueError):
            code = 0
        if 200 <= code < 300:
            self.pending_transfer = None
            return [Transcript("system", "transfer accepted")]
        return self._transfer_failed(f"{code} {extra.get('reason', '')}".strip())

    def _transfer_failed(self, why: str) -> list[Action]:
        target, self.pending_transfer = self.pending_transfer, None
        self.closing = False
        self.history.append(Turn("system", f"The transfer to {target} failed ({why}). Tell the caller, "
                                           "and offer other help."))
        return [Transcript("system", f"transfer failed: {why}"), *self._start_round()]

    def _on_hangup(self, reason: str | None) -> list[Action]:
        self.ended = True
        actions: list[Action] = []
        if self.round is not None:
            actions.append(CancelLlm(self.round.request_id))
            self.round = None
        if self.collect is not None:
            self.collect.result.content = json.dumps({"status": "hangup", "digits": self.collect.digits})
            self.collect = None
        actions += [Summarize(self.summary_messages()), CallEnded(reason)]
        return actions

    # -- the model's answer --------------------------------------------------------------

    def _start_round(self) -> list[Action]:
        self._n += 1
        rid, pid = f"r{self._n}", f"a{self._n}"
        messages = self.messages()
        turn = Turn("assistant", play_id=pid)
        self.history.append(turn)
        self.plays[pid] = turn
        self.round = Round(rid, pid, turn)
        return [StartLlm(rid, messages, self.tools)]

    def _on_text(self, rnd: Round, text: str) -> list[Action]:
        if not text:
            return []
        rnd.turn.content += text
        rnd.streamed = True
        return [SendCommand({"command": "tts", "text": text, "streaming": True, "playId": rnd.play_id})]

    def _say(self, rnd: Round, text: str) -> list[Action]:
        """Words the agent adds itself (goodbye, prompts): on the answer's own track, after its tokens."""
        if not text:
            return []
        if rnd.streamed:
            sep = "" if rnd.turn.content.endswith((" ", "\n")) or not rnd.turn.content else " "
            rnd.turn.content += sep + text
            return [SendCommand({"command": "tts", "text": sep + text, "streaming": True, "playId": rnd.play_id})]
        rnd.turn.content = text
        return [SendCommand({"command": "tts", "text": text, "playId": rnd.play_id})]

    def _finish_round(self, rnd: Round) -> list[Action]:
        self.round = None
        calls = rnd.tools.calls()
        rnd.turn.tool_calls = calls
        actions: list[Action] = []
        after: list[dict[str, Any]] = []
        say = ""
        again = False  # a tool answered at once: ask the model to go on
        collect: Collection | None = None
        terminal = False
        for call in calls:
            args = call.args()
            result = Turn("tool", tool_call_id=call.id)
            self.history.append(result)
            if terminal:
                result.content = json.dumps({"status": "skipped", "why": "an earlier tool call ends this turn"})
                continue
            if call.name == HANGUP and HANGUP in enabled_tools(self.config):
                terminal = True
                self.closing = True
                say = (args.get("goodbye") or "").strip() or ("" if rnd.turn.content.strip() else
                                                              self.config.goodbye)
                reason = args.get("reason") or "agent ended the call"
                after.append({"command": "hangup", "reason": str(reason)[:200], "initiator": "agent"})
                result.content = json.dumps({"status": "ok"})
            elif call.name == TRANSFER and TRANSFER in enabled_tools(self.config):
                target = resolve_transfer_target(self.config, args.get("target"))
                if target is None:
                    result.content = json.dumps({"status": "error", "why": "no such transfer target"})
                    again = True
                    continue
                terminal = True
                self.closing = True
                self.pending_transfer = target
                say = (args.get("message") or "").strip() or ("" if rnd.turn.content.strip() else
                                                              self.config.transfer.message or
                                                              "Please hold while I transfer your call.")
                after.append({"command": "refer", "callee": target})
                result.content = json.dumps({"status": "transferring", "target": target})
            elif call.name == COLLECT_DTMF and COLLECT_DTMF in enabled_tools(self.config):
                terminal = True
                spec = dtmf_spec(self.config, args)
                say = (args.get("prompt") or "").strip()
                collect = Collection(spec, result, retries_left=spec.retries)
            else:
                result.content = json.dumps({"status": "error", "why": f"unknown tool {call.name!r}"})
                again = True
        actions += self._say(rnd, say)
        if rnd.streamed:
            actions.append(SendCommand({"command": "tts", "text": "", "streaming": True, "endOfStream": True,
                                        "playId": rnd.play_id}))
        if rnd.turn.content:
            actions.append(Transcript("agent", rnd.turn.content))
        spoke = bool(rnd.turn.content)
        if collect is not None:
            self.collect = collect
            actions.append(Transcript("system", f"collecting digits ({collect.spec.max_digits or 'any'} max, "
                                                f"finish key {collect.spec.finish_key})"))
            if not spoke:
                actions += self._arm_collect()
            else:
                self.after_speech[rnd.play_id] = [{"internal": "arm_collect"}]
                actions.append(SetTimer(f"after:{rnd.play_id}", self._speech_wait(rnd.turn.content)))
        elif after:
            if spoke:
                self.after_speech[rnd.play_id] = after
                actions.append(SetTimer(f"after:{rnd.play_id}", self._speech_wait(rnd.turn.content)))
            else:
                actions += [SendCommand(c) for c in after]
        elif again:
            actions += self._start_round()
        return actions

    def _fail_round(self, rnd: Round, error: str) -> list[Action]:
        self.round = None
        actions: list[Action] = [Transcript("system", f"model request failed: {error}")]
        actions += self._say(rnd, APOLOGY)
        if rnd.streamed:
            actions.append(SendCommand({"command": "tts", "text": "", "streaming": True, "endOfStream": True,
                                        "playId": rnd.play_id}))
        return actions

    @staticmethod
    def _speech_wait(text: str) -> float:
        return AFTER_SPEECH_S + SECONDS_PER_WORD * len(text.split())

    def _run_after_speech(self, play_id: str) -> list[Action]:
        actions: list[Action] = [CancelTimer(f"after:{play_id}")]
        for cmd in self.after_speech.pop(play_id, []):
            if cmd.get("internal") == "arm_collect":
                if self.collect is not None and not self.collect.armed:
                    actions += self._arm_collect()
            else:
                actions.append(SendCommand(cmd))
        return actions

    # -- DTMF ----------------------------------------------------------------------------

    def _on_dtmf(self, digit: str) -> list[Action]:
        if not digit:
            return []
        actions = self._cancel_followup()
        c = self.collect
        if c is not None:
            if not c.armed:
                actions += self._arm_collect()
            if c.spec.finish_key and digit == c.spec.finish_key:
                return actions + self._finish_collect("finishKey")
            c.digits += digit
            if c.spec.complete(c.digits):
                return actions + self._finish_collect("maxDigits")
            return actions + [SetTimer("dtmf.inter", c.spec.inter_digit_timeout_s)]
        action = self.config.dtmf.get(digit)
        if action is None or self.closing:
            return actions
        if action.action == "hangup":
            self.closing = True
            if self.round is not None:
                actions.append(CancelLlm(self.round.request_id))
                self.round = None
            return actions + [Transcript("system", f"key {digit}: hangup"),
                              SendCommand({"command": "hangup", "reason": f"dtmf {digit}", "initiator": "agent"})]
        if action.action == "transfer" and action.target:
            self.closing = True
            self.pending_transfer = action.target
            if self.round is not None:
                actions.append(CancelLlm(self.round.request_id))
                self.round = None
            return actions + [Transcript("system", f"key {digit}: transfer to {action.target}"),
                              SendCommand({"command": "refer", "callee": action.target})]
        return actions + [Transcript("system", f"key {digit}: action {action.action!r} is not supported")]

    def _arm_collect(self) -> list[Action]:
        assert self.collect is not None
        self.collect.armed = True
        return [SetTimer("dtmf.total", self.collect.spec.timeout_s)]

    def _finish_collect(self, why: str, speech: str | None = None) -> list[Action]:
        c = self.collect
        assert c is not None
        actions: list[Action] = [CancelTimer("dtmf.total"), CancelTimer("dtmf.inter")]
        if speech is None and not c.spec.valid(c.digits) and c.retries_left > 0:
            # Wrong or too few digits: say so and collect again (validation.errorMessage, retryTimes).
            c.retries_left -= 1
            c.digits, c.armed = "", False
            self._retry_n += 1
            pid = f"dtmf-retry-{self._retry_n}"
            text = c.spec.error_message or "Sorry, that was not valid. Please try again."
            self.after_speech[pid] = [{"internal": "arm_collect"}]
            return actions + [SendCommand({"command": "tts", "text": text, "playId": pid}),
                              Transcript("agent", text), SetTimer(f"after:{pid}", self._speech_wait(text))]
        self.collect = None
        if speech is not None:
            result: dict[str, Any] = {"status": "spoke", "digits": c.digits, "speech": speech}
        elif c.spec.valid(c.digits):
            result = {"status": "ok", "digits": c.digits}
        else:
            result = {"status": "invalid" if c.digits else "timeout", "digits": c.digits}
        c.result.content = json.dumps(result)
        actions.append(Transcript("system", f"digits collected ({why}): {result}"))
        return actions + self._start_round()

    # -- timers --------------------------------------------------------------------------

    def _cancel_followup(self) -> list[Action]:
        if not self._followup_armed:
            return []
        self._followup_armed = False
        return [CancelTimer("followup")]

    def _on_timer(self, key: str) -> list[Action]:
        if key.startswith("after:"):
            play_id = key[len("after:"):]
            return self._run_after_speech(play_id) if play_id in self.after_speech else []
        if key in ("dtmf.total", "dtmf.inter") and self.collect is not None:
            if key == "dtmf.inter" and not self.collect.digits:
                return []
            return self._finish_collect("timeout" if key == "dtmf.total" else "interDigitTimeout")
        if key == "followup" and self._followup_armed:
            self._followup_armed = False
            if self.round is not None or self.collect is not None or self.closing:
                return []
            self.followups += 1
            secs = self.config.follow_up.timeout / 1000 if self.config.follow_up else 0
            self.history.append(Turn("system", f"The caller has said nothing for {secs:g} seconds. "
                                               "Check in with them briefly."))
            return [Transcript("system", "caller silent: following up"), *self._start_round()]
        return []
