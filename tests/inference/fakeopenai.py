"""A tiny OpenAI-compatible streaming server for tests (no model; asyncio only).

``GET /v1/models`` and ``POST /v1/chat/completions`` with ``stream: true``:
it streams ``n`` words as SSE chunks at ``tokens_per_s``. Behaviours for
fault tests: ``mode = "ok" | "stall" | "error500" | "drop"`` (drop: close the
connection after the first chunk). Requests seen are kept in ``bodies``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from typing import Any


class FakeOpenAI:
    """Start with ``await start(port)``; ``url`` is the base URL (``.../v1``)."""

    def __init__(self, *, tokens_per_s: float = 200.0, model: str = "fake-model") -> None:
        self.tokens_per_s = tokens_per_s
        self.model = model
        self.mode = "ok"
        self.bodies: list[dict[str, Any]] = []
        self.disconnects = 0
        self._server: asyncio.Server | None = None
        self.port = 0

    @property
    def url(self) -> str:
        """The base URL of the API."""
        return f"http://127.0.0.1:{self.port}/v1"

    async def start(self, port: int = 0) -> None:
        """Listen on loopback."""
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", port)
        self.port = self._server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        """Stop listening and drop connections."""
        if self._server is not None:
            self._server.close()
            with contextlib.suppress(Exception):
                self._server.close_clients()
            await self._server.wait_closed()
            self._server = None

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                lines = head.decode().split("\r\n")
                method, path, _ = lines[0].split(" ", 2)
                headers = {
                    k.strip().lower(): v.strip()
                    for k, _, v in (line.partition(":") for line in lines[1:] if line)
                }
                body = b""
                if "content-length" in headers:
                    body = await reader.readexactly(int(headers["content-length"]))
                if method == "GET" and path.endswith("/models"):
                    data = json.dumps({"data": [{"id": self.model}]}).encode()
                    writer.write(_response(200, "application/json", data))
                    await writer.drain()
                    continue
                if method == "POST" and path.endswith("/chat/completions"):
                    await self._complete(json.loads(body), writer)
                    return
                writer.write(_response(404, "text/plain", b"not found"))
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    async def _complete(self, body: dict[str, Any], writer: asyncio.StreamWriter) -> None:
        self.bodies.append(body)
        if self.mode == "error500":
            writer.write(_response(500, "text/plain", b"boom"))
            await writer.drain()
            return
        writer.write(
            b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\n"
            b"transfer-encoding: chunked\r\nconnection: close\r\n\r\n"
        )
        n = int(body.get("max_tokens", 16))
        text = json.dumps({"choices": ["Go left", "Go right", "Wait"]})
        words = [text] if body.get("response_format") else [f"w{i} " for i in range(n)]
        try:
            for i, word in enumerate(words):
                last = i == len(words) - 1
                chunk = {
                    "choices": [
                        {
                            "index": 0,
                            "delta": {"content": word},
                            "finish_reason": ("length" if len(words) == n else "stop")
                            if last
                            else None,
                        }
                    ]
                }
                await _send(writer, f"data: {json.dumps(chunk)}\n\n".encode())
                if i == 0 and self.mode == "stall":
                    await asyncio.sleep(3600)
                if i == 0 and self.mode == "drop":
                    writer.transport.abort()
                    return
                await asyncio.sleep(1 / self.tokens_per_s)
            await _send(writer, b"data: [DONE]\n\n")
            await _send(writer, b"")
        except ConnectionError:
            self.disconnects += 1
        except asyncio.CancelledError:
            self.disconnects += 1  # server stopping: end quietly


def _response(status: int, ctype: str, data: bytes) -> bytes:
    return (
        f"HTTP/1.1 {status} X\r\ncontent-type: {ctype}\r\ncontent-length: {len(data)}\r\n\r\n"
    ).encode() + data


async def _send(writer: asyncio.StreamWriter, data: bytes) -> None:
    writer.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")
    await writer.drain()
