"""voxray: a voice-agent cluster on Ray."""

__version__ = "0.1.0"
