"""A real node on port 0, real WebSocket clients in both encodings: the beat loop end to end."""

from __future__ import annotations

import pytest

from fablecast.protocol import messages as m
from fablecast.server.node import Node
from tests.integration.ws_harness import connect

pytestmark = pytest.mark.integration

CODECS = ["json", "msgpack"]


@pytest.mark.parametrize("codec", CODECS)
async def test_join_stream_vote_and_the_winner_drives_the_next_beat(node: Node, codec: str) -> None:
    c = await connect(node, codec, hello=m.Hello(participant="alice"))
    welcome = await c.recv()
    assert isinstance(welcome, m.Welcome)
    # hello.participant is never trusted: the server issued an anonymous identity.
    assert welcome.participant.startswith("anon-") and welcome.room == "demo"
    assert welcome.role == "viewer" and welcome.identity is not None
    snapshot = await c.recv()
    assert isinstance(snapshot, m.Snapshot) and snapshot.seq == welcome.seq

    ballot = await c.until(lambda f: isinstance(f, m.Ballot))
    assert isinstance(ballot, m.Ballot) and 2 <= len(ballot.options) <= 5
    tokens = [f for f in c.seen if isinstance(f, m.Token) and f.beat == 1]
    beat_end = next(f for f in c.seen if isinstance(f, m.BeatEnd))
    assert tokens, "narration streamed as token frames"
    assert "".join(t.text for t in tokens).strip() == beat_end.text

    await c.send(m.Vote(window=ballot.window, option=1))
    ack = await c.until(lambda f: isinstance(f, m.VoteAck))
    assert ack == m.VoteAck(window=ballot.window, option=1, status="counted")
    tally = await c.until(lambda f: isinstance(f, m.Tally) and f.voters == 1)
    assert isinstance(tally, m.Tally) and tally.counts[1] == 1

    result = await c.until(lambda f: isinstance(f, m.VoteResult))
    assert isinstance(result, m.VoteResult)
    assert result.winner == 1 and result.text == ballot.options[1].text
    start = await c.until(lambda f: isinstance(f, m.BeatStart))
    assert isinstance(start, m.BeatStart) and start.beat == 2
    assert start.choice == ballot.options[1].text
    option = ballot.options[1].text

    def opening() -> str:
        return "".join(f.text for f in c.seen if isinstance(f, m.Token) and f.beat == 2)

    # The winning option opens the beat (the narrator's prefill), then the engine goes
    # on; the safety filter's holdback may release it over more than one token frame.
    await c.until(lambda f: len(opening()) >= len(option))
    assert opening().startswith(option)
    end2 = await c.until(lambda f: isinstance(f, m.BeatEnd) and f.beat == 2)
    assert isinstance(end2, m.BeatEnd)
    assert end2.text.startswith(ballot.options[1].text)
    assert "audience" not in end2.text

    seqs = [f.seq for f in c.room_frames()]
    assert seqs == list(range(welcome.seq + 1, welcome.seq + 1 + len(seqs)))
    await c.ws.close()


async def test_both_encodings_see_the_same_frames(node: Node) -> None:
    a = await connect(node, "json")
    b = await connect(node, "msgpack")
    await a.until(lambda f: isinstance(f, m.Ballot))
    ballot = await b.until(lambda f: isinstance(f, m.Ballot))
    wa = {f.seq: f for f in a.room_frames()}
    wb = {f.seq: f for f in b.room_frames()}
    common = sorted(set(wa) & set(wb))
    assert len(common) > 3 and ballot.seq in common
    for seq in common:
        assert wa[seq] == wb[seq]
    await a.ws.close()
    await b.ws.close()


async def test_late_join_gets_the_story_so_far(node: Node) -> None:
    first = await connect(node, hello=m.Hello(participant="first"))
    ballot = await first.until(lambda f: isinstance(f, m.Ballot))
    assert isinstance(ballot, m.Ballot)
    await first.send(m.Vote(window=ballot.window, option=0))
    await first.until(lambda f: isinstance(f, m.Tally) and f.voters == 1)

    late = await connect(node, "msgpack", hello=m.Hello(participant="late"))
    welcome = await late.recv()
    snap = await late.recv()
    assert isinstance(welcome, m.Welcome) and isinstance(snap, m.Snapshot)
    assert snap.phase == "voting"
    assert [b.beat for b in snap.story] == [1]
    beat_end = next(f for f in first.seen if isinstance(f, m.BeatEnd))
    assert snap.story[0].text == beat_end.text
    assert snap.ballot is not None and snap.ballot.window == ballot.window
    assert snap.tally is not None and snap.tally.counts[0] == 1
    assert snap.viewers == 1  # the late joiner is announced by the next presence frame
    presence = await late.until(lambda f: isinstance(f, m.Presence))
    assert isinstance(presence, m.Presence) and presence.viewers == 2
    assert presence.seq > snap.seq
    await first.ws.close()
    await late.ws.close()


async def test_repeated_and_changed_votes_count_once(node: Node) -> None:
    c = await connect(node)
    welcome = await c.until(lambda f: isinstance(f, m.Welcome))
    assert isinstance(welcome, m.Welcome)
    ballot = await c.until(lambda f: isinstance(f, m.Ballot))
    assert isinstance(ballot, m.Ballot)
    statuses = []
    for option in (0, 0, 2):
        await c.send(m.Vote(window=ballot.window, option=option))
        ack = await c.until(lambda f: isinstance(f, m.VoteAck))
        assert isinstance(ack, m.VoteAck)
        statuses.append(ack.status)
    assert statuses == ["counted", "unchanged", "changed"]
    # A second connection of the same identity (another tab) is the same voter.
    twin = await connect(node, hello=m.Hello(token=welcome.identity))
    await twin.send(m.Vote(window=ballot.window, option=2))
    ack = await twin.until(lambda f: isinstance(f, m.VoteAck))
    assert isinstance(ack, m.VoteAck) and ack.status == "unchanged"
    result = await c.until(lambda f: isinstance(f, m.VoteResult))
    assert isinstance(result, m.VoteResult)
    assert result.counts == [0, 0, 1] and result.voters == 1 and result.winner == 2
    await c.ws.close()
    await twin.ws.close()


async def test_reactions_move_the_room_mood(node: Node) -> None:
    c = await connect(node)
    await c.until(lambda f: isinstance(f, m.Snapshot))
    await c.send(m.React(reaction="fear"))
    await c.send(m.React(valence=-0.5, arousal=1.0))
    mood = await c.until(lambda f: isinstance(f, m.Mood) and f.intensity > 1.5)
    assert isinstance(mood, m.Mood)
    assert mood.valence < 0 and mood.arousal > 0.5
    assert mood.reactions.get("fear", 0) > 0.9
    await c.ws.close()
