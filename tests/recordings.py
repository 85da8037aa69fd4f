"""Reading a call's recording back in tests: both parties audible, each on its channel."""

from __future__ import annotations

import asyncio
import wave
from pathlib import Path

import numpy as np

from tests.records import call_record


async def wait_for_file(path: Path, timeout_s: float = 20.0) -> None:
    """The WAV is written when the call's media closes, just after the hangup event."""
    for _ in range(int(timeout_s / 0.1)):
        if path.exists() and path.stat().st_size > 44:
            await asyncio.sleep(0.2)  # the header is written first, the blocks after
            return
        await asyncio.sleep(0.1)
    raise AssertionError(f"no recording at {path}")


def stereo_sides(path: Path) -> tuple[np.ndarray, np.ndarray, int]:
    with wave.open(str(path)) as w:
        assert w.getnchannels() == 2 and w.getsampwidth() == 2, "recordings are stereo 16-bit by default"
        rate = w.getframerate()
        pcm = np.frombuffer(w.readframes(w.getnframes()), dtype="<i2").reshape(-1, 2)
    return pcm[:, 0], pcm[:, 1], rate


def loud_seconds(pcm: np.ndarray, rate: int, threshold: float = 500.0) -> float:
    """Seconds of 20 ms blocks whose RMS is above `threshold` (speech, not line noise)."""
    n = rate // 50
    blocks = pcm[: pcm.size // n * n].astype(np.float64).reshape(-1, n)
    return float((np.sqrt((blocks ** 2).mean(axis=1)) > threshold).sum() * 0.02)


async def assert_recorded(server: str, call_id: str, path: Path, caller_s: float = 0.8,
                          agent_s: float = 0.8) -> None:
    """The call's record links the WAV; the caller is heard on the left, the agent on the right."""
    await wait_for_file(path)
    left, right, rate = stereo_sides(path)
    assert rate == 16000
    assert loud_seconds(left, rate) >= caller_s, f"caller barely audible: {loud_seconds(left, rate):.2f} s"
    assert loud_seconds(right, rate) >= agent_s, f"agent barely audible: {loud_seconds(right, rate):.2f} s"
    rec = await call_record(server, call_id)
    assert rec and rec["recording"] == str(path.resolve()), rec
