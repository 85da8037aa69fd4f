"""The web console in a real browser: Debian's chromium, headless, with a fake microphone
that speaks the test sentence; the page calls voxray over WebRTC.

Playwright drives the system chromium (`executable_path`); no browser is downloaded.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import httpx
import numpy as np
import pytest

from tests.conftest import SENTENCE
from tests.test_models import wer
from voxray.speech import write_wav

pytestmark = pytest.mark.e2e

CHROMIUM = Path("/usr/bin/chromium")
RMS_THRESHOLD = 0.01  # WebAudio float RMS; silence is 0, Piper speech is ~0.05-0.2


def test_console_page_and_assets_are_served(voxray_server):
    base = f"http://{voxray_server}"
    page = httpx.get(f"{base}/console", timeout=10)
    assert page.status_code == 200 and "text/html" in page.headers["content-type"]
    assert 'src="console/console.js"' in page.text
    js = httpx.get(f"{base}/console/console.js", timeout=10)
    assert js.status_code == 200 and "javascript" in js.headers["content-type"] and "window.voxray" in js.text
    assert httpx.get(f"{base}/console/console.css", timeout=10).status_code == 200
    assert httpx.get(f"{base}/console/..%2Fingress.py", timeout=10).status_code == 404
    assert httpx.get(f"{base}/console/nothing.js", timeout=10).status_code == 404


@pytest.fixture(scope="module")
def fake_mic_wav(speech16k, artifacts) -> Path:
    """1 s silence + sentence + 3 s silence: chromium loops it, each loop a clean utterance."""
    pcm = np.concatenate([np.zeros(16000, np.int16), speech16k, np.zeros(48000, np.int16)])
    path = artifacts / "fake-mic.wav"
    write_wav(path, pcm)
    return path


def chromium_args(wav: Path) -> list[str]:
    return [
        "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
        "--no-first-run", "--disable-quic", "--disable-sync",
        "--use-fake-ui-for-media-stream", "--use-fake-device-for-media-stream",
        f"--use-file-for-fake-audio-capture={wav}",
        "--autoplay-policy=no-user-gesture-required",
        # Plain host candidates (not mDNS names): the test's peers are on this machine.
        "--disable-features=WebRtcHideLocalIpsWithMdns",
        "--allow-loopback-in-peer-connection",
    ]


async def _events(page, name: str) -> list[dict]:
    return await page.evaluate("(n) => window.voxray.events.filter(e => e.event === n)", name)


async def _wait_for_sentence(page, timeout_s: float) -> str:
    """The first asrFinal close to SENTENCE (the fake mic loops; an early one may be cut)."""
    deadline = time.monotonic() + timeout_s
    seen: list[str] = []
    while time.monotonic() < deadline:
        seen = [e["text"] for e in await _events(page, "asrFinal")]
        for text in seen:
            if wer(SENTENCE, text) <= 0.5:
                return text
        await asyncio.sleep(0.25)
    names = await page.evaluate("window.voxray.events.map(e => e.event)")
    raise AssertionError(f"no asrFinal close to the sentence in {timeout_s}s: {seen}; events {names}")


async def test_console_calls_over_webrtc_in_chromium(voxray_server, fake_mic_wav, artifacts, tmp_path):
    if not CHROMIUM.exists():
        pytest.skip(f"{CHROMIUM} is absent (apt-get install chromium; scripts/install.sh does)")
    from playwright.async_api import async_playwright

    logs: list[str] = []
    async with async_playwright() as pw:
        ctx = await pw.chromium.launch_persistent_context(
            str(tmp_path / "profile"),  # a fresh profile each run
            executable_path=str(CHROMIUM), headless=True, args=chromium_args(fake_mic_wav),
            viewport={"width": 1280, "height": 800}, permissions=["microphone"],
        )
        page = await ctx.new_page()
        try:
            page.on("console", lambda m: logs.append(f"console.{m.type}: {m.text}"))
            page.on("pageerror", lambda e: logs.append(f"pageerror: {e}"))
            await page.goto(f"http://{voxray_server}/console")
            await page.click("#call")
            await page.wait_for_function("window.voxray.state === 'in-call'", timeout=60_000)

            text = await _wait_for_sentence(page, timeout_s=120)
            assert text.strip() in await page.inner_text("#events")  # shown to the person, not only recorded
            assert "speaking" in await page.evaluate("window.voxray.events.map(e => e.event)")

            # Mute so the looping sentence cannot barge in on the agent's reply.
            await page.click("#mute")
            await page.evaluate("window.voxray.resetPeak()")
            before = len(await page.evaluate("window.voxray.events"))
            await page.fill("#tts-text", "Sure, I can help you with your account today.")
            await page.click("#tts")
            await page.wait_for_function(
                f"window.voxray.events.slice({before}).some(e => e.event === 'trackStart')", timeout=60_000)
            await page.wait_for_function(f"window.voxray.peakRms > {RMS_THRESHOLD}", timeout=30_000)
            await page.wait_for_function(
                f"window.voxray.events.slice({before}).some(e => e.event === 'trackEnd')", timeout=60_000)
            peak = await page.evaluate("window.voxray.peakRms")
            await page.wait_for_timeout(2500)  # let the call list refresh show this call
            await page.screenshot(path=str(artifacts / "console.png"))

            await page.click("#hangup")
            await page.wait_for_function("window.voxray.events.some(e => e.event === 'hangup')", timeout=30_000)
        except Exception:
            await _save_failure(page, artifacts, logs)
            raise
        finally:
            await ctx.close()
    assert wer(SENTENCE, text) <= 0.5 and peak > RMS_THRESHOLD


async def _save_failure(page, artifacts: Path, logs: list[str]) -> None:
    try:
        await page.screenshot(path=str(artifacts / "console-failure.png"))
    except Exception:
        pass
    (artifacts / "console-failure.log").write_text("\n".join(logs))
