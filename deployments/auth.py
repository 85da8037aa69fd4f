"""Access tokens for the WebSocket and HTTP API: a bearer header or a `token` query parameter."""

from __future__ import annotations

import hmac
from collections.abc import Iterable, Mapping


class TokenGuard:
    """Open when no token is configured; otherwise every request must carry one of them."""

    def __init__(self, tokens: Iterable[str] = ()) -> None:
        self._tokens = [t.encode() for t in tokens if t]
        self.rejected = 0

    @property
    def enabled(self) -> bool:
        return bool(self._tokens)

    @staticmethod
    def presented(headers: Mapping[str, str], query: Mapping[str, str]) -> str | None:
        auth = headers.get("authorization", "")
        if auth[:7].lower() == "bearer ":
            return auth[7:].strip()
        return query.get("token")

    def allows(self, headers: Mapping[str, str], query: Mapping[str, str]) -> bool:
        if not self._tokens:
            return True
        given = (self.presented(headers, query) or "").encode()
        # compare_digest against every token: no early exit that leaks which matched.
        ok = any([hmac.compare_digest(given, t) for t in self._tokens])
        if not ok:
            self.rejected += 1
        return ok
