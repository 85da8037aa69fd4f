"""ASR and TTS provider plugins, one interface each (see base.py)."""
