"""The safety filter's rules (server/moderation/filter.py)."""

from __future__ import annotations

import pytest

from fablecast.server.moderation.filter import (
    BUILTIN_TERMS,
    FilterUnavailable,
    SafetyFilter,
)


def test_whole_words_only_and_case_insensitive() -> None:
    f = SafetyFilter(["hell", "ass"])
    assert not f.check("Go to HELL.").allowed
    assert f.check("Go to HELL.").term == "hell"
    assert f.check("hello, a classic brass lass").allowed
    assert not f.check("what an ass").allowed


def test_multi_word_terms_match_across_short_gaps_only() -> None:
    f = SafetyFilter(["blood moon"])
    assert not f.check("the Blood,\nmoon rose").allowed
    assert f.check("the blood    moon rose").allowed  # four non-word characters
    assert f.max_match_chars == len("bloodmoon") + 3


def test_streaming_end_of_text_is_undecided() -> None:
    f = SafetyFilter(["hell"])
    assert f.check("to hell", final=False).allowed  # may become "hello"
    assert not f.check("to hell", final=True).allowed
    assert not f.check("to hell ", final=False).allowed


def test_room_lists_add_and_lift_terms() -> None:
    f = SafetyFilter.for_room("family", blocked=["Grue"], allowed=["damn"])
    assert "grue" in f.terms and "damn" not in f.terms
    assert not f.check("a grue!").allowed
    assert f.check("damn it").allowed
    assert SafetyFilter.for_room("mature").terms == ()
    assert set(BUILTIN_TERMS["teen"]) < set(BUILTIN_TERMS["family"])


def test_classifier_blocks_and_its_failure_raises() -> None:
    assert not SafetyFilter([], lambda t: "gore" in t).check("much gore").allowed
    assert SafetyFilter([], lambda t: False).check("fine").allowed

    def broken(text: str) -> bool:
        raise RuntimeError("model gone")

    with pytest.raises(FilterUnavailable, match="model gone"):
        SafetyFilter([], broken).check("anything")


@pytest.mark.parametrize("bad", ["", "!!", "x" * 65])
def test_bad_terms_are_refused(bad: str) -> None:
    with pytest.raises(ValueError):
        SafetyFilter([bad])
