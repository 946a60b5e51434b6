"""server/moderation/holdback.py: no blocked term leaks, however the text is split."""

from __future__ import annotations

import random
import re

import pytest

from fablecast.server.moderation.filter import SafetyFilter
from fablecast.server.moderation.holdback import Holdback

TERMS = ["hell", "grue", "blood moon"]


def _stream(hb: Holdback, pieces: list[str]) -> str:
    shown = "".join(hb.feed(p).text for p in pieces)
    return shown + hb.finish().text


def _splits(text: str, rnd: random.Random) -> list[str]:
    pieces, i = [], 0
    while i < len(text):
        n = rnd.randint(1, 4)
        pieces.append(text[i : i + n])
        i += n
    return pieces


def test_clean_text_is_released_whole_and_in_order() -> None:
    text = "Hello there, the lantern glows. A classic tale of the shell."
    hb = Holdback(SafetyFilter(TERMS))
    assert _stream(hb, list(text)) == text
    assert not hb.stopped and hb.released_chars == len(text)


def test_hold_is_at_least_the_longest_match_plus_one() -> None:
    f = SafetyFilter(TERMS)
    assert Holdback(f, 2).hold_chars == f.max_match_chars + 1
    assert Holdback(f, 40).hold_chars == 40


@pytest.mark.parametrize("seed", range(40))
def test_a_term_split_across_deltas_never_leaks(seed: int) -> None:
    rnd = random.Random(seed)
    clean = "The courier walks on. " * rnd.randint(0, 3)
    lead, term = rnd.choice([("to ", "HELL"), ("a ", "grue"), ("the ", "Blood\nMoon")])
    text = clean + lead + term + " and more text after it, long enough to flush the hold."
    hb = Holdback(SafetyFilter(TERMS))
    shown = _stream(hb, _splits(text, rnd))
    assert hb.blocked is not None
    assert shown == text[: len(shown)]  # a clean prefix, in order
    assert len(shown) <= len(clean + lead)  # not even the term's first letter got out


def test_term_at_the_very_end_is_caught_by_finish() -> None:
    hb = Holdback(SafetyFilter(TERMS))
    shown = _stream(hb, ["go ", "to ", "hel", "l"])
    assert "hel" not in shown and hb.blocked is not None and hb.blocked.term == "hell"


def test_nothing_more_after_a_block() -> None:
    hb = Holdback(SafetyFilter(["grue"]))
    hb.feed("a grue appears and the text goes on for a while")
    assert hb.stopped
    assert hb.feed("more clean text than the hold " * 3).text == ""
    assert hb.finish().text == ""


def test_filter_failure_fails_closed() -> None:
    calls = 0

    def flaky(text: str) -> bool:
        nonlocal calls
        calls += 1
        if calls > 1:
            raise TimeoutError("classifier timed out")
        return False

    hb = Holdback(SafetyFilter([], flaky), hold_chars=4)
    first = hb.feed("abcdefgh")
    assert first.text == "abcd"
    second = hb.feed("ijkl")
    assert second.text == "" and second.failed and "timed out" in second.failed
    assert hb.finish().text == "" and hb.stopped


def test_releases_end_at_whitespace() -> None:
    hb = Holdback(SafetyFilter(["grue"]), hold_chars=5)
    out = [hb.feed(w + " ").text for w in ["one", "two", "three", "four", "five", "six", "seven"]]
    released = [o for o in out if o]
    assert released and all(r.endswith(" ") for r in released)
    assert "".join(released) + hb.finish().text == "one two three four five six seven "


def test_a_long_run_without_whitespace_is_cut() -> None:
    hb = Holdback(SafetyFilter(["grue"]), hold_chars=5)
    assert hb.feed("x" * 9).text == ""
    assert hb.feed("x" * 3).text == "x" * 7


def test_a_word_ending_in_a_term_is_not_cut_into_one() -> None:
    # "glass" / "brass": the context window must not begin inside them and see "ass".
    text = "the old glass orchard, though no bell had hung in the brass tower for years"
    hb = Holdback(SafetyFilter(["ass"]))
    assert _stream(hb, text.split(" ")) == "".join(text.split(" "))
    hb = Holdback(SafetyFilter(["ass"]))
    assert _stream(hb, [w + " " for w in text.split(" ")]) == text + " "
    assert not hb.stopped


@pytest.mark.parametrize("seed", range(60))
def test_agrees_with_a_check_of_the_whole_text(seed: int) -> None:
    """Released text is all of a clean text, and never reaches a term's first letter."""
    rnd = random.Random(seed)
    vocab = ["glass", "brass", "shell", "hello", "bell", "the", "sea,", "a", "ass", "hell", "Hell."]
    weights = [5, 5, 5, 5, 5, 5, 5, 5, 1, 1, 1]
    text = " ".join(rnd.choices(vocab, weights, k=rnd.randint(3, 40)))
    safety = SafetyFilter(["ass", "hell"])
    hb = Holdback(safety, hold_chars=rnd.choice([0, 6, 12]))
    shown = _stream(hb, _splits(text, rnd))
    whole = safety.check(text, final=True)
    if whole.allowed:
        assert shown == text and not hb.stopped
    else:
        assert hb.blocked is not None
        first = re.search(r"(?<!\w)(ass|hell)(?!\w)", text, re.IGNORECASE)
        assert first is not None and len(shown) <= first.start() and text.startswith(shown)
