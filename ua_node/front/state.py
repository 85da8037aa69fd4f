"""The front's own view of its workers, read from Kamailio's RPC output: whether each is in
the set (flags) and the calls Kamailio counts on it (its dialog load), which is what decides
whether a new INVITE finds a slot (`dispatcher.list`); and its dialogs by state
(`dlg.stats_active`). Pure text parsing, no I/O.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

_DEST = re.compile(r"DEST:\s*\{(.*?)RUNTIME:\s*\{(.*?)\}", re.S)


@dataclass(frozen=True)
class FrontTarget:
    uri: str
    duid: str
    flags: str  # Kamailio's: A active, I inactive, D disabled; then P probing, X not
    load: int  # calls Kamailio counts on this worker (alg 10's dialog load)
    max_load: int

    @property
    def active(self) -> bool:
        return "A" in self.flags and "D" not in self.flags and "I" not in self.flags


def _field(block: str, name: str) -> str:
    m = re.search(rf"^\s*{name}:\s*(.*?)\s*$", block, re.M)
    return m.group(1) if m else ""


def _int(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        return 0


def parse_dialog_stats(text: str) -> dict[str, int]:
    """`dlg.stats_active`: the front's dialogs by state. `answering` ones were answered and
    their ACK not seen yet; a dialog left there is timed out by Kamailio (noack_timeout)."""
    found = {k: _field(text, k) for k in ("starting", "connecting", "answering", "ongoing", "all")}
    return {k: _int(v) for k, v in found.items() if v}


def parse_dispatcher_list(text: str) -> list[FrontTarget]:
    targets = []
    for dest, runtime in _DEST.findall(text):
        targets.append(FrontTarget(uri=_field(dest, "URI"), duid=_field(dest, "DUID"), flags=_field(dest, "FLAGS"),
                                   load=_int(_field(runtime, "DLGLOAD")), max_load=_int(_field(dest, "MAXLOAD"))))
    return targets
