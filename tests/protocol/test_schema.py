"""protocol/schema.py: the committed JSON Schema is current and complete; codes are documented."""

from __future__ import annotations

import json
import re
import typing
from pathlib import Path

import jsonschema
import pytest

from fablecast.protocol import messages as m
from fablecast.protocol.codes import CloseCode, ErrorCode
from fablecast.protocol.schema import STANDARD_KEYWORDS, build_schema, render
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
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    assert schema["$defs"]["ProtocolVersion"] == {"const": PROTOCOL_VERSION}
    assert schema["$defs"]["Subprotocol"]["enum"] == [SUBPROTOCOL_JSON, SUBPROTOCOL_MSGPACK]
    assert schema["anyOf"] == [
        {"$ref": "#/$defs/ClientMessage"},
        {"$ref": "#/$defs/ServerMessage"},
    ]


@pytest.mark.parametrize(
    ("key", "union"), [("ClientMessage", m.ClientMessage), ("ServerMessage", m.ServerMessage)]
)
def test_unions_are_tagged_by_type(key: str, union: object) -> None:
    schema = build_schema()
    node = schema["$defs"][key]
    classes = typing.get_args(union)
    assert "discriminator" not in node  # OpenAPI, not JSON Schema
    assert [ref["$ref"] for ref in node["anyOf"]] == [f"#/$defs/{c.__name__}" for c in classes]
    for cls in classes:
        definition = schema["$defs"][cls.__name__]
        assert definition["properties"]["type"] == {"enum": [_tag(cls)]}
        assert "type" in definition["required"]


def test_constraints_are_exported() -> None:
    defs = build_schema()["$defs"]
    vote = defs["Vote"]["properties"]
    # Any non-negative index decodes; one not on the ballot is answered unknown_option.
    assert vote["option"] == {"type": "integer", "minimum": 0, "maximum": 2**53}
    assert vote["window"]["minimum"] == 1
    participant = json.dumps(defs["Hello"]["properties"]["participant"])
    assert "A-Za-z0-9_.:-" in participant
    assert "64" in participant


def test_room_frames_require_epoch_and_seq() -> None:
    defs = build_schema()["$defs"]
    for cls in m.ROOM_FRAME_TYPES:
        definition = defs[cls.__name__]
        assert {"epoch", "seq"} <= set(definition["required"]), cls.__name__
        assert "default" not in definition["properties"]["seq"]


def test_code_tables() -> None:
    defs = build_schema()["$defs"]
    assert sorted(defs["ErrorCode"]["enum"]) == sorted(c.value for c in ErrorCode)
    assert defs["Error"]["properties"]["code"] == {"$ref": "#/$defs/ErrorCode"}
    assert defs["CloseCode"]["oneOf"] == [
        {"const": c.value, "title": c.name.lower()} for c in CloseCode
    ]


def _keywords(node: object, path: str = "#") -> list[str]:
    """Every key used as a keyword in a schema object (not names under properties/$defs)."""
    found: list[str] = []
    if isinstance(node, dict):
        for key, value in node.items():
            if key in ("properties", "$defs", "patternProperties", "dependentSchemas"):
                for name, sub in value.items():
                    found += _keywords(sub, f"{path}/{key}/{name}")
                continue
            found.append(f"{path}/{key}")
            if key in ("enum", "const", "default", "examples", "required"):
                continue
            if isinstance(value, dict):
                found += _keywords(value, f"{path}/{key}")
            elif isinstance(value, list):
                for i, sub in enumerate(value):
                    found += _keywords(sub, f"{path}/{key}/{i}")
    return found


def test_schema_is_standard_json_schema_in_strict_mode() -> None:
    """Valid under the 2020-12 metaschema and only standard keywords (ajv's strict mode)."""
    schema = json.loads(COMMITTED.read_text(encoding="utf-8"))
    jsonschema.Draft202012Validator.check_schema(schema)
    unknown = [k for k in _keywords(schema) if k.rsplit("/", 1)[1] not in STANDARD_KEYWORDS]
    assert not unknown, f"non-standard keywords: {unknown}"


def _validator(schema: dict[str, object], name: str) -> jsonschema.Draft202012Validator:
    return jsonschema.Draft202012Validator(
        {"$ref": f"#/$defs/{name}", "$defs": schema["$defs"]},
        format_checker=jsonschema.Draft202012Validator.FORMAT_CHECKER,
    )


def test_documented_examples_validate_against_the_schema() -> None:
    schema = json.loads(COMMITTED.read_text(encoding="utf-8"))
    client, server = _validator(schema, "ClientMessage"), _validator(schema, "ServerMessage")
    examples = [
        json.loads(line)
        for line in PROTOCOL_DOC.read_text(encoding="utf-8").splitlines()
        if line.startswith('{"type":')
    ]
    assert len(examples) >= 20
    for example in examples:
        valid = (
            client if example["type"] in {"hello", "vote", "react", "ping", "moderate"} else server
        )
        valid.validate(example)


def test_schema_refuses_what_the_protocol_refuses() -> None:
    schema = json.loads(COMMITTED.read_text(encoding="utf-8"))
    server = _validator(schema, "ServerMessage")
    assert not server.is_valid({"type": "token", "beat": 1, "text": "x"})  # no epoch/seq
    assert not server.is_valid({"type": "error", "code": "nope", "message": "x"})
    assert server.is_valid({"type": "error", "code": "forbidden", "message": "x", "ref": "vote"})


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
