"""Prometheus metrics exported through Ray's metrics agent."""

from __future__ import annotations

import asyncio
import time

import httpx
import pytest
import ray

from tests.wsclient import CallClient

pytestmark = pytest.mark.e2e


async def test_call_metrics_reach_prometheus_export(voxray_server):
    client = await CallClient.connect(f"ws://{voxray_server}/call")
    await client.send({"command": "invite", "option": {"codec": "pcm"}})
    await client.wait_for("answer", timeout=15)
    await client.stream(bytes(640 * 60), 640)  # audio in: VAD batches and frame counters
    await client.send({"command": "tts", "text": "Counting.", "playId": "m"})
    await client.wait_for("trackEnd", timeout=30)
    await client.send({"command": "oops"})
    await client.wait_for("error")
    await client.send({"command": "hangup"})
    await client.wait_for("hangup")
    await client.close()

    port = ray.nodes()[0]["MetricsExportPort"]
    wanted = ("voxray_calls_total", "voxray_tts_first_audio_ms_bucket", "voxray_errors_total",
              "voxray_vad_batch_streams_bucket", "voxray_calls_active", "voxray_event_loop_lag_ms_bucket")
    text = ""
    deadline = time.monotonic() + 60  # Ray exports on an interval
    async with httpx.AsyncClient() as http:
        while time.monotonic() < deadline:
            text = (await http.get(f"http://127.0.0.1:{port}/metrics")).text
            if all(w in text for w in wanted):
                break
            await asyncio.sleep(2)
    missing = [w for w in wanted if w not in text]
    assert not missing, missing
    # Ray prefixes exported names with `ray_`.
    errors = [line for line in text.splitlines() if line.startswith("ray_voxray_errors_total")]
    assert any('sender="protocol"' in line for line in errors), errors
    # The stall watch runs from the first call on the ingress and the first synthesis on TTS.
    lag = [line for line in text.splitlines() if line.startswith("ray_voxray_event_loop_lag_ms_bucket")]
    assert any('role="ingress"' in line for line in lag) and any('role="tts"' in line for line in lag), lag[:4]


def test_every_metric_the_code_records_is_declared():
    """A name missing from the registry raises KeyError where it is recorded (found once in ASR)."""
    import re
    from pathlib import Path

    root = Path(__file__).resolve().parent.parent
    declared = set(re.findall(r'"(\w+)": (?:Gauge|Counter|Histogram)\(', (root / "voxray/metrics.py").read_text()))
    used = set()
    for folder in ("voxray", "deployments", "providers", "ua_node", "cluster"):
        for path in (root / folder).rglob("*.py"):
            used |= set(re.findall(r'metrics\.(?:inc|observe|set_gauge)\(\s*f?"(\w+)"', path.read_text()))
    assert used and used <= declared, sorted(used - declared)
