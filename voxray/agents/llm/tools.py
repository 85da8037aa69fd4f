"""The function tools the model may call, and the assembly of their streamed fragments.

Three tools, as OpenAI function tools: `hangup` (say goodbye, then end the call),
`transfer` (SIP REFER to a target from the playbook) and `collect_dtmf` (read keypad digits
and hand them back as the tool's result). Pure values and functions only.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any

from voxray.agents.llm.playbook import DtmfCollectorConfig, PlaybookConfig

HANGUP, TRANSFER, COLLECT_DTMF = "hangup", "transfer", "collect_dtmf"


@dataclass
class ToolCall:
    id: str
    name: str
    arguments: str  # JSON text as the model wrote it

    def args(self) -> dict[str, Any]:
        """The arguments as an object; text that is not a JSON object counts as none."""
        try:
            value = json.loads(self.arguments) if self.arguments.strip() else {}
        except json.JSONDecodeError:
            return {}
        return value if isinstance(value, dict) else {}

    def wire(self) -> dict[str, Any]:
        return {"id": self.id, "type": "function", "function": {"name": self.name, "arguments": self.arguments}}


@dataclass
class ToolCallBuffer:
    """Fragments by `index`: the first carries `id` and the name, later ones append to `arguments`.

    Some servers repeat the id or name on later fragments, or send the name in pieces;
    an id is kept once set, and name pieces are joined only while they differ from it.
    """

    _calls: dict[int, dict[str, Any]] = field(default_factory=dict)

    def add(self, index: int, id: str | None, name: str | None, arguments: str) -> None:
        call = self._calls.setdefault(index, {"id": None, "name": "", "arguments": ""})
        if id and not call["id"]:
            call["id"] = id
        if name and name != call["name"]:
            call["name"] += name
        call["arguments"] += arguments or ""

    def calls(self) -> list[ToolCall]:
        out = []
        for index in sorted(self._calls):
            c = self._calls[index]
            if c["name"]:
                out.append(ToolCall(id=c["id"] or f"call_{index}", name=c["name"], arguments=c["arguments"]))
        return out

    def __bool__(self) -> bool:
        return bool(self._calls)


def enabled_tools(config: PlaybookConfig) -> list[str]:
    if config.tools is not None:
        return [t for t in config.tools if t in (HANGUP, TRANSFER, COLLECT_DTMF)]
    tools = [HANGUP, COLLECT_DTMF]
    if config.transfer.target or config.transfer.targets or config.transfer.allow_any:
        tools.append(TRANSFER)
    return tools


def tool_specs(config: PlaybookConfig) -> list[dict[str, Any]]:
    """The `tools` array of the chat request."""
    specs = []
    names = enabled_tools(config)
    if HANGUP in names:
        specs.append(_fn(HANGUP, "End the call. Use it when the caller says goodbye or the conversation is over.", {
            "goodbye": {"type": "string", "description": "A short closing sentence to say before hanging up, "
                                                         "unless you already said goodbye in your reply."},
            "reason": {"type": "string", "description": "Why the call ends, for the call record."},
        }))
    if TRANSFER in names:
        t = config.transfer
        target: dict[str, Any] = {"type": "string", "description": "Where to transfer the call."}
        if t.targets and not t.allow_any:
            target["enum"] = sorted(t.targets)
        elif t.allow_any:
            target["description"] += " A name from the list or a SIP URI."
        required = [] if t.target else ["target"]
        specs.append(_fn(TRANSFER, "Transfer the caller to a human or another department.", {
            "target": target,
            "message": {"type": "string", "description": "A short sentence to say before transferring."},
        }, required))
    if COLLECT_DTMF in names:
        props: dict[str, Any] = {
            "prompt": {"type": "string", "description": "What to say to ask for the digits, e.g. 'Please type "
                                                        "your account number, then press the pound key.'"},
            "maxDigits": {"type": "integer", "minimum": 1, "maximum": 32},
            "minDigits": {"type": "integer", "minimum": 0, "maximum": 32},
            "finishKey": {"type": "string", "enum": ["#", "*"]},
            "timeoutSeconds": {"type": "number", "minimum": 1, "maximum": 120},
        }
        desc = ("Collect digits the caller types on the phone keypad. The result is the digits, or a "
                "status saying why there are none.")
        if config.dtmf_collectors:
            props["type"] = {"type": "string", "enum": sorted(config.dtmf_collectors),
                             "description": "; ".join(f"{k}: {v.description or k}"
                                                      for k, v in sorted(config.dtmf_collectors.items()))}
        specs.append(_fn(COLLECT_DTMF, desc, props))
    return specs


def _fn(name: str, description: str, props: dict[str, Any], required: list[str] | None = None) -> dict[str, Any]:
    return {"type": "function", "function": {"name": name, "description": description, "parameters": {
        "type": "object", "properties": props, "required": required or []}}}


def resolve_transfer_target(config: PlaybookConfig, requested: str | None) -> str | None:
    """The URI to refer to: a named target, a listed URI, any URI when `allowAny`, else the default.

    The model's argument is what a caller can steer ("transfer me to sip:..."), so only
    targets the playbook lists are taken unless it says otherwise.
    """
    t = config.transfer
    if requested:
        if requested in t.targets:
            return t.targets[requested]
        if requested in t.targets.values() or requested == t.target:
            return requested
        if t.allow_any:
            return requested
        return None
    return t.target


@dataclass
class DtmfSpec:
    """One collection's rules, merged from a `dtmfCollectors` template and the tool's arguments."""

    min_digits: int = 1
    max_digits: int | None = None
    finish_key: str | None = None
    timeout_s: float = 20.0
    inter_digit_timeout_s: float = 5.0
    pattern: str | None = None
    error_message: str | None = None
    retries: int = 0
    interruptible: bool = False

    def complete(self, digits: str) -> bool:
        """Done without a key press: only when no finish key is set (as active-call's collector)."""
        return self.finish_key is None and self.max_digits is not None and len(digits) >= self.max_digits

    def valid(self, digits: str) -> bool:
        if len(digits) < self.min_digits:
            return False
        return self.pattern is None or re.fullmatch(self.pattern, digits) is not None


def dtmf_spec(config: PlaybookConfig, args: dict[str, Any]) -> DtmfSpec:
    template = config.dtmf_collectors.get(args.get("type") or "", DtmfCollectorConfig())
    spec = DtmfSpec()
    if template.digits is not None:
        spec.min_digits = spec.max_digits = template.digits
    if template.min_digits is not None:
        spec.min_digits = template.min_digits
    if template.max_digits is not None:
        spec.max_digits = template.max_digits
    if template.finish_key is not None:
        spec.finish_key = template.finish_key
    if template.timeout is not None:
        spec.timeout_s = float(template.timeout)
    if template.inter_digit_timeout is not None:
        spec.inter_digit_timeout_s = float(template.inter_digit_timeout)
    if template.validation is not None:
        spec.pattern, spec.error_message = template.validation.pattern, template.validation.error_message
    spec.retries = template.retry_times if template.retry_times is not None else (3 if spec.pattern else 0)
    spec.interruptible = bool(template.interruptible)
    # The model's own arguments refine the template.
    if isinstance(args.get("maxDigits"), int) and args["maxDigits"] > 0:
        spec.max_digits = args["maxDigits"]
    if isinstance(args.get("minDigits"), int) and args["minDigits"] >= 0:
        spec.min_digits = args["minDigits"]
    if args.get("finishKey") in ("#", "*"):
        spec.finish_key = args["finishKey"]
    if isinstance(args.get("timeoutSeconds"), (int, float)) and args["timeoutSeconds"] > 0:
        spec.timeout_s = float(args["timeoutSeconds"])
    if spec.max_digits is not None:
        spec.min_digits = min(spec.min_digits, spec.max_digits)
    if spec.finish_key is None and spec.max_digits is None:
        spec.finish_key = "#"  # something must end it before the timeout
    return spec
