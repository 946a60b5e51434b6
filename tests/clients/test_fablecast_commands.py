"""The watch/play commands: renderers, keys, and the CLI run as a subprocess."""

from __future__ import annotations

import asyncio
import io
import json
import os
import signal
import sys
import time
from pathlib import Path
from typing import Any

from fablecast.cli import build_parser
from fablecast.client import commands
from fablecast.client.commands import REACTION_KEYS, JsonRenderer, TextRenderer, key_help
from fablecast.client.connection import NotConnectedError
from fablecast.client.view import StoryView
from fablecast.protocol.messages import (
    REACTIONS,
    Ballot,
    BeatAbort,
    BeatEnd,
    BeatStart,
    Error,
    Narrator,
    Option,
    Phase,
    Presence,
    ServerMessage,
    StoryBeat,
    Tally,
    Vote,
    VoteAck,
    VoteResult,
)
from tests.clients.sdk_support import Conn, FakeServer, mood, snapshot, timeout, token, welcome

ROOT = Path(__file__).resolve().parents[2]


def ballot(window: int = 1, seq: int = 5) -> Ballot:
    return Ballot(
        epoch="e1",
        seq=seq,
        window=window,
        beat=1,
        options=[Option(index=0, text="Run"), Option(index=1, text="Hide")],
        duration_ms=10_000,
        closes_at_ms=0,
    )


class Clock:
    def __init__(self) -> None:
        self.t = 0.0

    def __call__(self) -> float:
        return self.t


def render(messages: list[ServerMessage], **kw: Any) -> tuple[str, TextRenderer, StoryView, Clock]:
    clock = Clock()
    view = StoryView(monotonic=clock)
    out = io.StringIO()
    renderer = TextRenderer(out, view, clock=clock, **kw)
    for msg in messages:
        view.apply(msg)
        renderer.handle(msg)
    return out.getvalue(), renderer, view, clock


# --------------------------------------------------------------------------- rendering


def test_text_renderer_streams_beats_as_paragraphs() -> None:
    text, *_ = render(
        [
            welcome(participant="me"),
            snapshot(seq=0, title="Tale", story=[StoryBeat(beat=1, text="Before.")]),
            BeatStart(epoch="e1", seq=1, beat=2, choice="Open it"),
            token(2, "The lid ", beat=2),
            token(3, "lifts.", beat=2),
            BeatEnd(epoch="e1", seq=4, beat=2, text="The lid lifts."),
        ]
    )
    assert "connected to room test as me" in text
    assert "━━ Tale ━━" in text
    assert "Before.\n\n" in text
    assert "» Open it\nThe lid lifts.\n\n" in text
    assert "\x1b[" not in text  # no colour unless asked


def test_text_renderer_ballot_tally_result() -> None:
    text, renderer, view, clock = render(
        [ballot(), Tally(epoch="e1", seq=6, window=1, counts=[3, 4], voters=7)]
    )
    assert "  1) Run\n  2) Hide\n" in text
    assert "votes 1) 0  2) 0 · 0 voters · 10s left" in text
    clock.t = 2.0  # status lines are throttled when not a tty
    renderer.tick()
    assert "votes 1) 3  2) 4 · 7 voters · 8s left" in renderer.out.getvalue()  # type: ignore[attr-defined]
    clock.t = 4.0
    assert "6s left" in renderer.status_text()
    renderer.handle(VoteAck(window=1, option=1, status="counted"))
    view.apply(VoteAck(window=1, option=1, status="counted"))
    assert "[vote counted: 2) Hide]" in renderer.out.getvalue()  # type: ignore[attr-defined]
    assert "2) 4*" in renderer.status_text()
    result = VoteResult(
        epoch="e1", seq=7, window=1, winner=1, text="Hide", counts=[3, 4], voters=7,
        tie_break=None,
    )  # fmt: skip
    view.apply(result)
    renderer.handle(result)
    assert "✔ chosen: 2) Hide  (3-4, 7 voters)" in renderer.out.getvalue()  # type: ignore[attr-defined]


def test_text_renderer_never_breaks_a_paragraph_for_status() -> None:
    text, renderer, *_ = render(
        [
            token(1, "half a sentence"),
            Presence(epoch="e1", seq=2, viewers=5),
            token(3, " and the rest."),
        ]
    )
    assert "half a sentence and the rest." in text
    assert "viewers" not in text
    renderer.handle(BeatEnd(epoch="e1", seq=4, beat=1, text="x"))
    assert "viewers 5" in renderer.out.getvalue()  # type: ignore[attr-defined]


def test_text_renderer_throttles_status_lines_when_not_a_tty() -> None:
    clock_msgs: list[ServerMessage] = [ballot()]
    _, renderer, view, clock = render(clock_msgs, status_interval=2.0)
    out: io.StringIO = renderer.out  # type: ignore[assignment]
    before = out.getvalue().count("voters")
    for i in range(5):
        msg = Tally(epoch="e1", seq=6 + i, window=1, counts=[i, 0], voters=i)
        view.apply(msg)
        renderer.handle(msg)
    assert out.getvalue().count("voters") == before  # all within the interval
    clock.t = 3.0
    renderer.tick()
    assert out.getvalue().count("voters") == before + 1
    assert "votes 1) 4  2) 0" in out.getvalue()


def test_text_renderer_tty_rewrites_the_status_line_in_place() -> None:
    text, renderer, *_ = render(
        [mood(valence=0.4, arousal=0.7, reactions={"joy": 0.9, "fear": 0.2}), token(2, "Hi")],
        tty=True,
        color=True,
    )
    assert "mood: valence +0.40, arousal +0.70 (joy, fear)" in text
    assert "\r\x1b[2K" in text  # cleared before the narration
    assert text.endswith("Hi")
    renderer.finish()
    assert renderer.out.getvalue().endswith("Hi\n")  # type: ignore[attr-defined]


def test_text_renderer_events() -> None:
    text, *_ = render(
        [
            token(1, "partial"),
            BeatAbort(epoch="e1", seq=2, beat=1, reason="engine_error"),
            Phase(epoch="e1", seq=3, phase="paused", beat=1, reason="no viewers"),
            Error(code="window_closed", message="too late"),
        ]
    )
    assert "partial\n[narration interrupted: engine_error; it will be retold]\n" in text
    assert "[paused: no viewers]" in text
    assert "[error window_closed: too late]" in text


def test_json_renderer_prints_one_line_per_message_with_type() -> None:
    out, notes = io.StringIO(), io.StringIO()
    r = JsonRenderer(out, notes)
    r.handle(token(3, "hi"))
    r.handle(welcome())
    r.note("keys")
    lines = out.getvalue().splitlines()
    first = json.loads(lines[0])
    received = first.pop("received_ms")
    assert abs(received / 1000 - time.time()) < 60  # stamped on receipt, wall clock in ms
    assert first == {
        "type": "token", "epoch": "e1", "seq": 3, "beat": 1, "text": "hi",
    }  # fmt: skip
    assert json.loads(lines[1])["type"] == "welcome"
    assert notes.getvalue() == "keys\n"


# --------------------------------------------------------------------------- keys


class FakeClient:
    def __init__(self, connected: bool = True) -> None:
        self.sent: list[tuple[str, Any]] = []
        self.connected = connected

    async def vote(self, window: int, option: int) -> None:
        if not self.connected:
            raise NotConnectedError("no")
        self.sent.append(("vote", (window, option)))

    async def react(self, reaction: str | None = None) -> None:
        self.sent.append(("react", reaction))

    async def ping(self) -> int:
        self.sent.append(("ping", None))
        return 1


async def keys(line: str, view: StoryView, client: FakeClient) -> tuple[bool, str]:
    notes = io.StringIO()
    renderer = JsonRenderer(io.StringIO(), notes)
    go = True
    for key in line:
        go = await commands._command(key, client, view, renderer)  # type: ignore[arg-type]
        if not go:
            break
    return go, notes.getvalue()


def test_reaction_keys_cover_every_reaction_and_avoid_command_keys() -> None:
    assert sorted(REACTION_KEYS.values()) == sorted(REACTIONS)
    assert not set(REACTION_KEYS) & {"q", "p", "?"}
    assert all(k in key_help() for k in REACTION_KEYS)
    assert "1-3 vote" in key_help(3) and "Enter" not in key_help(3)
    assert "(then Enter)" in key_help(enter=True)


def test_warm_up_retries_show_as_one_line() -> None:
    text, *_ = render(
        [
            BeatAbort(epoch="e1", seq=1, beat=1, reason="engine not ready: not started"),
            Narrator(epoch="e1", seq=2, state="down", message="engine not ready: not started"),
            Phase(epoch="e1", seq=3, phase="paused", beat=1, reason="engine"),
            Narrator(epoch="e1", seq=4, state="ok", message="retrying"),
            BeatAbort(epoch="e1", seq=5, beat=1, reason="engine not ready: not started"),
            token(6, "Once"),
        ]
    )
    assert text.count("warming up") == 1
    assert "not ready" not in text and "retrying" not in text and "Once" in text


async def test_digit_votes_in_the_open_window() -> None:
    view, client = StoryView(), FakeClient()
    view.apply(ballot(window=7))
    go, notes = await keys("2", view, client)
    assert go and client.sent == [("vote", (7, 1))] and notes == ""


async def test_bad_digits_and_no_ballot_are_explained() -> None:
    view, client = StoryView(), FakeClient()
    _, notes = await keys("1", view, client)
    assert "no vote is open" in notes
    view.apply(ballot())
    _, notes = await keys("5", view, client)
    assert "no option 5: choose 1-2" in notes
    assert client.sent == []


async def test_letters_react_p_pings_q_quits() -> None:
    view, client = StoryView(), FakeClient()
    go, notes = await keys("jfpzq2", view, client)
    assert not go
    assert client.sent == [("react", "joy"), ("react", "fear"), ("ping", None)]
    assert "unknown key 'z'" in notes


async def test_sending_while_disconnected_is_reported() -> None:
    view, client = StoryView(), FakeClient(connected=False)
    view.apply(ballot())
    go, notes = await keys("1", view, client)
    assert go and "not connected" in notes


# --------------------------------------------------------------------------- parser


def test_watch_and_play_are_registered() -> None:
    parser = build_parser()
    args = parser.parse_args(
        ["watch", "ws://h/rooms/r", "--json", "--since", "5", "--epoch", "e", "--codec", "msgpack"]
    )
    assert (args.json, args.since, args.epoch, args.codec) == (True, 5, "e", "msgpack")
    assert args.func is commands._watch
    args = parser.parse_args(["play", "ws://h/rooms/r", "--participant", "me"])
    assert args.func is commands._play and args.participant == "me" and not args.json


# --------------------------------------------------------------------------- subprocess


def cli_env() -> dict[str, str]:
    """The environment of a CLI subprocess: this checkout importable."""
    env = dict(os.environ)
    paths = [str(ROOT), str(ROOT / "clients" / "python")]
    if env.get("PYTHONPATH"):
        paths.append(env["PYTHONPATH"])
    env["PYTHONPATH"] = os.pathsep.join(paths)
    env["PYTHONUNBUFFERED"] = "1"
    env.pop("NO_COLOR", None)
    return env


async def start_cli(*args: str, stdin: bool = False) -> asyncio.subprocess.Process:
    """``python -m fablecast.cli ARGS`` with piped stdout/stderr (and stdin if asked)."""
    return await asyncio.create_subprocess_exec(
        sys.executable, "-m", "fablecast.cli", *args,
        stdin=asyncio.subprocess.PIPE if stdin else asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=cli_env(),
        cwd=ROOT,
        # A test run started as a background job inherits SIGINT ignored; Ctrl-C
        # must reach the CLI as it does in a terminal.
        preexec_fn=_default_sigint,
    )  # fmt: skip


def _default_sigint() -> None:
    signal.signal(signal.SIGINT, signal.SIG_DFL)


async def read_json_until(
    proc: asyncio.subprocess.Process, pred: Any, seconds: float = 30.0
) -> list[dict[str, Any]]:
    """JSON lines of ``proc`` until one satisfies ``pred`` (included)."""
    assert proc.stdout is not None
    lines: list[dict[str, Any]] = []
    async with asyncio.timeout(timeout(seconds)):
        while True:
            raw = await proc.stdout.readline()
            assert raw, "the CLI ended early"
            lines.append(json.loads(raw))
            if pred(lines[-1]):
                return lines


async def finish(proc: asyncio.subprocess.Process) -> tuple[int, str]:
    """SIGINT ``proc`` (like Ctrl-C) and return its exit status and stderr."""
    if proc.returncode is None:
        proc.send_signal(signal.SIGINT)
    async with asyncio.timeout(timeout(30)):
        _, err = await proc.communicate()
    assert proc.returncode is not None
    return proc.returncode, err.decode()


async def test_watch_json_subprocess_prints_frames_and_exits_0_on_ctrl_c() -> None:
    async def script(conn: Conn) -> None:
        await conn.send(welcome(), snapshot(seq=0), token(1), token(2))
        await conn.hold()

    async with FakeServer(script) as server:
        proc = await start_cli("watch", server.url, "--json")
        lines = await read_json_until(proc, lambda m: m.get("seq") == 2)
        assert [m["type"] for m in lines] == ["welcome", "snapshot", "token", "token"]
        code, err = await finish(proc)
        assert code == 0, err


async def test_watch_text_subprocess_renders_the_story() -> None:
    async def script(conn: Conn) -> None:
        await conn.send(welcome(), snapshot(seq=0, title="Tale"), token(1, "Hello, "))
        await conn.send(token(2, "world."), BeatEnd(epoch="e1", seq=3, beat=1, text="x"))
        await conn.close(1000)

    async with FakeServer(script) as server:
        proc = await start_cli("watch", server.url)
        async with asyncio.timeout(timeout(30)):
            out, err = await proc.communicate()
        assert proc.returncode == 0, err
        text = out.decode()
        assert "━━ Tale ━━" in text and "Hello, world." in text
        assert "\x1b[" not in text  # not a tty: no colour


async def test_watch_exits_1_with_the_close_code_on_a_fatal_close() -> None:
    async def script(conn: Conn) -> None:
        await conn.close(4004, "no room 'test'")

    async with FakeServer(script) as server:
        proc = await start_cli("watch", server.url, "--json")
        async with asyncio.timeout(timeout(30)):
            _, err = await proc.communicate()
        assert proc.returncode == 1
        assert "4004" in err.decode() and "ROOM_NOT_FOUND" in err.decode()


async def test_watch_exits_1_when_nothing_listens() -> None:
    server = FakeServer(lambda conn: conn.hold())
    async with server:
        url = server.url
    proc = await start_cli("watch", url)
    async with asyncio.timeout(timeout(30)):
        _, err = await proc.communicate()
    assert proc.returncode == 1
    assert "cannot connect" in err.decode()


async def test_play_votes_from_piped_stdin() -> None:
    votes: list[Vote] = []

    async def script(conn: Conn) -> None:
        await conn.send(welcome(), snapshot(seq=0), ballot(window=3, seq=1))
        msg = await conn.recv()
        assert isinstance(msg, Vote)
        votes.append(msg)
        await conn.send(VoteAck(window=msg.window, option=msg.option, status="counted"))
        await conn.hold()

    async with FakeServer(script) as server:
        proc = await start_cli("play", server.url, "--json", stdin=True)
        await read_json_until(proc, lambda m: m["type"] == "ballot")
        assert proc.stdin is not None
        proc.stdin.write(b"2\n")
        await proc.stdin.drain()
        lines = await read_json_until(proc, lambda m: m["type"] == "vote_ack")
        assert {k: v for k, v in lines[-1].items() if k != "received_ms"} == {
            "type": "vote_ack",
            "window": 3,
            "option": 1,
            "status": "counted",
        }
        assert votes == [Vote(window=3, option=1)]
        proc.stdin.write(b"q\n")
        await proc.stdin.drain()
        async with asyncio.timeout(timeout(30)):
            _, err = await proc.communicate()
        assert proc.returncode == 0, err
        assert "digits vote" in err.decode()  # the key map, on stderr in --json mode
        assert "(then Enter)" in err.decode()  # piped: lines, not keys
