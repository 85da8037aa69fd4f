"""Shared plumbing of the cloud providers: one pooled HTTP client, WAV packing, keys."""

from __future__ import annotations

import io
import os
import wave
from collections.abc import AsyncIterator

import httpx
import numpy as np

from voxray.providers.base import CallCredentials, ProviderError, TtsChunk


def wav_bytes(pcm16k: np.ndarray, rate: int = 16000) -> bytes:
    buf = io.BytesIO()
    with wave.open(buf, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(pcm16k.astype("<i2").tobytes())
    return buf.getvalue()


class HttpProvider:
    """Endpoint, key and timeout, with per-call overrides from the agent."""

    default_name: str
    default_endpoint: str
    default_model: str | None = None

    def __init__(self, name: str | None = None, endpoint: str | None = None, api_key: str | None = None,
                 api_key_env: str | None = None, model: str | None = None, timeout_s: float = 10.0) -> None:
        self.name = name or self.default_name
        self.endpoint = (endpoint or self.default_endpoint).rstrip("/")
        self._api_key = api_key
        self._api_key_env = api_key_env
        self.model = model or self.default_model
        self.timeout_s = timeout_s
        self._client: httpx.AsyncClient | None = None

    def load(self) -> None:
        # Connections are pooled per replica; one client serves every call.
        self._client = httpx.AsyncClient(timeout=httpx.Timeout(self.timeout_s, connect=min(self.timeout_s, 3.0)))

    @property
    def client(self) -> httpx.AsyncClient:
        if self._client is None:
            self.load()
        return self._client

    def resolve(self, creds: CallCredentials | None) -> tuple[str, str | None, str | None]:
        endpoint = (creds.endpoint.rstrip("/") if creds and creds.endpoint else self.endpoint)
        key = (creds.secret_key if creds and creds.secret_key else None) or self._api_key or (
            os.environ.get(self._api_key_env) if self._api_key_env else None)
        model = (creds.model if creds and creds.model else None) or self.model
        return endpoint, key, model

    @staticmethod
    def check(resp: httpx.Response, what: str) -> None:
        if resp.status_code >= 400:
            raise ProviderError(f"{what} answered HTTP {resp.status_code}: {resp.text[:200]}")


async def stream_pcm(client: httpx.AsyncClient, what: str, rate: int, method: str, url: str,
                     **kw) -> AsyncIterator[TtsChunk]:
    """POST to a speech endpoint that streams raw 16-bit PCM; yield whole samples as they come."""
    async with client.stream(method, url, **kw) as resp:
        if resp.status_code >= 400:
            await resp.aread()
        HttpProvider.check(resp, what)
        carry = b""
        async for chunk in resp.aiter_bytes():
            data = carry + chunk
            cut = len(data) // 2 * 2  # a chunk may end mid-sample
            carry = data[cut:]
            if cut:
                yield TtsChunk(pcm=data[:cut], sample_rate=rate)
