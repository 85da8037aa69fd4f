"""Direct ingress (`serve.proxy = "haproxy"`): an Ingress replica that leaves lets its calls end.

Behind Serve's own proxy, a replica that leaves (scale-down, redeploy, its node drained)
stops taking new calls and keeps the ones it holds until they end, up to the deployment's
graceful_shutdown_timeout_s. With direct ingress, Ray 2.60 drains the replica by stopping
its uvicorn server, and uvicorn's shutdown closes every open WebSocket at once with 1012
("service restart"): every call on the replica was cut.

`keep_calls_through_shutdown()` makes uvicorn's shutdown leave an accepted WebSocket
alone. Everything else stays uvicorn's and Ray's: the listener closes (HAProxy, which
already took the replica out of its backends, retries a late connection elsewhere),
uvicorn's server waits while connections remain open, and Ray bounds that wait by the
replica's graceful_shutdown_timeout_s before it stops the actor. A WebSocket still in its
handshake gets uvicorn's 500 as before, so its client retries.

`set_compression(False)` (the default, `media.ws_compression`) makes the replica's server
decline permessage-deflate. An agent's socket carries 50 audio frames a second each way:
deflate shrinks a PCM frame by a third, bandwidth a LAN does not miss, and with it a frame
cost the server ~17 us to take in and ~36 us to send instead of ~7 and ~3 (websockets'
own extension; bench/ws_compression.py), and the agent as much again. JSON events are a
few hundred bytes. RFC 7692 lets a server decline, and
clients then send plain frames. Serve's own proxy actor (`serve.proxy = "ray"`) runs its
own server and negotiates as uvicorn does.

It patches uvicorn's WebSocket protocol classes in this process only (an Ingress replica's
worker runs nothing else); the patches are idempotent.
"""

from __future__ import annotations

import importlib

from voxray.logs import get_logger

log = get_logger("voxray.direct_ingress")

# uvicorn's WebSocket protocols; the server picks one by the packages installed.
_PROTOCOLS = (
    ("uvicorn.protocols.websockets.websockets_sansio_impl", "WebSocketsSansIOProtocol"),
    ("uvicorn.protocols.websockets.wsproto_impl", "WSProtocol"),
    ("uvicorn.protocols.websockets.websockets_impl", "WebSocketProtocol"),
)


def _is_open_call(conn) -> bool:
    """An accepted WebSocket that has not begun its closing handshake."""
    if hasattr(conn, "handshake_complete"):  # sans-I/O and wsproto protocols
        return bool(conn.handshake_complete) and not conn.close_sent
    event = getattr(conn, "handshake_completed_event", None)  # the legacy websockets protocol
    return event is not None and event.is_set() and not getattr(conn, "closing", False)


def _patch(cls: type) -> bool:
    original = cls.shutdown
    if getattr(original, "_voxray_keeps_calls", False):
        return False

    def shutdown(self) -> None:
        if _is_open_call(self):
            return  # the call goes on; the server waits for it to close
        original(self)

    shutdown._voxray_keeps_calls = True  # type: ignore[attr-defined]
    cls.shutdown = shutdown
    return True


_compression: dict[str, bool] = {}  # {"enabled": ...} once set_compression has run


def _patch_compression(cls: type) -> bool:
    original = cls.__init__
    if getattr(original, "_voxray_compression", False):
        return False

    def __init__(self, config, *args, **kwargs) -> None:
        if "enabled" in _compression:
            # uvicorn reads this when a connection opens, to offer its deflate extension or not.
            config.ws_per_message_deflate = _compression["enabled"]
        original(self, config, *args, **kwargs)

    __init__._voxray_compression = True  # type: ignore[attr-defined]
    cls.__init__ = __init__
    return True


def _protocol_classes() -> list[type]:
    out = []
    for module_name, class_name in _PROTOCOLS:
        try:
            out.append(getattr(importlib.import_module(module_name), class_name))
        except (ImportError, AttributeError):
            continue  # that protocol's library is not installed
    return out


def set_compression(enabled: bool) -> None:
    """Whether this process's uvicorn servers accept permessage-deflate on new WebSockets."""
    _compression["enabled"] = enabled
    for cls in _protocol_classes():
        _patch_compression(cls)
    log.info("direct ingress: websocket compression", extra={"permessage_deflate": enabled})


def keep_calls_through_shutdown() -> list[str]:
    """Patch every uvicorn WebSocket protocol that imports here; returns the ones patched now."""
    patched = [cls.__name__ for cls in _protocol_classes() if _patch(cls)]
    if patched:
        log.info("direct ingress: open calls outlive the replica's server shutdown", extra={"protocols": patched})
    return patched
