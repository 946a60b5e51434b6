"""Ballots (shape, grounding, dedupe, fallback) and scene cues (validation, fallback)."""

from __future__ import annotations

import json
import re
from dataclasses import asdict

import pytest

from fablecast.inference.story.ballots import (
    ballot_problems,
    clean_option,
    fallback_options,
    option_regex,
    select,
)
from fablecast.inference.story.cues import cue_schema, fallback_cue, parse_cue
from fablecast.inference.story.embed import LexicalEmbedder
from fablecast.inference.story.spec import PRESETS, load_spec
from fablecast.inference.story.state import StoryCard

EMB = LexicalEmbedder()
CARD = StoryCard(load_spec("noir"))
ENTS = CARD.entities()


def test_option_regex_admits_actions_on_entities_only() -> None:
    rx = re.compile(option_regex(["Lena", "the ledger"]))
    assert rx.fullmatch(" hides the ledger.")
    assert rx.fullmatch(" asks Lena.")
    assert not rx.fullmatch(" 1. Fast.")
    assert not rx.fullmatch(" climbs the final ladder.")


def test_clean_option() -> None:
    assert clean_option("Sam", " follows Lena.") == "Sam follows Lena"
    assert clean_option("Sam", " votes for Lena.") is None
    assert clean_option("Sam", " picks 2 things.") is None
    assert clean_option("Sam", " x.") is None


def test_problems() -> None:
    assert ballot_problems(["I follow Lena", "I search the docks"], ENTS, EMB, "I") == []
    probs = ballot_problems(
        ["I climb the final ladder", "I climb the final ladders"], ENTS, EMB, "I"
    )
    assert any("ungrounded" in p for p in probs) and "options too similar" in probs
    assert ballot_problems(["I follow Lena"], ENTS, EMB, "I") == ["1 options (2-5 allowed)"]


def test_select_dedupes_and_tops_up() -> None:
    fb = fallback_options(CARD, 3)
    opts, used = select(["I follow Lena", "I follow Lena", None, "I follows Lena"], 3, EMB, fb)
    assert len(opts) == 3 and opts[0] == "I follow Lena" and used == 2


@pytest.mark.parametrize("preset", PRESETS)
def test_fallbacks_are_valid_ballots(preset: str) -> None:
    card = StoryCard(load_spec(preset))
    for n in (2, 3, 5):
        opts = fallback_options(card, n, seed=n)
        assert len(opts) == n
        assert ballot_problems(opts, card.entities(), EMB, card.spec.subject) == []


def test_cue_parse_and_fallback() -> None:
    schema = cue_schema(CARD)
    good = {
        "location": "the docks",
        "time_of_day": "night",
        "weather": "rain",
        "lighting": "neon",
        "music": "tense",
        "characters": ["Sam Calloway"],
        "image_prompt": "A detective on a wet pier under neon light",
    }
    assert parse_cue(json.dumps(good), CARD).location == "the docks"
    assert set(schema["required"]) == set(good)
    for bad in (
        "{not json",
        json.dumps({**good, "weather": "lava"}),
        json.dumps({**good, "characters": ["Nobody"]}),
        json.dumps({**good, "extra": 1}),
        json.dumps({**good, "image_prompt": "x"}),
    ):
        with pytest.raises(ValueError):
            parse_cue(bad, CARD)
    fb = fallback_cue(CARD, "Lena waits at the club.", "tense")
    assert fb.source == "fallback" and fb.music == "tense" and "Lena Voss" in fb.characters
    as_json = {k: v for k, v in asdict(fb).items() if k != "source"}
    assert parse_cue(json.dumps(as_json), CARD).location == fb.location  # fallbacks validate


def test_a_cues_music_follows_the_tone_the_beat_was_told_in() -> None:
    assert cue_schema(CARD, "funny")["properties"]["music"]["enum"] == ["playful"]
    assert len(cue_schema(CARD)["properties"]["music"]["enum"]) > 1  # no tone: any music
    good = {
        "location": "the docks",
        "time_of_day": "night",
        "weather": "rain",
        "lighting": "neon",
        "music": "sad",
        "characters": ["Sam Calloway"],
        "image_prompt": "A detective on a wet pier under neon light",
    }
    assert parse_cue(json.dumps(good), CARD, "sad").music == "sad"
    with pytest.raises(ValueError, match="music"):
        parse_cue(json.dumps(good), CARD, "exciting")


def test_junk_words_and_recent_winners_are_left_out() -> None:
    known = {"hides", "walks", "into"}.__contains__
    ents = ["the ledger", "the office"]
    assert clean_option("I", " hides the ledger.", ents, known) == "I hides the ledger"
    assert clean_option("I", " ofdownloadedadk the ledger.", ents, known) is None
    # Apostrophes and symbols outside the entity are junk the word check cannot see.
    assert clean_option("I", " love it'l's the ledger.", ents, known) is None
    assert clean_option("I", " hide the ledger; now.", ents) is None
    fb = ["I search the docks", "I follow Lena"]
    opts, used = select(
        ["I open the ledger", "I walk into the office", "I walk into the office now"],
        2,
        EMB,
        fb,
        avoid=["I open the ledger"],
        entities=["the ledger", "the office", "the docks", "Lena"],
    )
    assert opts[0] == "I walk into the office" and "I open the ledger" not in opts and used == 1


def test_an_auxiliary_where_the_action_should_be_is_not_an_option() -> None:
    ents = ["the market", "the docks", "Lena"]
    assert clean_option("Mira", " does not to the market.", ents) is None
    assert clean_option("I", " am to the docks.", ents) is None
    assert clean_option("I", " will need to Lena.", ents) is None
    assert clean_option("I", " didn't know the docks.", ents) is None
    assert clean_option("Mira", " walks to the market.", ents) == "Mira walks to the market"
    assert clean_option("I", " ask Lena.", ents) == "I ask Lena"


def test_avoiding_recent_winners_never_leaves_a_short_ballot() -> None:
    opts, _ = select(
        ["I open the ledger", "I burn the ledger"], 2, EMB, [], avoid=["I open the ledger"]
    )
    assert opts == ["I open the ledger", "I burn the ledger"]  # the rule gives way
    opts, _ = select(
        ["I open the ledger", "I burn the ledger", "I leave the office"],
        2,
        EMB,
        [],
        avoid=["I open the ledger"],
    )
    assert opts == ["I burn the ledger", "I leave the office"]


def test_select_spreads_over_entities() -> None:
    ents = ["the ledger", "the office"]
    opts, _ = select(
        ["I read the ledger", "I burn the ledger", "I leave the office"], 2, EMB, [], entities=ents
    )
    assert opts == ["I read the ledger", "I leave the office"]


def test_a_story_without_places_or_things_still_gets_full_ballots() -> None:
    from fablecast.inference.prompts import story_spec

    card = StoryCard(story_spec("T", "P"))
    for n in (2, 3, 4, 5):
        opts = fallback_options(card, n)
        assert len(opts) == n and len(set(opts)) == n


def test_options_without_a_verb_or_with_a_missing_one_are_junk() -> None:
    ents = ["the bridge", "Rook", "the starship", "the blaster", "Admiral Vex"]
    for junk in (
        " and the starship.",
        " to the starship.",
        " herself finds Admiral Vex.",
        " decides to Rook.",
        " prepares to Rook.",
        " sets to the bridge.",
        " rolls her to the bridge.",
        " pushed her near the blaster.",
        " eyes you for Rook.",
        " finds one to the bridge.",
        " waits and Admiral Vex.",
        " stands beside across the bridge.",
        " initially sets about the bridge.",
        " van Rook.",
        " dances the from the bridge.",
        " holds her Admiral Vex.",
        " searches the Admiral Vex.",
        " performs two on the bridge.",
    ):
        assert clean_option("Aria", junk, ents) is None, junk
    for good in (
        " runs to the bridge.",
        " follows Rook.",
        " hides the starship.",
        " gives Rook the blaster.",
        " talks to Admiral Vex.",
        " sneaks into the starship.",
        " climbed to the bridge.",
        " found the blaster.",
        " walks out to the bridge.",
        " runs up to Admiral Vex.",
    ):
        assert clean_option("Aria", good, ents) == "Aria" + good.rstrip("."), good


def test_an_entity_that_starts_with_the_keeps_its_article() -> None:
    ents = ["the Blue Heron club", "Nico"]
    assert clean_option("I", " walk into the Blue Heron club.", ents) == (
        "I walk into the Blue Heron club"
    )
    assert clean_option("I", " meet the Nico.", ents) is None


def test_spare_fallbacks_are_grounded_and_keep_the_first_ones() -> None:
    from fablecast.inference.story.ballots import grounded

    card = StoryCard(load_spec("space_opera"))
    plain = fallback_options(card, 3, seed=2)
    more = fallback_options(card, 3, seed=2, spare=6)
    assert more[:3] == plain and len(more) == 9 and len(set(more)) == 9
    ents = card.entities()
    assert all(grounded(o, ents, "Aria") for o in more)


def test_when_recent_winners_must_fill_a_ballot_the_oldest_comes_back_first() -> None:
    emb = LexicalEmbedder()
    recent = ["I hide the ledger", "I call Nico", "I follow Lena"]  # oldest first
    cands = ["I follow Lena", "I search the docks", "I call Nico", "I hide the ledger"]
    opts, _ = select(cands, 3, emb, [], avoid=recent)
    # Only one fresh option: two winners must come back, the oldest two, not the last.
    assert opts == ["I search the docks", "I call Nico", "I hide the ledger"]
