"""bench/plot.py draws the bench's level rows to a PNG (no Ray, no bench run)."""

from __future__ import annotations

from pathlib import Path

from bench.plot import write_plot

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def row(behaviour: str, calls: int, asr: float | None, cpu: float) -> dict:
    """The keys bench/run.py's LevelResult carries that the plot reads."""
    return {"behaviour": behaviour, "calls": calls, "asr_p50_ms": asr, "asr_p95_ms": asr and asr * 1.4,
            "tts_p50_ms": asr and asr + 150, "tts_p95_ms": asr and asr * 1.5 + 150, "cpu_pct_per_call": cpu}


def test_writes_a_png(tmp_path: Path):
    rows = [row("old", 1, 1100, 97), row("old", 8, 11000, 23), row("old", 32, 61000, 6),
            row("new", 1, 290, 50), row("new", 8, 1100, 19),
            row("new", 32, None, 5.5)]  # every utterance dropped: no latency, still a CPU point
    out = write_plot(rows, tmp_path / "sub" / "latency_cpu.png")
    data = out.read_bytes()
    assert out == tmp_path / "sub" / "latency_cpu.png"
    assert data[:8] == PNG_MAGIC
    assert data[12:16] == b"IHDR"
    width, height = int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")
    assert width > 600 and height > 300, (width, height)
    assert len(data) > 50_000, len(data)  # lines and legends drawn: two empty axes are ~16 kB
