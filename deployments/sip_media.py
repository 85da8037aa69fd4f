"""`/call/sip?id=<call id>`: the agent's side of an inbound SIP call a UA worker holds.

The caller set the call up, so the agent answers it (`accept`, `reject`, `ringing`)
instead of sending `invite`; events flow from the moment the socket opens (the
`incoming` event first). Everything else is `RemoteMedia`.
"""

from __future__ import annotations

import asyncio

from voxray.deployments.call_media import Emit
from voxray.deployments.remote_media import RemoteMedia


class InboundSipMedia(RemoteMedia):
    inbound = True  # the agent answers it; voxray.protocol.rules refuses `invite` here

    def __init__(self, worker, call_id: str, emit: Emit, channel) -> None:
        super().__init__(worker, call_id, "sip", emit=emit, channel=channel)
        self._pump = asyncio.get_running_loop().create_task(self._pump_events())
