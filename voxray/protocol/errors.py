"""Protocol-level errors that become `error` events, never dropped sockets."""

from __future__ import annotations


class ProtocolError(Exception):
    """Input the protocol cannot accept. `code` is an HTTP-like status for the agent."""

    def __init__(self, message: str, code: int = 400) -> None:
        super().__init__(message)
        self.message = message
        self.code = code
