"""The agent's SIP commands on a call: accept, reject, ringing (with early media), refer
(with music on hold while the transfer is pending). Everything else goes to the call's
media session. `voxray.protocol.rules` has checked each command before it gets here.
"""

from __future__ import annotations

import numpy as np
import pjsua2 as pj

from voxray.logs import bind_call, get_logger
from voxray.media.audio_source import AudioSourcePolicy, load_audio
from voxray.protocol import commands as cmd
from voxray.protocol import events as ev
from voxray.protocol.errors import ProtocolError
from voxray.ua_node.node import NodeCall
from voxray.ua_node.sip.endpoint import SipEndpoint
from voxray.ua_node.sip.transport import SipTransport

log = get_logger("voxray.sip")
RINGTONE_PLAY_ID = "ringtone"  # the `ringing` command's tone, as the agent's trackStart/trackEnd name it


class InCallCommands:
    def __init__(self, ep: SipEndpoint) -> None:
        self.ep = ep
        self.play_policy = AudioSourcePolicy.of(ep.core.media_config)

    async def handle_command(self, call: NodeCall, c: cmd.Command) -> bool:
        """SIP's own commands; False hands the command on to the media session."""
        t = call.transport
        if not isinstance(t, SipTransport):
            return False
        if isinstance(c, cmd.Accept):
            await self.accept(call, t, c.option)
        elif isinstance(c, cmd.Reject):
            await self.ep.reject(t, c.code or 486, c.reason or "rejected", "agent")
        elif isinstance(c, cmd.Ringing):
            # A ringtone is early media (active-call: 183 with SDP, the tone played on it).
            early = c.early_media or bool(c.ringtone)
            tone = await load_audio(c.ringtone, 16000, self.play_policy) if c.ringtone else None
            if early and call.session is None:
                t.early_media = True
                self.ep.core.attach(call, t)
            if call.session is not None:
                call.session.start_recording(c.recorder)
            await self.ep.job(lambda: self._pj_answer(t, 183 if early else 180))
            if tone is not None and call.session is not None:
                await call.session.speaker.play_pcm(tone, 16000, play_id=RINGTONE_PLAY_ID)
        elif isinstance(c, cmd.Refer):
            await self.refer(t, c)
        else:
            return False
        return True

    async def accept(self, call: NodeCall, t: SipTransport, option: cmd.CallOption) -> None:
        updates = {"caller": option.caller or call.option.caller, "callee": option.callee or call.option.callee}
        call.option = option.model_copy(update=updates)
        t.accepted = True
        if call.session is None:
            self.ep.core.attach(call, t)  # its recorder comes from the option
        else:  # ringing with early media made it: the ringtone stops, recording may start
            call.session.start_recording(option.recorder)
            playing = call.session.speaker.playout.current
            if playing is not None and playing.play_id == RINGTONE_PLAY_ID:
                await call.session.interrupt()
        sdp = await self.ep.job(lambda: self._pj_answer(t, 200))
        await call.emit(ev.Answer(track_id=t.call_id, sdp=sdp))

    async def refer(self, t: SipTransport, c: cmd.Refer) -> None:
        # SIP's own state beyond the rules: REFER needs a confirmed dialog, one at a time.
        if not t.confirmed:
            raise ProtocolError("refer needs an answered call", 409)
        if t.refer_pending:
            raise ProtocolError("a transfer is already pending", 409)
        dest = self.ep.to_uri(c.callee)
        opts = c.options
        moh = await self.load_moh(opts.moh) if opts and opts.moh else None
        t.refer_auto_hangup = True if not opts or opts.auto_hangup is None else opts.auto_hangup
        t.refer_pending = True

        def xfer() -> None:
            pjcall = t.pj_call()
            if pjcall is None:
                raise ProtocolError("the call has ended", 410)
            pjcall.xfer(dest, pj.CallOpParam(True))
            if moh is not None:
                t.set_moh(moh)
        try:
            await self.ep.job(xfer)
        except ProtocolError:
            t.refer_pending = False
            raise
        with bind_call(t.call_id):
            log.info("refer sent", extra={"to": dest, "moh": bool(moh is not None)})

    async def load_moh(self, url: str) -> np.ndarray:
        """Music on hold, as 16 kHz mono PCM, under the same policy as `play` (allowed folders,
        no private URLs unless allowed, size and length caps)."""
        return await load_audio(url, 16000, self.play_policy, what="moh")

    def _pj_answer(self, t: SipTransport, code: int) -> str | None:  # pj thread
        pjcall = t.pj_call()
        if pjcall is None or pjcall.disconnected:
            raise ProtocolError("the caller has gone", 410)
        prm = pj.CallOpParam(True)
        prm.statusCode = code
        pjcall.answer(prm)
        return pjcall.local_sdp
