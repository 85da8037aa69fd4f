"""Latency and CPU per call against concurrent calls, from bench/run.py's level rows, as a PNG.

Run alone to redraw a saved run: .venv/bin/python bench/plot.py [bench/results/latest.json] [out.png]
"""

from __future__ import annotations

import json
import math
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

DEFAULT_OUT = Path(__file__).resolve().parent / "latency_cpu.png"  # tracked: the README shows it

# (row key, legend text, line style): asrFinal and first reply audio, both from end of speech.
LATENCIES = (("asr_p50_ms", "asrFinal p50", "-"), ("asr_p95_ms", "asrFinal p95", "--"),
             ("tts_p50_ms", "first audio p50", "-"), ("tts_p95_ms", "first audio p95", "--"))
MARKERS = {"asr": "o", "tts": "s"}


def check_backend() -> None:
    """Raise now if matplotlib is missing (it comes with `.[test]` or `.[bench]`)."""
    import matplotlib.backends.backend_agg  # noqa: F401


def _value(row: Mapping[str, Any], key: str) -> float:
    v = row.get(key)
    return math.nan if v is None else float(v)  # a level with every utterance dropped has no latency


def write_plot(rows: Sequence[Mapping[str, Any]], out: str | Path = DEFAULT_OUT) -> Path:
    """Draw `rows` (asdict(LevelResult) per behaviour and level, as in latest.json's `levels`) to `out`."""
    # The Agg canvas directly, not pyplot: no global backend state, works without a display.
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.ticker import FixedLocator, NullLocator, ScalarFormatter

    if not rows:
        raise ValueError("no level rows to plot")
    behaviours = list(dict.fromkeys(r.get("behaviour", "new") for r in rows))  # first-seen order
    levels = sorted({int(r["calls"]) for r in rows})
    fig = Figure(figsize=(11, 4.5), layout="constrained")
    FigureCanvasAgg(fig)
    lat, cpu = fig.subplots(1, 2)
    palette = ["tab:gray", "tab:blue", "tab:orange", "tab:green"]  # old first: grey, today's defaults blue
    for i, b in enumerate(behaviours):
        mine = sorted((r for r in rows if r.get("behaviour", "new") == b), key=lambda r: r["calls"])
        x = [int(r["calls"]) for r in mine]
        color = palette[i % len(palette)]
        for key, label, style in LATENCIES:
            lat.plot(x, [_value(r, key) for r in mine], style, color=color, marker=MARKERS[key[:3]],
                     markersize=4, label=f"{b}: {label}", alpha=1.0 if key.startswith("asr") else 0.6)
        cpu.plot(x, [_value(r, "cpu_pct_per_call") for r in mine], "-", color=color, marker="o", label=b)
    # Latency spans ~0.3 s to minutes past saturation: a log axis keeps both ends readable.
    lat.set_yscale("log")
    lat.set_ylabel("ms from end of speech")
    lat.set_title("Latency")
    cpu.set_ylabel("% of one core per concurrent call")
    cpu.set_title("Ray CPU per call")
    cpu.set_ylim(bottom=0)
    for ax in (lat, cpu):
        ax.set_xscale("log", base=2)
        ax.xaxis.set_major_locator(FixedLocator(levels))
        ax.xaxis.set_major_formatter(ScalarFormatter())
        ax.xaxis.set_minor_locator(NullLocator())
        ax.set_xlabel("concurrent calls")
        ax.grid(True, which="major", alpha=0.3)
        ax.legend(fontsize="small")
    fig.suptitle("voxray bench: end-to-end calls")
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, format="png", dpi=110)
    return out


def main(argv: list[str] | None = None) -> None:
    args = sys.argv[1:] if argv is None else argv
    src = Path(args[0]) if args else DEFAULT_OUT.parent / "latest.json"
    out = write_plot(json.loads(src.read_text())["levels"], args[1] if len(args) > 1 else DEFAULT_OUT)
    print(out)


if __name__ == "__main__":
    main()
