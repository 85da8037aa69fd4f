"""Cuts text into speakable pieces. Pure logic, no I/O.

Streamed LLM tokens: the first piece is cut early (at a clause) so speech starts
while the model is still writing; later pieces are whole sentences, which sound more
natural. A first clause shorter than that is cut too when it is ready to play at once
(`ready`: an opener whose audio is kept, voxray/media/tts_cache.py). A whole text
(`split_first_clause`): its first clause is synthesized alone, so the caller hears it
while the rest is synthesized.
"""

from __future__ import annotations

import re
from collections.abc import Callable

_SENTENCE_END = re.compile(r"[.!?;:。！？]+[\"')\]]*(?=\s|$)")
_CLAUSE_END = re.compile(r"[,，—–-]+(?=\s)")


class TextChunker:
    def __init__(self, first_clause_min_chars: int = 24, max_chars: int = 220,
                 ready: Callable[[str], bool] | None = None) -> None:
        self._buf = ""
        self._emitted = 0
        self.first_clause_min_chars = first_clause_min_chars
        self.max_chars = max_chars
        self.ready = ready  # a first clause this says is ready to play is cut however short

    def push(self, tokens: str) -> list[str]:
        """Add tokens; return the pieces that are complete now."""
        self._buf += tokens
        out: list[str] = []
        while True:
            piece = self._next_piece()
            if piece is None:
                return out
            out.append(piece)

    def flush(self) -> list[str]:
        """End of stream: whatever is left is the last piece."""
        rest, self._buf = self._buf.strip(), ""
        return [rest] if rest else []

    def _next_piece(self) -> str | None:
        cut = None
        m = _SENTENCE_END.search(self._buf)
        if m:
            cut = m.end()
        elif self._emitted == 0:
            for c in _CLAUSE_END.finditer(self._buf):
                if c.end() >= self.first_clause_min_chars or (
                        self.ready is not None and self.ready(self._buf[:c.end()].strip())):
                    cut = c.end()
                    break
        if cut is None and len(self._buf) > self.max_chars:
            # A run-on without punctuation: cut at the last space so speech never stalls.
            space = self._buf.rfind(" ", 0, self.max_chars)
            cut = space if space > 0 else self.max_chars
        if cut is None:
            return None
        piece, self._buf = self._buf[:cut].strip(), self._buf[cut:]
        if not piece:
            return None
        self._emitted += 1
        return piece


def split_first_clause(text: str, max_first_chars: int = 120) -> list[str]:
    """The first clause or sentence, then the rest in one piece (the TTS pipelines its sentences).

    A first clause longer than `max_first_chars` is not worth a piece of its own: it
    takes about as long to synthesize as the sentence around it.
    """
    text = text.strip()
    ends = [m.end() for m in (_SENTENCE_END.search(text), _CLAUSE_END.search(text)) if m]
    if not ends:
        return [text] if text else []
    cut = min(ends)
    first, rest = text[:cut].strip(), text[cut:].strip()
    if not rest or cut > max_first_chars:
        return [text]
    return [first, rest]
