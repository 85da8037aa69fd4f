"""Routing of inbound SIP calls: regex rules first, then the webhook.

A route is a URL the UA node POSTs `{caller, callee, call_id, from_tag, to_tag}` to;
the agent behind it then connects `/call/sip?id=<call_id>` and sends accept,
reject or ringing. A rule can also reject outright with a SIP code.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import httpx

from voxray.logs import get_logger
from voxray.ua_node.sip.config import SipRule, SipSettings

log = get_logger("voxray.sip")


@dataclass
class Route:
    url: str | None = None
    reject: int | None = None
    reason: str = ""


def _match(pattern: str | None, value: str) -> bool:
    return pattern is None or re.search(pattern, value or "") is not None


def choose_route(settings: SipSettings, caller: str, callee: str) -> Route:
    for rule in settings.rules:
        if _match(rule.caller, caller) and _match(rule.callee, callee):
            return _rule_route(rule)
    if settings.webhook_url:
        return Route(url=settings.webhook_url, reason="webhook")
    return Route(reject=480, reason="no route for this call")


def _rule_route(rule: SipRule) -> Route:
    if rule.reject:
        return Route(reject=rule.reject, reason="rejected by rule")
    if rule.url:
        return Route(url=rule.url, reason="rule")
    return Route(reject=480, reason="rule without a target")


def validate_rules(rules: list[SipRule]) -> None:
    for rule in rules:
        for pattern in (rule.caller, rule.callee):
            if pattern is not None:
                re.compile(pattern)


def redacted(url: str) -> str:
    """The URL for logs: query values that may be credentials (`?token=`) hidden."""
    u = httpx.URL(url)
    if not u.query:
        return url
    return str(u.copy_with(query=None)) + "?" + "&".join(f"{k}=***" for k, _ in u.params.multi_items())


async def notify(client: httpx.AsyncClient, url: str, payload: dict, timeout_s: float) -> bool:
    """POST the call to the agent's webhook; True when it answered 2xx."""
    try:
        r = await client.post(url, json=payload, timeout=timeout_s)
    except httpx.HTTPError as exc:
        # httpx names the URL in some errors: redacted there too, it may hold a token.
        why = f"{type(exc).__name__}: {str(exc).replace(url, redacted(url))}"
        log.warning("webhook failed", extra={"url": redacted(url), "error": why})
        return False
    if r.status_code >= 300:
        log.warning("webhook refused", extra={"url": redacted(url), "status": r.status_code})
        return False
    return True
