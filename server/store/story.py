"""A room's story as its event log tells it: a pure fold of the events, and the transcript.

Event kinds (``data`` is opaque JSON; the fields listed are the ones read here,
anything else a room adds, such as a beat's why record, flows through):

- ``created``  ``{spec, settings, origin, parent?: {room, beat}}``: the room opened
- ``beat``     ``{beat, text, choice, mood?, why?, ...}``: beat ``beat`` committed (finished)
- ``cue``      ``{beat, location, ...}``: the scene cue of beat ``beat`` (kept on that beat)
- ``state``    ``{beat, summary, location, present, carrying, goal, threads}``: the
  engine's story state after beat ``beat`` (kept on that beat as ``state``)
- ``ballot``   ``{window, beat, options}``: a vote window opened after beat ``beat``
- ``result``   ``{window, winner, text, counts, voters, ...}``: that window closed
- ``rewind``   ``{beat, branch}``: beats after ``beat`` moved to branch ``branch``
- ``moderation`` (any fields): a moderation action, kept for the record

Rules of the fold (what a restarted node resumes from):

1. Beats are numbered from 1 and contiguous; a ``beat`` event that does not
   follow the last committed one is ignored and counted in ``anomalies``.
2. A ballot (or result) counts only for the last committed beat; a beat clears both.
3. A rewind to N keeps beats 1..N; the later ones become a branch.
4. What comes next (``resume``): ``ballot`` when a ballot is open (re-asked with
   the same options: single votes are not logged), ``narrate`` when a result
   chose the next beat or no beat was told yet (the interrupted beat is retold),
   else ``choices`` (a ballot must be written for the last beat).
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, Literal

from fablecast.server.store.base import StoredEvent

Resume = Literal["narrate", "choices", "ballot"]


@dataclass(slots=True)
class Branch:
    """Beats set aside by a rewind: they followed beat ``after``."""

    branch: int
    after: int
    beats: list[dict[str, Any]]
    at: float


@dataclass(slots=True)
class StoryImage:
    """A room as of its last event."""

    room: str
    spec: dict[str, Any] = field(default_factory=dict)
    settings: dict[str, Any] = field(default_factory=dict)
    parent: dict[str, Any] | None = None
    #: ``config`` (a room a config named) or ``fork`` (made at run time).
    origin: str = "config"
    created_at: float | None = None
    beats: list[dict[str, Any]] = field(default_factory=list)
    branches: list[Branch] = field(default_factory=list)
    ballot: dict[str, Any] | None = None
    result: dict[str, Any] | None = None
    #: The options of the ballot ``result`` closed (for the next beat's why record).
    result_options: list[str] = field(default_factory=list)
    moderation: list[dict[str, Any]] = field(default_factory=list)
    last_id: int = 0
    anomalies: int = 0
    #: The highest vote window id logged (a restored room numbers its windows after it).
    last_window: int = 0

    @property
    def beats_told(self) -> int:
        """Committed beats on the current line."""
        return len(self.beats)

    @property
    def choice(self) -> str | None:
        """The winner that drives the next beat, if a vote closed after the last beat."""
        return None if self.result is None else str(self.result.get("text", ""))

    @property
    def resume(self) -> Resume:
        """What the room does next; see rule 4."""
        if self.ballot is not None:
            return "ballot"
        if self.result is not None or not self.beats:
            return "narrate"
        return "choices"

    @property
    def exists(self) -> bool:
        """Whether the log has this room at all."""
        return self.last_id > 0


def fold(room: str, events: Iterable[StoredEvent]) -> StoryImage:
    """The room ``room`` after ``events`` (in append order); see the module's rules."""
    img = StoryImage(room)
    for ev in events:
        img.last_id = ev.id
        d = ev.data
        match ev.kind:
            case "created":
                img.spec = dict(d.get("spec") or {})
                img.settings = dict(d.get("settings") or {})
                img.parent = d.get("parent")
                img.origin = str(d.get("origin", "config"))
                img.created_at = ev.at
            case "beat":
                if d.get("beat") != len(img.beats) + 1 or not isinstance(d.get("text"), str):
                    img.anomalies += 1
                    continue
                img.beats.append(dict(d))
                img.ballot = img.result = None
            case "cue":
                if img.beats and d.get("beat") == len(img.beats):
                    img.beats[-1]["cue"] = dict(d)
            case "state":
                if img.beats and d.get("beat") == len(img.beats):
                    img.beats[-1]["state"] = {k: v for k, v in d.items() if k != "beat"}
            case "ballot":
                if isinstance(d.get("window"), int):
                    img.last_window = max(img.last_window, d["window"])
                if d.get("beat") == len(img.beats) and d.get("options"):
                    img.ballot, img.result = dict(d), None
            case "result":
                if img.ballot is not None and d.get("window") == img.ballot.get("window"):
                    img.result_options = [str(o) for o in img.ballot.get("options", ())]
                    img.ballot, img.result = None, dict(d)
            case "rewind":
                n = int(d.get("beat", -1))
                if 0 <= n <= len(img.beats):
                    if n < len(img.beats):
                        img.branches.append(
                            Branch(
                                int(d.get("branch", len(img.branches) + 1)), n, img.beats[n:], ev.at
                            )
                        )
                    del img.beats[n:]
                    img.ballot = img.result = None
                else:
                    img.anomalies += 1
            case "moderation":
                img.moderation.append({"at": ev.at, **d})
            case _:
                pass  # a kind from a newer writer: kept in the log, not part of the story
    return img


# --------------------------------------------------------------------------- transcripts


def transcript_json(img: StoryImage) -> dict[str, Any]:
    """The transcript as a JSON-ready dict (``format=json``)."""
    return {
        "room": img.room,
        "title": img.spec.get("title"),
        "premise": img.spec.get("premise"),
        "parent": img.parent,
        "beats": img.beats,
        "branches": [
            {"branch": b.branch, "after": b.after, "at": b.at, "beats": b.beats}
            for b in img.branches
        ],
        "next": img.resume,
        "ballot": img.ballot,
    }


def transcript_markdown(img: StoryImage) -> str:
    """The transcript as Markdown (``format=md``): title, premise, beats, then branches."""
    lines = [f"# {img.spec.get('title') or img.room}", ""]
    if img.spec.get("premise"):
        lines += [f"*{img.spec['premise']}*", ""]
    if img.parent:
        lines += [
            f"Forked from room `{img.parent.get('room')}` at beat {img.parent.get('beat')}.",
            "",
        ]
    lines += _beats_md(img.beats, level=2)
    if not img.beats:
        lines += ["(no beat told yet)", ""]
    for b in img.branches:
        lines += [f"## Branch {b.branch} (after beat {b.after}, set aside by a rewind)", ""]
        lines += _beats_md(b.beats, level=3)
    return "\n".join(lines).rstrip() + "\n"


def _beats_md(beats: list[dict[str, Any]], level: int) -> list[str]:
    out: list[str] = []
    for b in beats:
        out.append(f"{'#' * level} Beat {b.get('beat')}")
        out.append("")
        if b.get("choice"):
            out += [f"> The audience chose: {b['choice']}", ""]
        out += [str(b.get("text", "")), ""]
    return out


def dumps(value: Any) -> bytes:
    """Compact JSON bytes."""
    return json.dumps(value, ensure_ascii=False, separators=(",", ":")).encode()
