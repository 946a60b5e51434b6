"""The runner's story card: folded from the committed beats and the engine's state of each."""

from __future__ import annotations

from fablecast.inference.backends.scripted import ScriptedEngine
from fablecast.inference.narrator import Narrator
from fablecast.inference.story.spec import load_spec
from fablecast.inference.story.state import StoryCard
from fablecast.inference.story.update import fold
from fablecast.server.fanout import Fanout
from fablecast.server.metrics import Metrics
from fablecast.server.room.runner import RoomRunner
from fablecast.server.room.state import CommittedBeat, Room, RoomSettings
from fablecast.server.stream import RoomStream

STATE = {
    "summary": "Sam meets Lena at the Blue Heron club",
    "location": "the Blue Heron club",
    "present": ["Sam Calloway", "Lena Voss"],
    "carrying": ["the matchbook"],
    "goal": "Sam must learn what Lena knows",
    "threads": ["Why Lena is afraid of Nico"],
}


def runner() -> RoomRunner:
    room = Room("r", RoomSettings(pause_when_empty=False))
    metrics = Metrics()
    return RoomRunner(
        room,
        stream=RoomStream("r", state=lambda kind: room.state_frame(kind, 0.0), metrics=metrics),
        fanout=Fanout(metrics),
        narrator=Narrator(ScriptedEngine()),
        spec=load_spec("noir"),
        metrics=metrics,
    )


def beats() -> list[CommittedBeat]:
    return [
        CommittedBeat(1, "I sit in the office with the revolver.", None),
        CommittedBeat(2, "I walk to the docks and take the ledger.", "I go to the docks"),
        CommittedBeat(3, "I drive to the Blue Heron club.", "I drive to the club", STATE),
    ]


def restored(story: list[CommittedBeat]) -> StoryCard:
    card = StoryCard(load_spec("noir"))
    for b in story:
        fold(card, b.text, b.choice, b.state)
    return card


def test_live_card_equals_the_card_a_restore_folds() -> None:
    r = runner()
    story = beats()
    r.room.story = [story[0], story[1], CommittedBeat(3, story[2].text, story[2].choice)]
    r._sync_card()
    assert r.card.goal == "find the ledger before the Moretti brothers do"
    r.room.story[-1].state = STATE  # the engine's state of beat 3 arrives with the ballot
    r._sync_card()
    assert r.card.goal == "Sam must learn what Lena knows"
    assert r.card.threads == ["Why Lena is afraid of Nico"]
    assert r.card.to_dict() == restored(story).to_dict()
    r._sync_card()  # idempotent: nothing new, nothing applied twice
    assert r.card.written == 1


def test_a_rewind_folds_the_card_anew() -> None:
    r = runner()
    r.room.story = beats()
    r._sync_card()
    assert r.card.location == "the Blue Heron club" and r.card.beats == 3
    r.room.story = beats()[:1]  # rewound to beat 1
    r._sync_card()
    assert r.card.beats == 1 and r.card.threads == []
    assert r.card.last_beat == "I sit in the office with the revolver."
    assert r.card.goal == "find the ledger before the Moretti brothers do"
    r.room.story.append(CommittedBeat(2, "I hide in the police station.", "I hide"))
    r._sync_card()
    assert r.card.beats == 2 and r.card.location == "the police station"
    assert r.card.events == ["I hide"]
