"""The docs a user reads stay true: README commands, every message documented."""

from __future__ import annotations

from pathlib import Path

import msgspec
import pytest

from fablecast.protocol import messages as m

ROOT = Path(__file__).resolve().parents[1]


def _tags(union: object) -> list[str]:
    return [cls.__struct_config__.tag for cls in union.__args__]  # type: ignore[attr-defined]


@pytest.mark.parametrize("tag", _tags(m.ClientMessage) + _tags(m.ServerMessage))
def test_every_message_has_a_section_and_an_example(tag: str) -> None:
    doc = (ROOT / "docs/protocol.md").read_text()
    assert f"### `{tag}`" in doc
    assert f'{{"type":"{tag}"' in doc


def test_protocol_examples_decode() -> None:
    doc = (ROOT / "docs/protocol.md").read_text()
    client = msgspec.json.Decoder(m.ClientMessage)
    server = msgspec.json.Decoder(m.ServerMessage)
    examples = [line for line in doc.splitlines() if line.startswith('{"type":')]
    assert len(examples) >= 20
    for line in examples:
        try:
            client.decode(line)
        except msgspec.ValidationError:
            server.decode(line)


def test_readme_quickstart_is_the_two_make_commands() -> None:
    readme = (ROOT / "README.md").read_text()
    quick = readme.split("## Quickstart", 1)[1].split("```", 2)[1]
    commands = [line.split("#")[0].strip() for line in quick.splitlines()[1:] if line.strip()]
    assert commands == ["make serve", "make test"]
    assert "make test" in (ROOT / ".ci/run").read_text()


def test_stories_doc_lists_every_tone_with_its_directive_and_lead_phrases() -> None:
    from fablecast.inference.story.tone import OPPOSED, TONES

    doc = (ROOT / "docs/stories.md").read_text()
    for tone in TONES.values():
        row = next(line for line in doc.splitlines() if line.startswith(f"| `{tone.name}` |"))
        assert tone.directive in row
        assert " · ".join(tone.leads) in row
        assert row.rstrip(" |").endswith(", ".join(OPPOSED[tone.name]))
