"""JSON Schema export so agents in any language can validate what they send and get."""

from __future__ import annotations

import json
from typing import Any

from pydantic.alias_generators import to_camel

from voxray.protocol.commands import command_adapter
from voxray.protocol.events import event_adapter
from voxray.protocol.support import UNSUPPORTED


def _mark_unsupported(schema: dict[str, Any]) -> None:
    """`x-voxray-unsupported` on each active-call field voxray refuses (voxray.protocol.support)."""
    defs = schema.get("$defs", {})
    for (model, field), why in UNSUPPORTED.items():
        props = defs.get(model, {}).get("properties", {})
        wire = to_camel(field)
        if wire in props:
            props[wire]["x-voxray-unsupported"] = why


def protocol_schema() -> dict[str, Any]:
    commands = command_adapter.json_schema(by_alias=True, mode="validation")
    _mark_unsupported(commands)
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "title": "voxray agent protocol",
        "commands": commands,
        "events": event_adapter.json_schema(by_alias=True, mode="serialization"),
    }


def protocol_schema_json(indent: int = 2) -> str:
    return json.dumps(protocol_schema(), indent=indent, sort_keys=False)
