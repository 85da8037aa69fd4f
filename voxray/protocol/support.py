"""Options active-call defines that voxray does not act on: refused, by name, never ignored.

An agent written for active-call may send any field of its option types. A field voxray
does what active-call does with is simply used; a value that asks for something voxray
cannot do is refused with a 501 error naming the field, so the agent knows at once
rather than finding out from the caller. Values that ask for what voxray does anyway
(`tts.codec: "pcm"`, `vad.type: "silero"`) pass. `UNSUPPORTED` is also what
`voxray schema` marks (`x-voxray-unsupported`).
"""

from __future__ import annotations

from collections.abc import Iterator

from voxray.protocol import commands as cmd
from voxray.protocol.errors import ProtocolError
from voxray.protocol.options import CallOption, ReferOption, SynthesisOption

# (model, field) -> why it is refused; the schema carries the same words.
UNSUPPORTED: dict[tuple[str, str], str] = {
    ("CallOption", "media_pass"): "mediaPass (audio relayed to a media server over WebSocket) is not supported",
    ("CallOption", "subscribe"): "subscribe (the call's audio copied to the agent's socket) is not supported; "
                                 "/call carries the audio itself",
    ("EouOption", "endpoint"): "a remote end-of-turn service is not supported: turns end from the pause's "
                               "transcript (type 'transcript') or a fixed silence (type 'silence')",
    ("VADOption", "endpoint"): "a remote VAD service is not supported: Silero runs in voxray",
    ("SynthesisOption", "emotion"): "emotion is not supported by voxray's TTS providers",
    ("SynthesisOption", "max_concurrent_tasks"): "maxConcurrentTasks is not supported: each tts is spoken "
                                                 "clause by clause in order",
    ("ReferOption", "denoise"): "refer.options.denoise is not supported (the call's own denoise goes on)",
    ("ReferOption", "timeout"): "refer.options.timeout is not supported: the transferee's NOTIFYs end the refer",
    ("ReferOption", "asr"): "refer.options.asr is not supported",
    ("ReferOption", "sip"): "refer.options.sip (credentials or headers for the REFER) is not supported",
}
# Values that ask for what voxray does: accepted.
EOU_TYPES = (None, "", "transcript", "silence")
VAD_TYPES = ("silero", "")
TTS_CODECS = (None, "", "pcm", "pcm16", "linear16", "wav")


def _option_problems(o: CallOption, where: str) -> Iterator[tuple[str, str]]:
    if o.media_pass is not None:
        yield f"{where}.mediaPass", UNSUPPORTED[("CallOption", "media_pass")]
    if o.subscribe:
        yield f"{where}.subscribe", UNSUPPORTED[("CallOption", "subscribe")]
    if o.eou is not None:
        if o.eou.endpoint:
            yield f"{where}.eou.endpoint", UNSUPPORTED[("EouOption", "endpoint")]
        if o.eou.type not in EOU_TYPES:
            yield f"{where}.eou.type", f"eou.type {o.eou.type!r}: voxray ends turns by 'transcript' or 'silence'"
    if o.vad is not None:
        if o.vad.endpoint:
            yield f"{where}.vad.endpoint", UNSUPPORTED[("VADOption", "endpoint")]
        if (o.vad.type or "").lower() not in VAD_TYPES:
            yield f"{where}.vad.type", f"vad.type {o.vad.type!r}: voxray's VAD is 'silero'"
    if o.tts is not None:
        yield from _synthesis_problems(o.tts, f"{where}.tts")


def _synthesis_problems(t: SynthesisOption, where: str) -> Iterator[tuple[str, str]]:
    if t.emotion:
        yield f"{where}.emotion", UNSUPPORTED[("SynthesisOption", "emotion")]
    if t.max_concurrent_tasks is not None:
        yield f"{where}.maxConcurrentTasks", UNSUPPORTED[("SynthesisOption", "max_concurrent_tasks")]
    if (t.codec or None) and t.codec.lower() not in TTS_CODECS:
        yield f"{where}.codec", (f"tts codec {t.codec!r}: synthesized audio is PCM, encoded with the call's "
                                 "own codec (option.codec)")


def _refer_problems(r: ReferOption) -> Iterator[tuple[str, str]]:
    for name, wire in (("denoise", "denoise"), ("timeout", "timeout"), ("asr", "asr"), ("sip", "sip")):
        if getattr(r, name) is not None:
            yield f"refer.options.{wire}", UNSUPPORTED[("ReferOption", name)]


def problems(c: cmd.Command) -> list[tuple[str, str]]:
    """The fields of `c` voxray would not act on as active-call does: (field, why)."""
    if isinstance(c, (cmd.Invite, cmd.Accept)):
        return list(_option_problems(c.option, "option"))
    if isinstance(c, cmd.Tts) and c.option is not None:
        return list(_synthesis_problems(c.option, "option"))
    if isinstance(c, cmd.Refer) and c.options is not None:
        return list(_refer_problems(c.options))
    return []


def check_supported(c: cmd.Command) -> None:
    """Raise a 501 ProtocolError naming the first field voxray cannot act on."""
    found = problems(c)
    if found:
        field, why = found[0]
        raise ProtocolError(f"{c.command}: {field} is not supported: {why}", 501)
