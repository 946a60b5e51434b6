"""Node configuration: a TOML file (``fablecast serve --config FILE``) validated on load.

Every limit is explicit here, with its default; docs/protocol.md lists the
client-visible ones. Unknown keys are rejected so a typo never goes unnoticed.
"""

from __future__ import annotations

import dataclasses
import importlib
from pathlib import Path
from typing import Annotated, Any, Literal

import msgspec
from msgspec import Meta

from fablecast.protocol.codec import DEFAULT_MAX_MESSAGE_BYTES
from fablecast.server.room.state import DEFAULT_PREMISE, DEFAULT_TITLE, Room, RoomSettings

Positive = Annotated[float, Meta(gt=0)]
PosInt = Annotated[int, Meta(ge=1)]


class ServerConfig(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """Network, fan-out and per-connection limits."""

    host: str = "127.0.0.1"
    port: Annotated[int, Meta(ge=0, le=65535)] = 8765
    #: Coalescing tick: token text and latest-value state go out at most this often.
    tick_ms: Annotated[int, Meta(ge=5, le=1000)] = 50
    uvloop: bool = True
    #: Largest client message; larger ones close the connection with 1009.
    max_message_bytes: Annotated[int, Meta(ge=256, le=16 * 1024 * 1024)] = DEFAULT_MAX_MESSAGE_BYTES
    #: Bytes queued to one client before it is closed with 4008 (slow consumer).
    outbox_max_bytes: PosInt = 1024 * 1024
    #: Kernel send buffer per connection (SO_SNDBUF), bytes; None keeps the OS default
    #: (autotuned, up to MBs on loopback). A small one bounds memory per connection
    #: and makes a stalled client visible in its outbox sooner.
    socket_send_buffer: Annotated[int, Meta(ge=4096)] | None = None
    #: Resume history per room: frames and bytes.
    history_frames: PosInt = 1024
    history_bytes: PosInt = 8 * 1024 * 1024
    #: Client message rate limit (token bucket) and how many violations in a row close (4009).
    messages_per_s: Positive = 20.0
    message_burst: PosInt = 40
    max_rate_violations: PosInt = 50
    #: Consecutive malformed/invalid messages before closing with 4001.
    max_bad_messages: PosInt = 10
    hello_timeout_s: Positive = 10.0
    max_viewers_per_room: PosInt = 10_000
    max_rooms: PosInt = 1000
    #: WebSocket keepalive pings.
    ping_interval_s: Positive = 20.0
    ping_timeout_s: Positive = 20.0
    close_timeout_s: Positive = 2.0
    #: The web pages' files: a copy of the repository's clients/ folder with ``npm ci``
    #: run in clients/js (server/pages.py). None: the checkout's clients/, if any.
    web_root: str | None = None
    #: Per address (IPv4, or IPv6 /64; server/limits.py): open connections (more: HTTP 429)
    #: and messages per second over all its connections (more: ``rate_limited``).
    max_connections_per_address: PosInt = 32
    address_messages_per_s: Positive = 100.0
    address_message_burst: PosInt = 200
    #: Anonymous identities of one address with a counted vote in one window (more: ``rejected``).
    anonymous_votes_per_address: PosInt = 16
    #: Reactions of all anonymous identities of one address together (more: ``rate_limited``).
    anonymous_reactions_per_address_per_s: Positive = 8.0
    anonymous_reaction_burst_per_address: PosInt = 16
    #: A fragmented message not finished within this many seconds: close 4001.
    fragment_timeout_s: Positive = 10.0
    #: ``error`` replies written to one connection per second (burst: twice that); past
    #: it they are counted, not sent, so bad input cannot make the server write (or log)
    #: without bound. Closes (4001, 4009) still go out with their error first.
    errors_per_s: Positive = 10.0


class AuthConfig(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """Tokens, Origins and who may read ``/metrics`` (docs/security.md)."""

    #: Signing keys by key id (each secret at least 32 bytes). ``FABLECAST_AUTH_KEYS``
    #: (``kid:secret,...``; the first signs) replaces them. Neither: a random key per
    #: process (anonymous identities then last until the node restarts).
    keys: dict[str, str] = {}
    #: The key id that signs new tokens; default: the first of ``keys``.
    current_key: str | None = None
    #: Lifetime of a server-issued anonymous identity.
    anonymous_ttl_s: Positive = 30 * 86400.0
    #: Origins allowed besides the node's own (``scheme://host[:port]``, exact match).
    allowed_origins: list[str] = []
    #: ``/metrics`` needs ``Authorization: Bearer <metrics_token>`` when set.
    metrics_token: str | None = None
    #: Serve ``/metrics`` on its own listener (``metrics_host:metrics_port``) instead
    #: of the main port. Neither this nor a token: ``/metrics`` answers loopback only.
    metrics_port: Annotated[int, Meta(ge=0, le=65535)] | None = None
    metrics_host: str = "127.0.0.1"


class EngineConfig(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """Which engine narrates; ``options`` go to the backend (see docs/engines.md).

    The default is in-process vLLM on the bundled SmolLM2-135M-Instruct (converted
    on first start); ``scripted`` needs no model at all.
    """

    kind: str = "vllm"
    model: str | None = None
    stall_timeout_s: Positive = 10.0
    options: dict[str, Any] = {}
    #: Scheduler policy (``inference.scheduler.SchedulerConfig`` fields; docs/engines.md).
    scheduler: dict[str, Any] = {}
    #: Release narration a whole sentence at a time, dropping meta-talk, repeated
    #: runs and the cut tail (docs/stories.md). Token-timing benchmarks switch it off.
    sentence_guard: bool = True
    #: Candidate openings sampled for a beat after a vote; the one nearest the winning
    #: option and the tone asked for is continued (docs/stories.md). 1: one stream.
    #: Applies to real engines only (the scripted engine always uses one).
    openings: Annotated[int, Meta(ge=1, le=16)] = 6
    #: With best-of-n openings and a tone directive, also sample the rest of the
    #: beat ``openings`` times and tell the one nearest the tone (docs/stories.md).
    tone_pass: bool = True
    #: How the tone pass chooses: ``"sentence"``, each next sentence of the rest of the
    #: beat among ``openings`` candidates, told as it is chosen; ``"rest"``, the best
    #: of ``openings`` whole rests, told as one block (docs/stories.md).
    tone_by: Literal["sentence", "rest"] = "sentence"
    #: With ``tone_by = "rest"``: rounds of the tone pass at most; another ``openings``
    #: rests are sampled only when no rest so far is in the tone asked for.
    tone_rounds: Annotated[int, Meta(ge=1, le=4)] = 1


class RoomConfig(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """One room opened at start (more can be opened at run time later)."""

    name: Annotated[str, Meta(pattern=r"^[A-Za-z0-9_-]{1,64}$")]
    #: Story spec: a preset name or a TOML file (docs/stories.md). When set, its
    #: title, premise and [beat] sizes replace title, premise, n_choices, vote_s
    #: and narration_tokens.
    story: str | None = None
    title: str = DEFAULT_TITLE
    premise: str = DEFAULT_PREMISE
    style: str = "Vivid and concise, present tense, one scene at a time."
    n_choices: Annotated[int, Meta(ge=2, le=5)] = 3
    vote_s: Positive = 15.0
    reveal_s: Annotated[float, Meta(ge=0)] = 2.0
    retry_s: Positive = 2.0
    retry_max_s: Positive = 30.0
    narration_tokens: Annotated[int, Meta(ge=8, le=4096)] = 120
    pause_when_empty: bool = True
    mood_half_life_s: Positive = 20.0
    mood_refresh_s: Positive = 5.0
    reactions_per_s: Positive = 4.0
    reaction_burst: PosInt = 8
    snapshot_beats: PosInt = 50
    seed: str = "fablecast"
    #: Viewers without a token get a server-issued anonymous identity; false: a token
    #: (``fablecast token``) is needed to join.
    anonymous: bool = True
    # Moderation (docs/moderation.md): the safety filter on every narration delta.
    filter: bool = True
    rating: Literal["family", "teen", "mature"] = "family"
    blocked_terms: tuple[Annotated[str, Meta(min_length=1, max_length=64)], ...] = ()
    allowed_terms: tuple[Annotated[str, Meta(min_length=1, max_length=64)], ...] = ()
    #: ``module:function`` taking text, returning True for text that must not be shown.
    classifier: Annotated[str, Meta(pattern=r"^[\w.]+:\w+$")] | None = None
    #: Characters kept unreleased while the filter looks ahead (at least the longest term + 1).
    holdback_chars: Annotated[int, Meta(ge=0, le=4096)] = 0
    #: Times a blocked beat is told again before it is held for a moderator.
    filter_retries: Annotated[int, Meta(ge=0, le=10)] = 2
    #: Every beat waits in the hold queue until a moderator approves it.
    approval: bool = False
    max_edit_chars: Annotated[int, Meta(ge=1, le=16384)] = 2000
    max_inject_chars: Annotated[int, Meta(ge=1, le=4096)] = 280

    def settings(self) -> RoomSettings:
        """The pure core's view of this room: every field the two share, by name.

        ``classifier`` is imported here; a path that does not import raises ValueError.
        """
        shared = {f.name for f in dataclasses.fields(RoomSettings)} & set(self.__struct_fields__)
        values = {name: getattr(self, name) for name in shared if name != "classifier"}
        if self.classifier is not None:
            module, _, name = self.classifier.partition(":")
            try:
                values["classifier"] = getattr(importlib.import_module(module), name)
            except (ImportError, AttributeError) as exc:
                raise ValueError(
                    f"room {self.name}: classifier {self.classifier!r}: {exc}"
                ) from exc
        return RoomSettings(**values)


class StoreConfig(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """The event log (docs/store.md): on by default, an SQLite file under ``data_dir``."""

    #: False: nothing is logged, a restart loses every story (tests, benchmarks).
    enabled: bool = True
    #: Empty: ``<data_dir>/fablecast.sqlite3``. Else an SQLite path (relative to
    #: ``data_dir``), ``sqlite:///abs/path``, or ``postgresql://user@host/db``.
    url: str = ""
    data_dir: str = "data"
    #: SQLite's ``synchronous``: ``full`` survives power loss, ``normal`` only a crash.
    synchronous: Literal["off", "normal", "full", "extra"] = "full"
    #: Rooms with no event for this many days are deleted at start and daily; 0 keeps all.
    retention_days: Annotated[float, Meta(ge=0)] = 0.0
    #: Events queued for writing before appends are refused (the rooms pause).
    queue_max: PosInt = 10_000
    #: Events per transaction at most.
    batch_max: PosInt = 256


def _default_rooms() -> list[RoomConfig]:
    # As ``apply_story`` leaves it, so the defaults equal an empty config file.
    return [RoomConfig(name="demo", story="lantern_market", narration_tokens=110)]


def apply_story(rc: RoomConfig) -> None:
    """Load ``rc.story`` and copy its title, premise and beat sizes into ``rc``.

    Raises ``ConfigError("room NAME: FILE: KEY: REASON")`` for a bad spec.
    """
    if rc.story is None:
        return
    from fablecast.inference.story.spec import SpecError, load_spec

    try:
        spec = load_spec(rc.story)
    except SpecError as exc:
        raise ConfigError(f"room {rc.name}: {exc}") from None
    rc.title, rc.premise = spec.title, spec.premise
    rc.n_choices, rc.vote_s, rc.narration_tokens = (
        spec.beat.options,
        spec.beat.vote_s,
        spec.beat.tokens,
    )


class Config(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """The whole node configuration."""

    server: ServerConfig = msgspec.field(default_factory=ServerConfig)
    engine: EngineConfig = msgspec.field(default_factory=EngineConfig)
    auth: AuthConfig = msgspec.field(default_factory=AuthConfig)
    rooms: list[RoomConfig] = msgspec.field(default_factory=_default_rooms)
    store: StoreConfig = msgspec.field(default_factory=StoreConfig)


class ConfigError(ValueError):
    """The configuration file is missing, unreadable or invalid."""


def load_config(path: str | Path | None = None) -> Config:
    """Read and validate ``path`` (TOML); the defaults when ``path`` is None."""
    if path is None:
        return Config()
    p = Path(path)
    try:
        data = p.read_bytes()
    except OSError as exc:
        raise ConfigError(f"cannot read {p}: {exc}") from exc
    try:
        config = msgspec.toml.decode(data, type=Config)
    except msgspec.MsgspecError as exc:
        raise ConfigError(f"{p}: {exc}") from exc
    names = [r.name for r in config.rooms]
    if len(set(names)) != len(names):
        raise ConfigError(f"{p}: room names must be unique")
    for rc in config.rooms:
        apply_story(rc)
        try:
            Room(rc.name, rc.settings())  # terms parse, the classifier imports
        except ValueError as exc:
            raise ConfigError(f"{p}: {exc}") from exc
    return config
