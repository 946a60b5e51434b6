"""Sentence guard helpers, tone directives and the story card."""

from __future__ import annotations

from fablecast.inference.story.spec import load_spec
from fablecast.inference.story.state import StoryCard
from fablecast.inference.story.text import (
    ends_sentence,
    is_meta,
    shares_run,
    split_complete,
    trim_to_sentence,
)
from fablecast.inference.story.tone import OPPOSED, REACTION_TONES, TONES, tone_for_mood
from fablecast.protocol.messages import REACTIONS


def test_split_and_trim() -> None:
    done, rest = split_complete('She runs. "Stop!" he cries. And then')
    assert done == ["She runs. ", '"Stop!" he cries. '] and rest == "And then"
    assert trim_to_sentence("One. Two and") == "One."
    assert ends_sentence("It ends.") and not ends_sentence("It does not")


def test_loops_and_meta() -> None:
    a = "the rain fell on the roofs of the old city all night long"
    assert shares_run("then " + a, [a])
    assert not shares_run("the rain fell on the roofs", [a])
    assert is_meta("The audience must now decide.") and is_meta("They vote.")
    assert not is_meta("She devotes her life to the sword.")
    assert is_meta("Story continues, Mira slowly begins to weave.")
    assert not is_meta("Her story continued to grow in the retelling.")


def test_every_reaction_maps_to_a_documented_tone() -> None:
    assert set(REACTION_TONES) == set(REACTIONS)
    assert set(REACTION_TONES.values()) <= set(TONES)
    for tone in TONES.values():
        assert not is_meta(tone.directive)


def test_each_tone_shuns_the_words_of_its_opposed_tones_never_its_own() -> None:
    for tone in TONES.values():
        own = {*tone.favour, *tone.marks}
        assert tone.shun and not own & set(tone.shun)
        for other in OPPOSED[tone.name]:
            assert set(TONES[other].favour) - own <= set(tone.shun)
    assert "tears" in TONES["funny"].shun and "laugh" not in TONES["funny"].shun
    assert "quiet" in TONES["exciting"].shun and "tears" not in TONES["sad"].shun


def test_tone_from_mood() -> None:
    assert tone_for_mood(0.0, 0.0, 0.1, {}) is None
    assert tone_for_mood(-0.6, 0.8, 5.0, {"fear": 4.0, "laugh": 1.0}) is TONES["tense"]
    assert tone_for_mood(0.7, 0.7, 5.0, {"laugh": 3.0}) is TONES["funny"]
    assert tone_for_mood(-0.7, -0.4, 2.0, {}) is TONES["sad"]  # continuous samples only


def test_card_tracks_place_things_names_and_events() -> None:
    card = StoryCard(load_spec("noir"))
    assert card.location == "the office"
    card.update(
        "I walk to the docks. I take the ledger from a crate. Mr Harlow Finch waits.", "I go"
    )
    assert card.location == "the docks"
    assert "the ledger" in card.carrying
    assert "Harlow Finch" in card.seen
    assert card.events == ["I go"]
    assert "Place: the docks." in card.render()
    assert card.lore("the ledger") and not card.lore("nothing here")


def test_card_is_bounded() -> None:
    card = StoryCard(load_spec("noir"))
    for i in range(100):
        card.update(f"I meet Zed{chr(97 + i % 26)}son at the docks.", f"I do thing {i}")
    assert len(card.events) <= 6 and len(card.seen) <= 6
    assert len(card.render()) < 1200
