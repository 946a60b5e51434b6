"""The fold of a room's events into what a restarted node resumes from, and transcripts."""

from __future__ import annotations

from typing import Any

from fablecast.server.store.base import StoredEvent
from fablecast.server.store.story import fold, transcript_json, transcript_markdown


def log(*items: tuple[str, dict[str, Any]]) -> list[StoredEvent]:
    return [StoredEvent(i + 1, "r", kind, data, float(i)) for i, (kind, data) in enumerate(items)]


CREATED = ("created", {"spec": {"title": "Lanterns", "premise": "A dark lantern."}})


def beat(n: int, choice: str | None = None, **extra: Any) -> tuple[str, dict[str, Any]]:
    return ("beat", {"beat": n, "text": f"Beat {n} text.", "choice": choice, **extra})


def test_a_new_room_narrates_its_first_beat() -> None:
    img = fold("r", log(CREATED))
    assert img.exists and img.beats == [] and img.resume == "narrate" and img.choice is None


def test_after_a_beat_the_ballot_must_be_written() -> None:
    img = fold("r", log(CREATED, beat(1, why={"goal": "g"})))
    assert img.resume == "choices" and img.beats_told == 1
    assert img.beats[0]["why"] == {"goal": "g"}  # opaque additions flow through


def test_an_open_ballot_is_re_asked_and_a_closed_one_drives_the_retold_beat() -> None:
    ballot = ("ballot", {"window": 4, "beat": 1, "options": ["Go left", "Go right"]})
    img = fold("r", log(CREATED, beat(1), ballot))
    assert img.resume == "ballot" and img.ballot is not None
    assert img.ballot["options"] == ["Go left", "Go right"] and img.last_window == 4
    img = fold("r", log(CREATED, beat(1), ballot, ("result", {"window": 4, "text": "Go right"})))
    assert img.resume == "narrate" and img.choice == "Go right"
    img = fold("r", log(CREATED, beat(1), ballot, ("result", {"window": 3, "text": "stale"})))
    assert img.resume == "ballot"  # a result of another window does not close this one
    img = fold(
        "r", log(CREATED, beat(1), ballot, ("result", {"window": 4, "text": "x"}), beat(2, "x"))
    )
    assert img.resume == "choices" and img.choice is None


def test_a_cue_is_kept_on_its_beat() -> None:
    cue = ("cue", {"beat": 1, "location": "the docks"})
    img = fold("r", log(CREATED, beat(1), cue, ("cue", {"beat": 7, "location": "x"})))
    assert img.beats[0]["cue"] == {"beat": 1, "location": "the docks"}


def test_the_engines_story_state_is_kept_on_its_beat_and_restored_with_it() -> None:
    from fablecast.server.store.archive import _beats

    state = ("state", {"beat": 2, "summary": "Sam runs", "location": "the docks"})
    stale = ("state", {"beat": 1, "summary": "old"})  # not the last beat: ignored
    img = fold("r", log(CREATED, beat(1), beat(2), stale, state))
    assert "state" not in img.beats[0]
    assert img.beats[1]["state"] == {"summary": "Sam runs", "location": "the docks"}
    story = _beats(img.beats)
    assert story[0].state is None and story[1].state == img.beats[1]["state"]


def test_beats_out_of_order_are_ignored_and_counted() -> None:
    img = fold("r", log(CREATED, beat(1), beat(1), beat(3), beat(2)))
    assert [b["beat"] for b in img.beats] == [1, 2] and img.anomalies == 2


def test_a_rewind_keeps_the_later_beats_as_a_branch() -> None:
    img = fold("r", log(CREATED, beat(1), beat(2), beat(3), ("rewind", {"beat": 1, "branch": 1})))
    assert [b["beat"] for b in img.beats] == [1]
    assert [(b.branch, b.after, [x["beat"] for x in b.beats]) for b in img.branches] == [
        (1, 1, [2, 3])
    ]
    assert img.resume == "choices"
    img = fold("r", log(CREATED, beat(1), ("rewind", {"beat": 5, "branch": 1})))
    assert img.beats_told == 1 and img.anomalies == 1


def test_transcripts_show_beats_choices_and_branches() -> None:
    events = log(CREATED, beat(1), beat(2, "Open the door"), ("rewind", {"beat": 1, "branch": 1}))
    img = fold("r", events)
    md = transcript_markdown(img)
    assert md.startswith("# Lanterns\n\n*A dark lantern.*\n")
    assert "## Beat 1\n\nBeat 1 text." in md
    assert "## Branch 1 (after beat 1" in md and "> The audience chose: Open the door" in md
    data = transcript_json(img)
    assert [b["beat"] for b in data["beats"]] == [1]
    assert data["branches"][0]["beats"][0]["choice"] == "Open the door"
