"""Export the protocol as JSON Schema for clients in other languages.

``python -m fablecast.protocol.schema > clients/schema/protocol.v1.json``
regenerates it; a test fails when the committed file is stale, and another
validates it as a JSON Schema 2020-12 document that uses standard keywords
only (no OpenAPI ``discriminator``, no custom top-level keys).

Layout: the document validates any message (``anyOf`` client, server); the
named parts are in ``$defs``: ``ClientMessage``, ``ServerMessage``, one
definition per message, ``ErrorCode`` (enum), ``CloseCode`` (``oneOf`` of
``const`` with the code's name as ``title``), ``Subprotocol`` and
``ProtocolVersion``.

Room frames: ``epoch`` and ``seq`` are required (the Python structs give them
defaults only because the room core builds frames before the stream stamps
them), so a generated client cannot silently read seq 0.
"""

from __future__ import annotations

import sys
from typing import Any, Final

import msgspec

from fablecast.protocol.codes import CloseCode
from fablecast.protocol.messages import ROOM_FRAME_TYPES, ClientMessage, ServerMessage
from fablecast.protocol.version import PROTOCOL_VERSION, SUBPROTOCOL_JSON, SUBPROTOCOL_MSGPACK

#: Keywords of JSON Schema 2020-12 (core, applicator, validation, meta-data, format,
#: content, unevaluated vocabularies): the only ones the exported document may use.
STANDARD_KEYWORDS: Final = frozenset(
    """$schema $id $ref $anchor $dynamicRef $dynamicAnchor $vocabulary $comment $defs
    allOf anyOf oneOf not if then else dependentSchemas prefixItems items contains
    properties patternProperties additionalProperties propertyNames
    unevaluatedItems unevaluatedProperties
    type const enum multipleOf maximum exclusiveMaximum minimum exclusiveMinimum
    maxLength minLength pattern maxItems minItems uniqueItems maxContains minContains
    maxProperties minProperties required dependentRequired
    title description default deprecated readOnly writeOnly examples
    format contentEncoding contentMediaType contentSchema""".split()  # noqa: SIM905
)


def _standard_union(node: dict[str, Any]) -> dict[str, Any]:
    """msgspec's tagged union without its OpenAPI ``discriminator`` (each member pins ``type``)."""
    return {k: v for k, v in node.items() if k != "discriminator"}


def build_schema() -> dict[str, Any]:
    """One document: both unions, every message, and the code tables, all in ``$defs``."""
    (client, server), components = msgspec.json.schema_components(
        [ClientMessage, ServerMessage], ref_template="#/$defs/{name}"
    )
    for cls in ROOM_FRAME_TYPES:
        definition = components[cls.__name__]
        for name in ("epoch", "seq"):
            definition["properties"][name].pop("default", None)
        definition["required"] = sorted({*definition.get("required", ()), "epoch", "seq"})
    components["ClientMessage"] = _standard_union(client)
    components["ServerMessage"] = _standard_union(server)
    components["CloseCode"] = {
        "title": "CloseCode",
        "description": "WebSocket close codes the server uses (docs/protocol.md, Close codes).",
        "oneOf": [{"const": c.value, "title": c.name.lower()} for c in CloseCode],
    }
    components["Subprotocol"] = {
        "title": "Subprotocol",
        "description": "WebSocket subprotocols: JSON in text frames, MessagePack in binary.",
        "enum": [SUBPROTOCOL_JSON, SUBPROTOCOL_MSGPACK],
    }
    components["ProtocolVersion"] = {"const": PROTOCOL_VERSION}
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": f"urn:fablecast:protocol:v{PROTOCOL_VERSION}",
        "title": f"Fablecast protocol v{PROTOCOL_VERSION}",
        "description": "Any Fablecast message: $defs/ClientMessage or $defs/ServerMessage.",
        "anyOf": [{"$ref": "#/$defs/ClientMessage"}, {"$ref": "#/$defs/ServerMessage"}],
        "$defs": dict(sorted(components.items())),
    }


def render() -> str:
    """The schema document as stable, pretty JSON text."""
    return msgspec.json.format(msgspec.json.encode(build_schema()), indent=2).decode() + "\n"


if __name__ == "__main__":  # pragma: no cover
    sys.stdout.write(render())
