"""server/config.py load_config: defaults, TOML overrides, strict validation."""

from __future__ import annotations

from pathlib import Path

import pytest

from fablecast.server.config import Config, ConfigError, RoomConfig, load_config
from fablecast.server.room.state import RoomSettings


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "fablecast.toml"
    path.write_text(text, encoding="utf-8")
    return path


def test_defaults() -> None:
    config = load_config()
    assert config == Config()
    s = config.server
    assert (s.host, s.port, s.tick_ms, s.max_message_bytes) == ("127.0.0.1", 8765, 50, 65536)
    assert (s.outbox_max_bytes, s.history_frames, s.history_bytes) == (
        1024 * 1024,
        1024,
        8 * 1024 * 1024,
    )
    assert config.engine.kind == "vllm"
    assert [r.name for r in config.rooms] == ["demo"]


def test_empty_file_is_the_defaults(tmp_path: Path) -> None:
    assert load_config(write(tmp_path, "")) == Config()


def test_default_room_settings_match_the_core() -> None:
    assert RoomConfig(name="demo").settings() == RoomSettings()


def test_toml_overrides(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """
[server]
host = "0.0.0.0"
port = 9000
tick_ms = 20
outbox_max_bytes = 4096

[engine]
kind = "scripted"
stall_timeout_s = 3.5
options = { speed = 2, words = ["a", "b"] }

[[rooms]]
name = "lantern"
title = "Lanterns"
n_choices = 4
vote_s = 7.5
reveal_s = 0
pause_when_empty = false
seed = "s1"

[[rooms]]
name = "second-room_2"
""",
    )
    config = load_config(str(path))
    assert (config.server.host, config.server.port, config.server.tick_ms) == ("0.0.0.0", 9000, 20)
    assert config.server.outbox_max_bytes == 4096
    assert config.server.messages_per_s == 20.0  # untouched keys keep their defaults
    assert config.engine.stall_timeout_s == 3.5
    assert config.engine.options == {"speed": 2, "words": ["a", "b"]}
    assert [r.name for r in config.rooms] == ["lantern", "second-room_2"]
    settings = config.rooms[0].settings()
    assert (settings.title, settings.n_choices, settings.vote_s, settings.reveal_s) == (
        "Lanterns",
        4,
        7.5,
        0.0,
    )
    assert (settings.pause_when_empty, settings.seed) == (False, "s1")
    assert config.rooms[1].settings() == RoomSettings()


@pytest.mark.parametrize(
    "text",
    [
        "typo = 1\n",
        "[server]\nprot = 9000\n",
        "[engine]\nkindd = 'x'\n",
        "[[rooms]]\nname = 'a'\nn_choice = 3\n",
        "[metrics]\nenabled = true\n",
    ],
)
def test_unknown_keys_are_rejected(tmp_path: Path, text: str) -> None:
    with pytest.raises(ConfigError, match=r"fablecast\.toml"):
        load_config(write(tmp_path, text))


@pytest.mark.parametrize(
    "text",
    [
        "[server]\nport = 70000\n",
        "[server]\nport = -1\n",
        "[server]\nport = '8765'\n",
        "[server]\ntick_ms = 1\n",
        "[server]\nmax_message_bytes = 100\n",
        "[server]\noutbox_max_bytes = 0\n",
        "[server]\nmessages_per_s = 0\n",
        "[engine]\nstall_timeout_s = -1\n",
        "[[rooms]]\nname = 'a'\nn_choices = 7\n",
        "[[rooms]]\nname = 'a'\nn_choices = 1\n",
        "[[rooms]]\nname = 'a'\nvote_s = 0\n",
        "[[rooms]]\nname = 'a'\nreveal_s = -1\n",
        "[[rooms]]\nname = 'has space'\n",
        "[[rooms]]\nname = ''\n",
        "[[rooms]]\ntitle = 'no name'\n",
    ],
)
def test_invalid_values_are_rejected(tmp_path: Path, text: str) -> None:
    with pytest.raises(ConfigError):
        load_config(write(tmp_path, text))


def test_duplicate_room_names_are_rejected(tmp_path: Path) -> None:
    path = write(tmp_path, "[[rooms]]\nname = 'a'\n[[rooms]]\nname = 'b'\n[[rooms]]\nname = 'a'\n")
    with pytest.raises(ConfigError, match="unique"):
        load_config(path)


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read"):
        load_config(tmp_path / "nope.toml")


def test_malformed_toml(tmp_path: Path) -> None:
    with pytest.raises(ConfigError):
        load_config(write(tmp_path, "[server\nport = 1\n"))


def test_config_error_is_a_value_error() -> None:
    assert issubclass(ConfigError, ValueError)


def test_every_core_room_setting_is_configurable() -> None:
    import dataclasses

    core = {f.name for f in dataclasses.fields(RoomSettings)}
    assert core <= set(RoomConfig.__struct_fields__)
    settings = RoomConfig(name="x", vote_s=3.0, retry_max_s=9.0).settings()
    assert (settings.vote_s, settings.retry_max_s) == (3.0, 9.0)


def test_a_room_story_sets_title_premise_and_beat_sizes(tmp_path: Path) -> None:
    f = tmp_path / "c.toml"
    f.write_text('[[rooms]]\nname = "r"\nstory = "noir"\n')
    rc = load_config(f).rooms[0]
    assert rc.title == "Rain on Saint Agnes Street"
    assert (rc.n_choices, rc.vote_s, rc.narration_tokens) == (3, 15.0, 110)


def test_a_bad_story_is_refused_with_file_key_and_reason(tmp_path: Path) -> None:
    spec = tmp_path / "s.toml"
    spec.write_text('title = "T"\npremise = "P"\n[beat]\noptions = 9\n')
    f = tmp_path / "c.toml"
    f.write_text(f'[[rooms]]\nname = "r"\nstory = "{spec}"\n')
    with pytest.raises(ConfigError, match=rf"room r: {spec}: beat.options: Expected `int` <= 5"):
        load_config(f)
    f.write_text('[[rooms]]\nname = "r"\nstory = "no-such-preset"\n')
    with pytest.raises(ConfigError, match="no-such-preset: \\(file\\): cannot read"):
        load_config(f)
