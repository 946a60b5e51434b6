"""Export the protocol as JSON Schema for the JS clients.

``python -m protocol.schema > clients/schema/protocol.v1.json`` regenerates it;
a test fails when the committed file is stale.
"""

from __future__ import annotations

import sys
from typing import Any

import msgspec

from fablecast.protocol.codes import CloseCode, ErrorCode
from fablecast.protocol.messages import ClientMessage, ServerMessage
from fablecast.protocol.version import PROTOCOL_VERSION, SUBPROTOCOL_JSON, SUBPROTOCOL_MSGPACK


def build_schema() -> dict[str, Any]:
    """One document: both unions' schemas plus the code tables."""
    (client, server), components = msgspec.json.schema_components(
        [ClientMessage, ServerMessage], ref_template="#/$defs/{name}"
    )
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "title": f"Fablecast protocol v{PROTOCOL_VERSION}",
        "protocol": PROTOCOL_VERSION,
        "subprotocols": {"json": SUBPROTOCOL_JSON, "msgpack": SUBPROTOCOL_MSGPACK},
        "client_message": client,
        "server_message": server,
        "error_codes": [c.value for c in ErrorCode],
        "close_codes": {c.name.lower(): c.value for c in CloseCode},
        "$defs": components,
    }


def render() -> str:
    """The schema document as stable, pretty JSON text."""
    return msgspec.json.format(msgspec.json.encode(build_schema()), indent=2).decode() + "\n"


if __name__ == "__main__":  # pragma: no cover
    sys.stdout.write(render())
