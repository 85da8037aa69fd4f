"""What a model replica's death costs a turn: single replicas (before) vs a warm standby (now).

One embedded Ray, the app deployed twice: first with one ASR and one TTS replica
(`min_replicas = 1`, voxray's defaults before the standby), then with today's defaults
(two of each). For each: turns without a kill (the baseline), a turn whose ASR replica
is killed 0.3 s before the caller stops, and a turn whose TTS replica is killed between the
transcript and the reply's `tts` command. Prints the seconds from the end of speech to
`asrFinal` (or that none came within 60 s: the retries gave up before a replacement was
up), and from `asrFinal` to the reply's first audio, and the extra over the baseline.

Run: .venv/bin/python bench/replica_loss.py
"""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.sip_media import app_config, deployed  # noqa: E402
from tests.test_faults import _healthy, _timed_turn  # noqa: E402


async def _turn_or_none(server: str, speech, kill: str, when: str) -> dict | None:
    try:
        return await _timed_turn(server, speech, kill, when)
    except AssertionError:  # the turn's transcript or reply never came (60 s)
        return None


async def _measure(server: str, speech) -> dict[str, float | None]:
    base = [await _timed_turn(server, speech, None, "") for _ in range(2)]
    asr = await _turn_or_none(server, speech, "AsrDeployment", "ending")
    await _healthy("AsrDeployment", timeout=180)
    tts = await _turn_or_none(server, speech, "TtsDeployment", "final")
    await _healthy("TtsDeployment", timeout=180)
    ref_asr, ref_reply = min(b["asr_s"] for b in base), min(b["reply_s"] for b in base)
    return {"base_asr": ref_asr, "asr_killed": asr["asr_s"] if asr else None, "base_reply": ref_reply,
            "tts_killed": tts["reply_s"] if tts else None}


def _cell(value: float | None, ref: float) -> str:
    return "none within 60 s" if value is None else f"{value:.2f} s (+{value - ref:.2f})"


async def main() -> None:
    from voxray.cluster.local import deploy
    from voxray.speech import espeak_speech
    from tests.conftest import SENTENCE

    speech = espeak_speech(SENTENCE, 16000)
    config = app_config()
    # A turn that waited 7 s for a replacement replica would close the admission gate on
    # the next call (its latency gate, bench/soak.py's subject): not what is measured here.
    config.admission.asr_latency_s = None
    server = f"127.0.0.1:{config.serve.port}"
    single = config.model_copy(deep=True)
    single.asr.min_replicas = single.asr.max_replicas = 1
    single.tts.min_replicas = single.tts.max_replicas = 1
    rows = []
    async with deployed(single):
        rows.append(("one replica each (before)", await _measure(server, speech)))
        await asyncio.to_thread(deploy, config, log=lambda *_: None)  # the same app: Serve updates it
        rows.append(("warm standby, 2 each (now)", await _measure(server, speech)))
    print("\n| ASR/TTS replicas | asrFinal, no kill | asrFinal, ASR killed mid-turn (extra) "
          "| reply audio after asrFinal, no kill | with TTS killed (extra) |")
    print("|---|---:|---:|---:|---:|")
    for name, r in rows:
        print(f"| {name} | {r['base_asr']:.2f} s | {_cell(r['asr_killed'], r['base_asr'])} "
              f"| {r['base_reply']:.2f} s | {_cell(r['tts_killed'], r['base_reply'])} |")


if __name__ == "__main__":
    asyncio.run(main())
