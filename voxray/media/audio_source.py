"""Audio for `play`, `background` and SIP music on hold: anything FFmpeg decodes, from a
file or an http(s) URL.

Files are served only from configured folders, and URLs to private addresses are
refused unless allowed, so an agent cannot make the server read or reach what it
should not. Downloads are size-capped and cached by URL.
"""

from __future__ import annotations

import asyncio
import hashlib
import ipaddress
import os
import socket
from pathlib import Path
from urllib.parse import urlparse

import numpy as np

from voxray.media.config import MediaConfig
from voxray.protocol.errors import ProtocolError

MAX_DOWNLOAD_BYTES = 50 * 1024 * 1024
MAX_SECONDS = 30 * 60


class AudioSourcePolicy:
    def __init__(self, allowed_dirs: list[str] | None = None, cache_dir: str | None = None,
                 allow_private_urls: bool = False, timeout_s: float = 10.0) -> None:
        self.allowed_dirs = [Path(d).resolve() for d in (allowed_dirs or [])]
        self.cache_dir = Path(cache_dir or os.path.join(os.path.expanduser("~"), ".cache", "voxray", "play"))
        self.allow_private_urls = allow_private_urls
        self.timeout_s = timeout_s

    @classmethod
    def of(cls, config: MediaConfig) -> "AudioSourcePolicy":
        """The node's policy for `play`, `background` and SIP music on hold."""
        return cls(list(config.play_dirs), config.play_cache_dir, config.play_allow_private_urls)


async def load_audio(url: str, rate: int, policy: AudioSourcePolicy, what: str = "play") -> np.ndarray:
    """Decode `url` to mono int16 at `rate`. Raises ProtocolError with the reason, `what` first."""
    try:
        parsed = urlparse(url)
        if parsed.scheme in ("http", "https"):
            path = await _fetch(url, policy)
        elif parsed.scheme in ("", "file"):
            path = _local_path(parsed.path if parsed.scheme == "file" else url, policy)
        else:
            raise ProtocolError(f"unsupported URL scheme '{parsed.scheme}'", 400)
        return await asyncio.to_thread(_decode, path, rate)
    except ProtocolError as exc:
        raise ProtocolError(f"{what}: {exc.message}", exc.code) from None


def _local_path(raw: str, policy: AudioSourcePolicy) -> Path:
    path = Path(raw).resolve()
    if not any(path.is_relative_to(d) for d in policy.allowed_dirs):
        raise ProtocolError("file is outside the allowed media folders", 403)
    if not path.is_file():
        raise ProtocolError(f"no such file '{raw}'", 404)
    return path


def _is_private(host: str) -> bool:
    try:
        infos = socket.getaddrinfo(host, None)
    except socket.gaierror:
        raise ProtocolError(f"cannot resolve host '{host}'", 400) from None
    for info in infos:
        ip = ipaddress.ip_address(info[4][0])
        if ip.is_private or ip.is_loopback or ip.is_link_local or ip.is_reserved or ip.is_multicast:
            return True
    return False


async def _fetch(url: str, policy: AudioSourcePolicy) -> Path:
    import httpx

    host = urlparse(url).hostname or ""
    if not policy.allow_private_urls and await asyncio.to_thread(_is_private, host):
        raise ProtocolError("URLs to private or loopback addresses are not allowed", 403)
    policy.cache_dir.mkdir(parents=True, exist_ok=True)
    cached = policy.cache_dir / hashlib.sha256(url.encode()).hexdigest()
    if cached.exists():
        return cached
    tmp = cached.with_suffix(".part")
    size = 0
    try:
        async with httpx.AsyncClient(timeout=policy.timeout_s, follow_redirects=False) as client:
            async with client.stream("GET", url) as resp:
                if resp.status_code != 200:
                    raise ProtocolError(f"GET {url} answered {resp.status_code}", 502)
                with open(tmp, "wb") as f:
                    async for chunk in resp.aiter_bytes():
                        size += len(chunk)
                        if size > MAX_DOWNLOAD_BYTES:
                            raise ProtocolError("file is larger than 50 MiB", 413)
                        f.write(chunk)
    except httpx.HTTPError as exc:
        tmp.unlink(missing_ok=True)
        raise ProtocolError(f"download failed: {exc}", 502) from None
    except ProtocolError:
        tmp.unlink(missing_ok=True)
        raise
    os.replace(tmp, cached)
    return cached


def _decode(path: Path, rate: int) -> np.ndarray:
    import av

    try:
        with av.open(str(path)) as container:
            stream = next((s for s in container.streams if s.type == "audio"), None)
            if stream is None:
                raise ProtocolError("the file has no audio stream", 415)
            resampler = av.AudioResampler(format="s16", layout="mono", rate=rate)
            parts = []
            total = 0
            for frame in container.decode(stream):
                for out in resampler.resample(frame):
                    arr = out.to_ndarray().reshape(-1)
                    parts.append(arr)
                    total += arr.size
                    if total > MAX_SECONDS * rate:
                        raise ProtocolError("audio longer than 30 minutes", 413)
            for out in resampler.resample(None):
                parts.append(out.to_ndarray().reshape(-1))
    except av.error.FFmpegError as exc:
        raise ProtocolError(f"cannot decode audio: {exc}", 415) from None
    if not parts:
        raise ProtocolError("the file holds no audio", 415)
    return np.concatenate(parts).astype(np.int16)
