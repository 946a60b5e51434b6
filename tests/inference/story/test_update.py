"""The engine-written story state: schema, validation, grounding, and how the card takes it."""

from __future__ import annotations

import json
import re
from typing import Any

import msgspec
import pytest

from fablecast.inference.backends.scripted import ScriptedEngine
from fablecast.inference.narrator import Narrator
from fablecast.inference.prompts import NarrationContext, state_request
from fablecast.inference.story.spec import load_spec
from fablecast.inference.story.state import MAX_EVENTS, StoryCard
from fablecast.inference.story.update import (
    MAX_SUMMARY,
    MAX_THREAD,
    StateUpdate,
    fold,
    parse_state,
    state_from_dict,
    state_schema,
)
from fablecast.inference.types import GenerationDelta


def noir() -> StoryCard:
    return StoryCard(load_spec("noir"))


def answer(**over: Any) -> str:
    data: dict[str, Any] = {
        "summary": "Sam finds the ledger at the docks",
        "location": "the docks",
        "present": ["Sam Calloway", "Lena Voss"],
        "carrying": ["the ledger"],
        "goal": "Sam must hide the ledger from Nico",
        "threads": ["Who sent Lena to the docks", "What the ledger proves"],
    }
    data.update(over)
    return json.dumps(data)


def test_schema_names_the_storys_own_places_people_and_things() -> None:
    schema = state_schema(noir())
    props = schema["properties"]
    assert list(props) == ["summary", "location", "present", "carrying", "goal", "threads"]
    assert "the docks" in props["location"]["enum"]
    assert props["present"]["items"]["enum"][0] == "Sam Calloway"
    assert "the revolver" in props["carrying"]["items"]["enum"]
    assert schema["required"] == list(props) and schema["additionalProperties"] is False
    assert props["threads"]["maxItems"] == 3


def test_every_length_bound_compiles_in_guided_decoding() -> None:
    # xgrammar (vLLM's guided decoding) fails to compile a repetition bound over 128.
    bounds = re.findall(r"\{(\d+),(\d+)\}", json.dumps(state_schema(noir())))
    assert bounds and all(int(hi) <= 128 for _, hi in bounds)


def test_a_story_without_objects_has_no_carrying_field() -> None:
    spec = load_spec("noir")
    spec = msgspec.structs.replace(spec, world=msgspec.structs.replace(spec.world, objects=()))
    bare = StoryCard(spec)
    assert "carrying" not in state_schema(bare)["properties"]
    data = json.loads(answer())
    del data["carrying"]
    assert parse_state(json.dumps(data), bare).carrying is None


def test_a_story_without_places_or_cast_leaves_them_to_the_fold() -> None:
    spec = load_spec("noir")
    spec = msgspec.structs.replace(
        spec, characters=(), world=msgspec.structs.replace(spec.world, places=(), start_place="")
    )
    card = StoryCard(spec)
    props = state_schema(card)["properties"]
    assert "location" not in props and "present" not in props
    data = {
        "summary": "The ledger burns",
        "carrying": [],
        "goal": "I must save the ledger from the fire",
        "threads": [],
    }
    up = parse_state(json.dumps(data), card)
    assert up.location is None and up.present == () and up.summary == "The ledger burns"
    card.apply(up)
    assert card.location == "" and card.goal == "I must save the ledger from the fire"


def test_a_good_answer_is_kept_whole() -> None:
    up = parse_state(answer(), noir())
    assert up.summary == "Sam finds the ledger at the docks"
    assert up.location == "the docks" and up.present == ("Sam Calloway", "Lena Voss")
    assert up.carrying == ("the ledger",)
    assert up.threads == ("Who sent Lena to the docks", "What the ledger proves")
    assert state_from_dict(up.to_dict()) == up


@pytest.mark.parametrize(
    ("text", "why"),
    [
        ("{not json", "not JSON"),
        ("[1, 2]", "not an object"),
        (answer(mood="sad"), "unknown keys"),
        (json.dumps({"summary": "Sam waits"}), "missing keys"),
        (answer(location="the moon"), "location"),
        (answer(present=["Sherlock"]), "present"),
        (answer(present=[]), "present: empty"),
        (answer(carrying=["a banana"]), "carrying"),
        (answer(goal=3), "goal: not a string"),
        (answer(threads="Who"), "threads"),
    ],
)
def test_structural_faults_are_refused_with_a_reason(text: str, why: str) -> None:
    with pytest.raises(ValueError, match=why):
        parse_state(text, noir())


def test_ungrounded_or_meta_fields_are_left_out_not_the_whole_update() -> None:
    up = parse_state(
        answer(
            summary="Something happens somewhere",
            goal="The audience votes on what comes next at the docks",
            threads=["Nothing in particular", "Why Nico lied", "why nico lied"],
        ),
        noir(),
    )
    assert up.summary is None and up.goal is None
    assert up.threads == ("Why Nico lied",)  # one ungrounded, one duplicate dropped
    assert up.location == "the docks"


def test_long_fields_are_cut_to_their_limits() -> None:
    up = parse_state(
        answer(
            summary="Sam runs to the docks. " + "Rain falls. " * 20, threads=["Nico " + "x " * 80]
        ),
        noir(),
    )
    assert up.summary == "Sam runs to the docks."
    assert all(len(t) <= MAX_THREAD for t in up.threads)
    # One run-on sentence over the bound would reach the prompt cut off: it is refused.
    assert parse_state(answer(summary="Sam runs " + "far " * 80), noir()).summary is None


def test_apply_lays_the_engines_update_over_the_fold() -> None:
    card = noir()
    card.update("I walk to the office. I take the revolver.", "I go to the office")
    assert card.location == "the office" and card.recaps == [(1, "I go to the office")]
    card.apply(parse_state(answer(), card))
    assert card.location == "the docks"
    assert card.carrying == ["the ledger"] and card.present == ["Sam Calloway", "Lena Voss"]
    assert card.goal == "Sam must hide the ledger from Nico"
    assert card.recaps == [(1, "Sam finds the ledger at the docks")]  # replaces the choice
    text = card.render()
    assert "Open questions: Who sent Lena to the docks; What the ledger proves." in text
    assert "So far: Sam finds the ledger at the docks." in text
    assert card.to_dict()["threads"] == ["Who sent Lena to the docks", "What the ledger proves"]


def test_fields_the_engine_got_wrong_keep_the_fold() -> None:
    card = noir()
    card.update("I take the revolver at the office.", "I look around")
    card.apply(parse_state(answer(summary="It rains", goal="Nothing much"), card))
    assert card.goal == "find the ledger before the Moretti brothers do"
    assert card.recaps == [(1, "I look around")]


def test_fold_is_update_then_apply_and_ignores_bad_records() -> None:
    a, b = noir(), noir()
    up = parse_state(answer(), a)
    a.update("I walk.", "I go")
    a.apply(up)
    fold(b, "I walk.", "I go", up.to_dict())
    assert a.to_dict() == b.to_dict() and a.render() == b.render()
    c = noir()
    fold(c, "I walk.", "I go", {"present": 3})  # malformed record: the fold alone
    assert c.location == "the office" and c.written == 0


def test_card_with_engine_updates_stays_bounded() -> None:
    card = noir()
    long = answer(summary="Sam " + "runs far away " * 12, threads=["Nico " + "asks why " * 9] * 3)
    for i in range(100):
        card.update(f"I meet Zed{chr(97 + i % 26)}son at the docks.", f"I do thing {i}")
        card.apply(parse_state(long, card))
    assert len(card.recaps) <= MAX_EVENTS and len(card.threads) <= 3
    assert len(card.render()) < 1600


def test_state_request_asks_for_json_under_the_schema() -> None:
    card = noir()
    ctx = NarrationContext(room="r", beat=3, spec=card.spec, card=card)
    req = state_request(ctx, "I walk to the docks.", "id")
    assert req.kind == "state" and req.json_schema == state_schema(card)
    assert "I walk to the docks." in req.messages[-1].content
    assert not any(w in req.messages[-1].content.lower() for w in ("audience", "vote"))


async def test_narrator_state_on_the_scripted_engine_is_grounded() -> None:
    engine = ScriptedEngine(tokens_per_s=5000, first_token_s=0)
    await engine.start()
    card = noir()
    ctx = NarrationContext(room="r", beat=1, spec=card.spec, card=card)
    up = await Narrator(engine).state(ctx, "I walk to the docks.")
    assert isinstance(up, StateUpdate) and up.summary and up.goal and up.threads
    assert up.location in card.spec.world.places


async def test_narrator_state_gives_up_after_a_retry() -> None:
    class Broken(ScriptedEngine):
        async def generate(self, request):  # type: ignore[no-untyped-def, override]
            yield GenerationDelta("{oops", 1, finished=True, finish_reason="stop")

    engine = Broken(tokens_per_s=5000, first_token_s=0)
    await engine.start()
    card = noir()
    narrator = Narrator(engine)
    ctx = NarrationContext(room="r", beat=1, spec=card.spec, card=card)
    assert await narrator.state(ctx, "I walk.") is None
    assert len(narrator.state_errors) == 2 and "not JSON" in narrator.state_errors[0]


BEAT = "I walk to the docks. Lena Voss hands me the ledger and says Nico is watching us."


def test_a_summary_must_be_about_this_beat_and_new() -> None:
    card = noir()
    card.update(BEAT, "I go to the docks")
    ok = parse_state(answer(summary="Lena hands me the ledger at the docks"), card, BEAT)
    assert ok.summary == "Lena hands me the ledger at the docks"
    other = parse_state(answer(summary="Nico Moretti drinks at the club"), card, BEAT)
    assert other.summary is None  # names the story, but not this beat
    title = parse_state(answer(summary="Rain on Saint Agnes Street, the docks"), card, BEAT)
    assert title.summary is None
    copied = parse_state(answer(summary="Lena Voss hands me the ledger and says so"), card, BEAT)
    assert copied.summary is None  # a sentence of the beat, not a summary of it
    card.apply(ok)
    card.update("I run to the docks with the ledger, Lena behind me.", "I run")
    again = "I run to the docks" + BEAT
    repeat = parse_state(answer(summary="Lena hands me the ledger at the docks"), card, again)
    assert repeat.summary is None  # the last beat's summary again


def test_goals_and_threads_must_not_copy_the_beat_or_be_a_bare_name() -> None:
    card = noir()
    card.update(BEAT, "I go to the docks")
    up = parse_state(
        answer(
            goal="Lena Voss hands me the ledger and says",
            threads=["Nico Moretti", "the ledger", "Why Nico is watching the docks", "Nico"],
        ),
        card,
        BEAT,
    )
    assert up.goal is None
    assert up.threads == ("Why Nico is watching the docks",)
    good = parse_state(answer(goal="I must keep the ledger away from Nico"), card, BEAT)
    assert good.goal == "I must keep the ledger away from Nico"


def test_copies_of_the_example_or_the_title_and_lists_of_names_are_left_out() -> None:
    card = noir()
    card.update(BEAT, "I go to the docks")
    up = parse_state(
        answer(
            summary="Tom finds a torn letter in the mill tower at the docks with Lena",
            goal="Sam must read the letter before the miller returns",
            threads=[
                "Lena Voss, Nico Moretti",
                "Rain on Saint Agnes at the docks",
                "Who Nico pays",
            ],
        ),
        card,
        BEAT,
    )
    assert up.summary is None and up.goal is None
    assert up.threads == ("Who Nico pays",)


def test_a_summary_is_one_whole_sentence() -> None:
    card = noir()
    card.update(BEAT, "I go to the docks")
    two = parse_state(
        answer(summary="Lena hands me the ledger at the docks. Nico watches."), card, BEAT
    )
    assert two.summary == "Lena hands me the ledger at the docks."
    cut = "Lena hands me the ledger at the docks while " + "the rain falls " * 10
    assert parse_state(answer(summary=cut[:MAX_SUMMARY]), card, BEAT).summary is None


def test_goals_and_threads_have_a_shape_the_schema_asks_for() -> None:
    card = noir()
    props = state_schema(card)["properties"]
    goal = props["goal"]["pattern"]
    assert goal.startswith("^(I|Sam|Lena|") and " must " in goal
    assert props["threads"]["items"]["pattern"].startswith("^(Who|What|Why|")
    up = parse_state(
        answer(
            goal="Keep the ledger away from Nico",
            threads=["Lena leaves the docks at night", "Why Lena lies about the ledger"],
        ),
        card,
    )
    assert up.goal is None  # no "<someone> must ..."
    assert up.threads == ("Why Lena lies about the ledger",)  # a statement is no thread
    named = parse_state(answer(goal="Lena Voss must leave the docks before dawn"), card)
    assert named.goal == "Lena Voss must leave the docks before dawn"


def test_goals_and_threads_cut_off_by_the_bound_are_left_out() -> None:
    card = noir()
    schema = state_schema(card)["properties"]
    hi = int(re.search(r"\{6,(\d+)\}", schema["goal"]["pattern"]).group(1))  # type: ignore[union-attr]
    cut = "I must " + ("find the ledger " * 10)[: hi + 1]
    thi = int(re.search(r"\{6,(\d+)\}", schema["threads"]["items"]["pattern"]).group(1))  # type: ignore[union-attr]
    tcut = "Why " + ("Lena lies to Nico " * 10)[: thi + 1]
    up = parse_state(answer(goal=cut, threads=[tcut, "Who pays Nico"]), card)
    assert up.goal is None and up.threads == ("Who pays Nico",)


def test_stuttering_or_unfinished_threads_are_left_out() -> None:
    up = parse_state(
        answer(
            threads=[
                "What is Lena doing, what is Lena doing at the docks",
                "What Nico pays for the ledger,",
                "Who pays Nico",
            ]
        ),
        noir(),
    )
    assert up.threads == ("Who pays Nico",)
