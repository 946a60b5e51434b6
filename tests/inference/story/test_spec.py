"""Story specs: presets load and differ; bad specs are refused with file, key and reason."""

from __future__ import annotations

from pathlib import Path

import pytest

from fablecast.inference.story.spec import PRESETS, SpecError, load_spec, parse_spec

GOOD = """
title = "T"
premise = "P"
[[characters]]
name = "Ann Lee"
pronouns = "she/her"
"""


def test_presets_load_and_differ() -> None:
    specs = [load_spec(p) for p in PRESETS]
    assert len(PRESETS) >= 4
    assert len({s.title for s in specs}) == len(specs)
    assert len({(s.style.person, s.style.tone, s.style.sentence_length) for s in specs}) == len(
        specs
    )
    assert all(s.protagonist is not None for s in specs)


def test_minimal_spec_and_subject() -> None:
    spec = parse_spec(GOOD)
    assert spec.subject == "Ann" and spec.beat.options == 3
    first = parse_spec(GOOD + '\n[style]\nperson = "first"\n')
    assert first.subject == "I"


@pytest.mark.parametrize(
    ("extra", "key", "reason"),
    [
        ("colour = 1", "colour", "unknown key"),
        ("[beat]\ntokens = 5", "beat.tokens", ">= 30"),
        ("[beat]\noptions = 9", "beat.options", "<= 5"),
        ('[style]\nperson = "second"', "style.person", "Invalid enum value"),
        ("[[lore]]\ntext = 'x'", "lore[0].keywords", "missing required key"),
    ],
)
def test_bad_specs_name_file_key_and_reason(extra: str, key: str, reason: str) -> None:
    with pytest.raises(SpecError) as err:
        parse_spec(GOOD.replace("[[characters]]", extra + "\n[[characters]]", 1), "room.toml")
    assert err.value.file == "room.toml" and err.value.key == key
    assert reason in err.value.reason
    assert str(err.value).startswith(f"room.toml: {key}: ")


def test_missing_title_and_cast() -> None:
    with pytest.raises(SpecError, match="title: missing required key"):
        parse_spec('premise = "P"', "a.toml")
    with pytest.raises(SpecError, match="characters: at least one"):
        parse_spec('title = "T"\npremise = "P"', "a.toml")


def test_bad_toml_and_missing_file(tmp_path: Path) -> None:
    with pytest.raises(SpecError, match=r"\(toml\)"):
        parse_spec("title = ", "a.toml")
    with pytest.raises(SpecError, match="cannot read"):
        load_spec(str(tmp_path / "nope.toml"))
    f = tmp_path / "ok.toml"
    f.write_text(GOOD)
    assert load_spec(str(f)).title == "T"
