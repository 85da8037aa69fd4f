"""VOXRAY_* variables (voxray.env) reach the config, the model paths and Ray; log lines are
JSON with the call id of the task that wrote them."""

from __future__ import annotations

import asyncio
import io
import json
import logging

from voxray.config import VoxrayConfig
from voxray.env import forwarded_vars, voxray_env
from voxray.logs import JsonFormatter, _CallIdFilter, bind_call
from voxray.providers.model_paths import whisper_model_path


def test_environment_overrides(monkeypatch, tmp_path):
    cfg = tmp_path / "voxray.toml"
    cfg.write_text('[serve]\nport = 9000\nhost = "0.0.0.0"\n')
    monkeypatch.setenv("VOXRAY_CONFIG", str(cfg))
    assert (VoxrayConfig.load().serve.port, VoxrayConfig.load().serve.host) == (9000, "0.0.0.0")
    monkeypatch.setenv("VOXRAY_PORT", "9100")
    monkeypatch.setenv("VOXRAY_HOST", "127.0.0.2")
    assert (VoxrayConfig.load().serve.port, VoxrayConfig.load().serve.host) == (9100, "127.0.0.2")
    monkeypatch.setenv("VOXRAY_WHISPER_MODEL", str(tmp_path))
    assert whisper_model_path() == str(tmp_path)
    monkeypatch.setenv("VOXRAY_LOG_LEVEL", "debug")
    assert forwarded_vars() == {"VOXRAY_LOG_LEVEL": "debug", "VOXRAY_WHISPER_MODEL": str(tmp_path)}


def test_a_bad_value_is_refused_by_name(monkeypatch):
    monkeypatch.setenv("VOXRAY_PORT", "eighty")
    try:
        voxray_env()
    except ValueError as exc:
        assert "port" in str(exc)
    else:
        raise AssertionError("VOXRAY_PORT=eighty was accepted")


async def test_log_lines_carry_the_call_id_of_their_task():
    out = io.StringIO()
    handler = logging.StreamHandler(out)
    handler.setFormatter(JsonFormatter())
    handler.addFilter(_CallIdFilter())
    log = logging.getLogger("voxray.test_logs")
    log.addHandler(handler)
    log.propagate = False
    log.setLevel(logging.INFO)

    async def call(call_id: str) -> None:
        with bind_call(call_id):
            await asyncio.sleep(0)
            log.info("frame", extra={"n": 1})
    await asyncio.gather(call("a"), call("b"))
    log.info("no call")
    lines = [json.loads(x) for x in out.getvalue().splitlines()]
    assert [(x["msg"], x.get("call_id")) for x in lines] == [("frame", "a"), ("frame", "b"), ("no call", None)]
    assert lines[0]["level"] == "info" and lines[0]["n"] == 1 and lines[0]["ts"].endswith("Z")
