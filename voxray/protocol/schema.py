"""JSON Schema export so agents in any language can validate what they send and get."""

from __future__ import annotations

import json
from typing import Any

from voxray.protocol.commands import command_adapter
from voxray.protocol.events import event_adapter


def protocol_schema() -> dict[str, Any]:
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "title": "voxray agent protocol",
        "commands": command_adapter.json_schema(by_alias=True, mode="validation"),
        "events": event_adapter.json_schema(by_alias=True, mode="serialization"),
    }


def protocol_schema_json(indent: int = 2) -> str:
    return json.dumps(protocol_schema(), indent=indent, sort_keys=False)
