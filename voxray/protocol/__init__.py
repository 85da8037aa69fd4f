"""The agent protocol of ../shared/PROTOCOL.md as typed models, free of I/O."""

from voxray.protocol.commands import Command, parse_command
from voxray.protocol.errors import ProtocolError
from voxray.protocol.events import Event, dump_event

__all__ = ["Command", "Event", "ProtocolError", "dump_event", "parse_command"]
