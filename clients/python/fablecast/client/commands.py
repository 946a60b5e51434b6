"""The ``fablecast watch`` and ``fablecast play`` commands.

``watch`` streams a room's story to the terminal: beats as paragraphs, the ballot
with numbered options, a live tally with the seconds left, the vote result and the
mood. ``--json`` prints every server message as one JSON line instead.

``play`` does the same and reads keys from stdin: on a terminal each key acts
at once (no Enter, no echo into the story); piped input is read line by line.
Digits vote (1 to the number of options), letters react, ``q`` quits.

While the engine warms up, the room retries on a backoff; the text view shows
that as one "[narrator warming up ...]" line instead of a repeating cycle.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import sys
import threading
import time
from collections.abc import Callable, Iterator
from typing import Final, TextIO

import msgspec

from fablecast.client.connection import (
    Backoff,
    ConnectError,
    FablecastClient,
    FablecastClosed,
    FablecastError,
    NotConnectedError,
    ReconnectFailed,
)
from fablecast.client.view import StoryView
from fablecast.protocol.codes import CloseCode
from fablecast.protocol.messages import (
    Ballot,
    BeatAbort,
    BeatEnd,
    BeatStart,
    Error,
    Mood,
    Narrator,
    Phase,
    Pong,
    Presence,
    Reaction,
    ServerMessage,
    Snapshot,
    Tally,
    Token,
    VoteAck,
    VoteResult,
    Welcome,
)

__all__ = ["REACTION_KEYS", "JsonRenderer", "TextRenderer", "register"]

#: Keys of ``play``: one letter per reaction.
REACTION_KEYS: Final[dict[str, Reaction]] = {
    "j": "joy",
    "l": "laugh",
    "h": "love",
    "s": "surprise",
    "f": "fear",
    "a": "anger",
    "d": "sad",
    "b": "bored",
}

#: Close codes that end a session normally (exit status 0).
_CLEAN_CLOSE: Final = frozenset({1000, int(CloseCode.ROOM_CLOSED)})


# --------------------------------------------------------------------------- rendering


class _Style:
    """ANSI styling, or none."""

    def __init__(self, enabled: bool) -> None:
        self.enabled = enabled

    def __call__(self, text: str, *codes: str) -> str:
        if not self.enabled or not codes:
            return text
        return f"\x1b[{';'.join(codes)}m{text}\x1b[0m"


BOLD, DIM, RED, GREEN, YELLOW, CYAN, MAGENTA = "1", "2", "31", "32", "33", "36", "35"


def _voters(n: int) -> str:
    return f"{n} voter" if n == 1 else f"{n} voters"


class JsonRenderer:
    """Prints every server message as one JSON line (``type`` included), flushed per line."""

    def __init__(self, out: TextIO, notes: TextIO) -> None:
        self.out = out
        self.notes = notes

    def handle(self, msg: ServerMessage) -> None:
        """Print ``msg`` as one line of JSON, with ``received_ms`` (wall clock on receipt)."""
        body = msgspec.json.encode(msg).decode()
        self.out.write(f'{{"received_ms":{round(time.time() * 1000)},{body[1:]}')
        self.out.write("\n")
        self.out.flush()

    def note(self, text: str) -> None:
        """A line for the human (key map, feedback): goes to ``notes`` (stderr)."""
        self.notes.write(text + "\n")
        self.notes.flush()

    def tick(self) -> None:
        """Nothing to refresh."""

    def finish(self) -> None:
        """Flush what was printed."""
        self.out.flush()


class TextRenderer:
    """Renders a room as readable streaming text.

    Narration is written as it arrives, one paragraph per beat. Events (ballot, vote
    result, pauses, errors) get their own lines. The status (tally and seconds left,
    viewers, mood) is a line rewritten in place when ``tty`` is true; otherwise it is
    printed when it changed, at most every ``status_interval`` seconds and never in
    the middle of a paragraph.
    """

    def __init__(
        self,
        out: TextIO,
        view: StoryView,
        *,
        color: bool = False,
        tty: bool = False,
        status_interval: float = 2.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.out = out
        self.view = view
        self.style = _Style(color)
        self.tty = tty
        self.status_interval = status_interval
        self.clock = clock
        self._at_line_start = True
        self._status_shown = False  # tty: the transient status line is on screen
        self._warm_shown = False  # the engine-warming notice is shown (repeats are not)
        self._last_status = ""
        self._last_status_at = -1e9
        self._status_dirty = False

    # ----------------------------------------------------------------- output helpers

    def _clear_status(self) -> None:
        if self._status_shown:
            self.out.write("\r\x1b[2K")
            self._status_shown = False

    def _write(self, text: str) -> None:
        if not text:
            return
        self._clear_status()
        self.out.write(text)
        self._at_line_start = text.endswith("\n")

    def _line(self, text: str) -> None:
        """An event line of its own (breaking the paragraph if one is being written)."""
        if not self._at_line_start:
            self._write("\n")
        self._write(text + "\n")

    def _flush(self) -> None:
        self._draw_status()
        self.out.flush()

    def status_text(self) -> str:
        """The current status line: ballot tally and time left, viewers, mood."""
        view, st = self.view, self.style
        parts: list[str] = []
        ballot = view.ballot
        if ballot is not None:
            counts = "  ".join(
                f"{i + 1}) {c}" + ("*" if ballot.my_vote == i else "")
                for i, c in enumerate(ballot.counts)
            )
            left = ballot.remaining_s(view.monotonic())
            parts.append(f"votes {counts} · {_voters(ballot.voters)} · {left:.0f}s left")
        parts.append(f"viewers {view.viewers}")
        mood = view.mood
        if mood is not None:
            top = sorted(mood.reactions.items(), key=lambda kv: -kv[1])[:2]
            tops = ", ".join(name for name, weight in top if weight > 0)
            parts.append(
                f"mood: valence {mood.valence:+.2f}, arousal {mood.arousal:+.2f}"
                + (f" ({tops})" if tops else "")
            )
        return st(" │ ".join(parts), DIM)

    def _draw_status(self, force: bool = False) -> None:
        if not self._at_line_start:
            return
        text = self.status_text()
        if self.tty:
            self._clear_status()
            self.out.write(text)
            self._status_shown = True
            return
        if not self._status_dirty and not force:
            return
        now = self.clock()
        if text == self._last_status or now - self._last_status_at < self.status_interval:
            return
        self.out.write(text + "\n")
        self._last_status = text
        self._last_status_at = now
        self._status_dirty = False

    def tick(self) -> None:
        """Refresh the status (the countdown), e.g. once a second."""
        if self.tty:
            if self._at_line_start:
                self._draw_status()
                self.out.flush()
        elif self._status_dirty:
            self._flush()

    def finish(self) -> None:
        """End the output: clear the status line and end the last line."""
        self._clear_status()
        if not self._at_line_start:
            self.out.write("\n")
            self._at_line_start = True
        self.out.flush()

    def note(self, text: str) -> None:
        """A line of feedback for the human (key map, vote sent, ...)."""
        self._line(self.style(text, DIM))
        self._flush()

    # ----------------------------------------------------------------- messages

    def _warming(self, text: str) -> bool:
        """Whether ``text`` is an engine-not-ready notice; shows the first one only."""
        if "not ready" not in text and not (self._warm_shown and text.startswith("[narrator ok")):
            return False
        if not self._warm_shown:
            self._warm_shown = True
            self._line(self.style("[narrator warming up: the story starts when it is ready]", DIM))
        return True

    def handle(self, msg: ServerMessage) -> None:
        """Render ``msg`` (already applied to ``view``)."""
        st = self.style
        view = self.view
        if self._warm_shown and isinstance(msg, Token | BeatEnd | Ballot):
            self._warm_shown = False  # the engine is up: later trouble is shown again
        if (
            isinstance(msg, BeatAbort | Narrator)
            and self._warming(
                f"[narrator {msg.state}: {msg.message}]"
                if isinstance(msg, Narrator)
                else msg.reason
            )
        ) or (isinstance(msg, Phase) and msg.phase == "paused" and self._warm_shown):
            pass
        elif isinstance(msg, Token):
            self._write(msg.text)
        elif isinstance(msg, BeatStart):
            if msg.choice:
                self._line(st(f"» {msg.choice}", CYAN))
        elif isinstance(msg, BeatEnd):
            self._write("\n\n" if not self._at_line_start else "\n")
        elif isinstance(msg, BeatAbort):
            self._line(st(f"[narration interrupted: {msg.reason}; it will be retold]", YELLOW))
        elif isinstance(msg, Ballot):
            secs = msg.duration_ms / 1000.0
            self._line(st(f"── What happens next? ({secs:.0f}s to vote) ──", BOLD, MAGENTA))
            for option in msg.options:
                self._write(f"  {st(str(option.index + 1), BOLD)}) {option.text}\n")
            self._status_dirty = True
        elif isinstance(msg, Tally | Presence | Mood):
            self._status_dirty = True
        elif isinstance(msg, VoteResult):
            counts = "-".join(str(c) for c in msg.counts)
            line = f"✔ chosen: {msg.winner + 1}) {msg.text}  ({counts}, {_voters(msg.voters)}"
            line += f", {msg.tie_break})" if msg.tie_break else ")"
            self._line(st(line, BOLD, GREEN))
            self._write("\n")
        elif isinstance(msg, Phase):
            if msg.phase == "paused":
                self._line(st(f"[paused{': ' + msg.reason if msg.reason else ''}]", YELLOW))
        elif isinstance(msg, Narrator):
            text = f"[narrator {msg.state}{': ' + msg.message if msg.message else ''}]"
            self._line(st(text, GREEN if msg.state == "ok" else YELLOW))
        elif isinstance(msg, Snapshot):
            self._snapshot(msg)
        elif isinstance(msg, Welcome):
            if msg.recovered:
                self._line(st("[reconnected: resumed]", DIM))
            elif msg.recovered is False:
                self._line(st("[reconnected: resynced]", DIM))
            else:
                self._line(st(f"connected to room {msg.room} as {msg.participant}", DIM))
        elif isinstance(msg, VoteAck):
            chosen = self._option_text(msg.window, msg.option)
            self._line(st(f"[vote {msg.status}: {msg.option + 1}) {chosen}]", GREEN))
        elif isinstance(msg, Error):
            self._line(st(f"[error {msg.code}: {msg.message}]", RED))
        elif isinstance(msg, Pong):
            lag = msg.server_time_ms / 1000.0 - view.wall()
            self._line(st(f"[pong {msg.nonce}: server clock {lag:+.3f}s]", DIM))
        self._flush()

    def _option_text(self, window: int, index: int) -> str:
        ballot = self.view.ballot
        if ballot is not None and ballot.window == window:
            for option in ballot.options:
                if option.index == index:
                    return option.text
        return ""

    def _snapshot(self, snap: Snapshot) -> None:
        st = self.style
        self._line(st(f"━━ {snap.title or 'Fablecast'} ━━", BOLD))
        if snap.truncated:
            self._line(st("[… earlier beats omitted]", DIM))
        for beat in snap.story:
            if beat.choice:
                self._line(st(f"» {beat.choice}", CYAN))
            self._write(beat.text + "\n\n")
        if snap.ballot is not None:
            self._line(st("── What happens next? ──", BOLD, MAGENTA))
            for option in snap.ballot.options:
                self._write(f"  {st(str(option.index + 1), BOLD)}) {option.text}\n")
        if snap.phase == "paused":
            self._line(st(f"[paused{': ' + snap.reason if snap.reason else ''}]", YELLOW))
        if snap.partial:
            self._write(snap.partial)
        self._status_dirty = True


Renderer = JsonRenderer | TextRenderer


# --------------------------------------------------------------------------- running


@contextlib.contextmanager
def _keys_mode() -> Iterator[bool]:
    """On a terminal: keys without Enter and without echo (cbreak), restored on exit."""
    try:
        import termios
        import tty
    except ImportError:  # pragma: no cover - not POSIX
        yield False
        return
    if not sys.stdin.isatty():
        yield False
        return
    fd = sys.stdin.fileno()
    saved = termios.tcgetattr(fd)
    try:
        tty.setcbreak(fd)
        yield True
    finally:
        termios.tcsetattr(fd, termios.TCSADRAIN, saved)


def _start_stdin_reader(
    loop: asyncio.AbstractEventLoop, queue: asyncio.Queue[str | None], *, keys: bool = False
) -> None:
    """Read stdin in a daemon thread: single keys on a cbreak terminal, else lines."""

    def pump() -> None:
        try:
            if keys:
                fd = sys.stdin.fileno()
                while chunk := os.read(fd, 32):
                    loop.call_soon_threadsafe(queue.put_nowait, chunk.decode(errors="ignore"))
            else:
                for line in sys.stdin:
                    loop.call_soon_threadsafe(queue.put_nowait, line)
        except (OSError, ValueError, RuntimeError):  # closed stdin / loop already gone
            pass
        with contextlib.suppress(RuntimeError):
            loop.call_soon_threadsafe(queue.put_nowait, None)

    threading.Thread(target=pump, name="fablecast-stdin", daemon=True).start()


def key_help(options: int | None = None, *, enter: bool = False) -> str:
    """The key map of ``play`` (``options``: the open ballot's size, if any)."""
    reactions = "  ".join(f"{k}={v}" for k, v in REACTION_KEYS.items())
    vote = f"1-{options} vote" if options else "digits vote"
    tail = " (then Enter)" if enter else ""
    return f"keys: {vote} · {reactions} · p=ping · ?=help · q=quit{tail}"


async def _command(key: str, client: FablecastClient, view: StoryView, renderer: Renderer) -> bool:
    """Run one key of ``play``; returns False to quit."""
    if key == "q":
        return False
    try:
        if key.isdigit():
            number = int(key)
            ballot = view.ballot
            if ballot is None:
                renderer.note("no vote is open")
            elif not 1 <= number <= len(ballot.options):
                renderer.note(f"no option {number}: choose 1-{len(ballot.options)}")
            else:
                await client.vote(ballot.window, ballot.options[number - 1].index)
        elif key in REACTION_KEYS:
            await client.react(reaction=REACTION_KEYS[key])
        elif key == "p":
            await client.ping()
        elif key == "?":
            renderer.note(key_help(len(view.ballot.options) if view.ballot else None))
        else:
            renderer.note(f"unknown key {key!r}; ? for help")
    except NotConnectedError:
        renderer.note("not connected (reconnecting); try again")
    return True


async def _play_input(client: FablecastClient, view: StoryView, renderer: Renderer) -> None:
    """Read stdin and act on it until ``q``; returns then. At EOF, waits forever."""
    queue: asyncio.Queue[str | None] = asyncio.Queue()
    _start_stdin_reader(asyncio.get_running_loop(), queue, keys=_KEYS_MODE[0])
    while True:
        line = await queue.get()
        if line is None:  # EOF: keep watching until Ctrl-C or the stream ends
            await asyncio.Event().wait()
            return
        for key in line.strip().lower():
            if key.isspace():
                continue
            if not await _command(key, client, view, renderer):
                return


async def _consume(client: FablecastClient, view: StoryView, renderer: Renderer) -> None:
    async for msg in client:
        view.apply(msg)
        renderer.handle(msg)


async def _ticker(renderer: Renderer) -> None:
    while True:
        await asyncio.sleep(1.0)
        renderer.tick()


async def run_session(args: argparse.Namespace, *, interactive: bool) -> int:
    """Run ``watch`` (or ``play`` when ``interactive``) until the stream ends or ``q``."""
    view = StoryView()
    out = sys.stdout
    renderer: Renderer
    if args.json:
        renderer = JsonRenderer(out, sys.stderr)
    else:
        tty = out.isatty()
        color = {"always": True, "never": False}.get(
            args.color, tty and not os.environ.get("NO_COLOR")
        )
        renderer = TextRenderer(out, view, color=color, tty=tty)
    client = FablecastClient(
        args.url,
        codec=args.codec,
        participant=args.participant,
        token=args.token or os.environ.get("FABLECAST_TOKEN") or None,
        name=args.name,
        since=args.since,
        epoch=args.epoch,
        backoff=Backoff(max_attempts=args.max_retries),
    )
    try:
        async with client:
            if interactive:
                renderer.note(key_help(enter=not _KEYS_MODE[0]))
            tasks = {asyncio.create_task(_consume(client, view, renderer))}
            if interactive:
                tasks.add(asyncio.create_task(_play_input(client, view, renderer)))
            ticker = asyncio.create_task(_ticker(renderer))
            try:
                done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
            finally:
                for task in (*tasks, ticker):
                    task.cancel()
            for task in done:
                task.result()  # re-raise what ended the session
    except FablecastClosed as exc:
        if exc.code in _CLEAN_CLOSE:
            renderer.note(f"room closed ({exc.reason or exc.code})")
            return 0
        print(f"fablecast: {exc}", file=sys.stderr)
        return 1
    except (ConnectError, ReconnectFailed, FablecastError) as exc:
        print(f"fablecast: {exc}", file=sys.stderr)
        return 1
    finally:
        renderer.finish()
    return 0


#: Whether ``play`` reads single keys (a cbreak terminal); set by ``_run``.
_KEYS_MODE = [False]


def _run(args: argparse.Namespace, *, interactive: bool) -> int:
    try:
        if not interactive:
            return asyncio.run(run_session(args, interactive=False))
        with _keys_mode() as keys:
            _KEYS_MODE[0] = keys
            return asyncio.run(run_session(args, interactive=True))
    except KeyboardInterrupt:
        return 0
    except BrokenPipeError:
        # The reader went away (e.g. `| head`): stop quietly.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 0


def _watch(args: argparse.Namespace) -> int:
    return _run(args, interactive=False)


def _play(args: argparse.Namespace) -> int:
    return _run(args, interactive=True)


# --------------------------------------------------------------------------- parsers


def _common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("url", metavar="URL", help="room URL, e.g. ws://localhost:8765/rooms/demo")
    parser.add_argument(
        "--json", action="store_true", help="print every server message as one JSON line"
    )
    parser.add_argument(
        "--codec",
        choices=("json", "msgpack"),
        default="json",
        help="wire encoding (WebSocket subprotocol); default json",
    )
    parser.add_argument(
        "--participant", metavar="ID", help="participant id (ignored by servers with tokens)"
    )
    parser.add_argument(
        "--token",
        help="signed token for hello (fablecast token ...; default: $FABLECAST_TOKEN, "
        "else the server issues an anonymous identity)",
    )
    parser.add_argument("--name", help="display name sent in hello")
    parser.add_argument(
        "--since", type=int, metavar="SEQ", help="resume after room frame SEQ (with --epoch)"
    )
    parser.add_argument("--epoch", metavar="E", help="room epoch of --since")
    parser.add_argument(
        "--max-retries",
        type=int,
        metavar="N",
        default=None,
        help="give up after N failed reconnect attempts in a row (default: never)",
    )
    parser.add_argument(
        "--color",
        choices=("auto", "always", "never"),
        default="auto",
        help="colour output (auto: when stdout is a terminal and NO_COLOR is unset)",
    )


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``watch`` and ``play`` to the ``fablecast`` command."""
    watch = sub.add_parser(
        "watch", help="stream a room's story to the terminal", description=_watch_doc()
    )
    _common(watch)
    watch.set_defaults(func=_watch)
    play = sub.add_parser(
        "play", help="watch a room and vote/react from the keyboard", description=_play_doc()
    )
    _common(play)
    play.set_defaults(func=_play)


def _watch_doc() -> str:
    return "Stream a room's live story: beats, ballots with live tallies, results and mood."


def _play_doc() -> str:
    return "Like watch, reading keys from stdin (one line at a time). " + key_help()
