"""Cutting text into speakable pieces (pure logic)."""

from __future__ import annotations

from voxray.media.text_chunker import TextChunker, split_first_clause


def test_a_whole_text_gives_its_first_clause_then_the_rest():
    assert split_first_clause("Sure, a table for two at seven.") == ["Sure,", "a table for two at seven."]
    assert split_first_clause("Thank you. Our hours are nine to five. Bye.") == [
        "Thank you.", "Our hours are nine to five. Bye."]


def test_nothing_to_split_stays_whole():
    assert split_first_clause("Hello.") == ["Hello."]
    assert split_first_clause("no punctuation at all") == ["no punctuation at all"]
    assert split_first_clause("   ") == []
    long_first = "word " * 40 + ", and the rest."
    assert split_first_clause(long_first) == [long_first.strip()]


def test_streamed_tokens_cut_the_first_clause_early_then_sentences():
    c = TextChunker(first_clause_min_chars=10)
    out = []
    for tok in ["Of course", ", I can help", " with that. Your", " booking is", " confirmed. See", " you"]:
        out += c.push(tok)
    out += c.flush()
    assert out == ["Of course,", "I can help with that.", "Your booking is confirmed.", "See you"]


def test_a_short_first_clause_ready_to_play_is_cut_at_once():
    tokens = ["Sure", ", I can", " help with that.", " Anything else?"]
    plain, ready = TextChunker(), TextChunker(ready=lambda clause: clause == "Sure,")
    assert [p for t in tokens for p in plain.push(t)] == ["Sure, I can help with that.", "Anything else?"]
    assert [p for t in tokens for p in ready.push(t)] == ["Sure,", "I can help with that.", "Anything else?"]
    # Only the first piece: later clauses wait for their sentence.
    later = TextChunker(ready=lambda clause: True)
    assert [p for t in ["Okay.", " So, then", " we go."] for p in later.push(t)] == ["Okay.", "So, then we go."]
