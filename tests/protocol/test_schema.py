"""protocol/schema.py: the committed JSON Schema is current and complete; codes are documented."""

from __future__ import annotations

import json
import re
import typing
from pathlib import Path

import pytest

from fablecast.protocol import messages as m
from fablecast.protocol.codes import CloseCode, ErrorCode
from fablecast.protocol.schema import build_schema, render
from fablecast.protocol.version import PROTOCOL_VERSION, SUBPROTOCOL_JSON, SUBPROTOCOL_MSGPACK

ROOT = Path(__file__).resolve().parents[2]
COMMITTED = ROOT / "clients" / "schema" / "protocol.v1.json"
PROTOCOL_DOC = ROOT / "docs" / "protocol.md"


def _tag(cls: type) -> str:
    return cls.__struct_config__.tag  # type: ignore[attr-defined, no-any-return]


def test_committed_schema_is_current() -> None:
    """Stale-schema guard: regenerate with ``python -m protocol.schema > clients/schema/...``."""
    assert COMMITTED.read_text(encoding="utf-8") == render()


def test_render_is_stable_json() -> None:
    text = render()
    assert text == render()
    assert text.endswith("}\n")
    assert json.loads(text) == build_schema()


def test_header() -> None:
    schema = build_schema()
    assert schema["protocol"] == PROTOCOL_VERSION == 1
    assert schema["subprotocols"] == {"json": SUBPROTOCOL_JSON, "msgpack": SUBPROTOCOL_MSGPACK}
    assert schema["$schema"].startswith("https://json-schema.org/")


@pytest.mark.parametrize(
    ("key", "union"), [("client_message", m.ClientMessage), ("server_message", m.ServerMessage)]
)
def test_unions_are_discriminated_by_type(key: str, union: object) -> None:
    schema = build_schema()
    node = schema[key]
    classes = typing.get_args(union)
    assert node["discriminator"]["propertyName"] == "type"
    mapping = node["discriminator"]["mapping"]
    assert mapping == {_tag(c): f"#/$defs/{c.__name__}" for c in classes}
    assert [ref["$ref"] for ref in node["anyOf"]] == [f"#/$defs/{c.__name__}" for c in classes]
    for cls in classes:
        definition = schema["$defs"][cls.__name__]
        assert definition["properties"]["type"] == {"enum": [_tag(cls)]}
        assert "type" in definition["required"]


def test_constraints_are_exported() -> None:
    defs = build_schema()["$defs"]
    vote = defs["Vote"]["properties"]
    assert vote["option"] == {"type": "integer", "minimum": 0, "maximum": 4}
    assert vote["window"]["minimum"] == 1
    participant = json.dumps(defs["Hello"]["properties"]["participant"])
    assert "A-Za-z0-9_.:-" in participant
    assert "64" in participant


def test_code_tables() -> None:
    schema = build_schema()
    assert schema["error_codes"] == [c.value for c in ErrorCode]
    assert schema["close_codes"] == {c.name.lower(): c.value for c in CloseCode}


def test_code_values_are_unique_and_in_range() -> None:
    assert len({c.value for c in ErrorCode}) == len(ErrorCode)
    assert len({c.value for c in CloseCode}) == len(CloseCode)
    for code in CloseCode:
        assert code.value in (1001, 1009, 1011) or 4000 <= code.value <= 4999


def test_every_code_is_documented() -> None:
    text = PROTOCOL_DOC.read_text(encoding="utf-8")
    missing = [c.value for c in ErrorCode if not re.search(rf"\b{re.escape(c.value)}\b", text)]
    missing += [str(c.value) for c in CloseCode if not re.search(rf"\b{c.value}\b", text)]
    assert not missing, f"not documented in docs/protocol.md: {missing}"
