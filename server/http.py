"""HTTP on the WebSocket port: a route table of plain handlers, static files, JSON.

websockets hands every request to ``Router.__call__`` before the handshake: a
handler returns a ``Response`` (the request is answered and closed), or the
router returns None for the WebSocket paths (``/rooms/<room>``), so the
handshake goes on (426 without an Upgrade header).

Routes are ``(pattern, handler)``: a pattern is a path with ``{name}``
segments (``/api/rooms/{room}/transcript``); the handler gets the request and
the matched segments. Only GET and HEAD are routed (405 otherwise), except
coroutine routes (``add_async``) that name their methods; HEAD is answered as
GET without the body. The pages and their files are routes too
(``fablecast.server.pages``).
"""

from __future__ import annotations

import http
import inspect
import re
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from urllib.parse import parse_qs, urlsplit

import msgspec
from websockets.asyncio.server import ServerConnection
from websockets.datastructures import Headers
from websockets.http11 import Request, Response

#: A ``{name}`` segment of a pattern, as ``re.escape`` writes it.
_SEGMENT = re.compile(r"\\\{([a-z_]+)\\\}")
#: What a ``{name}`` segment matches: one path segment of safe characters.
_SEGMENT_CHARS = r"[A-Za-z0-9_.-]{1,128}"


@dataclass(frozen=True, slots=True)
class HttpRequest:
    """What a handler gets: method, path, query, headers and the matched segments."""

    method: str
    path: str
    query: Mapping[str, list[str]]
    headers: Headers
    params: Mapping[str, str]
    #: The client's IP address (None when unknown).
    remote: str | None = None

    def arg(self, name: str, default: str | None = None) -> str | None:
        """The first value of query parameter ``name``."""
        values = self.query.get(name)
        return values[0] if values else default


Handler = Callable[[HttpRequest], Response]
#: A handler that must await (the event log): routed with ``add_async``.
AsyncHandler = Callable[[HttpRequest], Awaitable[Response]]


@dataclass(frozen=True, slots=True)
class _Route:
    regex: re.Pattern[str]
    handler: Handler | AsyncHandler
    methods: tuple[str, ...] = ("GET", "HEAD")


class Router:
    """The node's HTTP routes; ``websocket_paths`` are left to the handshake."""

    def __init__(self, websocket_paths: re.Pattern[str]) -> None:
        self._ws = websocket_paths
        self._routes: list[_Route] = []

    def add(self, pattern: str, handler: Handler) -> None:
        """Route GET/HEAD ``pattern`` (``/a/{name}/b``; ``/static/{path*}`` for a tail)."""
        regex = re.escape(pattern).replace(r"\{path\*\}", "(?P<path>.*)")
        regex = _SEGMENT.sub(lambda mt: f"(?P<{mt.group(1)}>{_SEGMENT_CHARS})", regex)
        self._routes.append(_Route(re.compile(regex), handler))

    def add_async(
        self, pattern: str, handler: AsyncHandler, methods: tuple[str, ...] = ("GET", "HEAD")
    ) -> None:
        """Route ``pattern`` to a coroutine handler, for ``methods`` (a POST has no body:
        websockets reads none; arguments go in the query string)."""
        self.add(pattern, handler)  # type: ignore[arg-type]
        self._routes[-1] = _Route(self._routes[-1].regex, handler, methods)

    def __call__(
        self, connection: ServerConnection, request: Request
    ) -> Response | Awaitable[Response] | None:
        """websockets' ``process_request``: answer, or None to go on with the handshake."""
        parts = urlsplit(request.path)
        if self._ws.fullmatch(parts.path) or parts.path.startswith("/rooms/"):
            return None
        method = request.method
        for route in self._routes:
            match = route.regex.fullmatch(parts.path)
            if match is None:
                continue
            if method not in route.methods:
                resp = text_response(http.HTTPStatus.METHOD_NOT_ALLOWED, "method not allowed\n")
                resp.headers["Allow"] = ", ".join(route.methods)
                return resp
            peer = getattr(connection, "remote_address", None)
            req = HttpRequest(
                method,
                parts.path,
                parse_qs(parts.query),
                request.headers,
                match.groupdict(),
                remote=str(peer[0]) if peer else None,
            )
            out = route.handler(req)
            if inspect.isawaitable(out):
                return _awaited(out, method)
            resp = out
            if method == "HEAD":
                resp = Response(resp.status_code, resp.reason_phrase, resp.headers, b"")
            return resp
        return text_response(http.HTTPStatus.NOT_FOUND, "not found\n")


async def _awaited(out: Awaitable[Response], method: str) -> Response:
    resp = await out
    if method == "HEAD":
        resp = Response(resp.status_code, resp.reason_phrase, resp.headers, b"")
    return resp


def response(
    status: http.HTTPStatus,
    body: bytes,
    content_type: str,
    *,
    cache: str = "no-store",
    headers: Mapping[str, str] | None = None,
) -> Response:
    """A complete response with length, type and cache policy."""
    h = Headers()
    h["Content-Type"] = content_type
    h["Content-Length"] = str(len(body))
    h["Cache-Control"] = cache
    h["X-Content-Type-Options"] = "nosniff"
    for key, value in (headers or {}).items():
        h[key] = value
    return Response(status.value, status.phrase, h, body)


def text_response(status: http.HTTPStatus, text: str) -> Response:
    """A plain-text response (never cached)."""
    return response(status, text.encode(), "text/plain; charset=utf-8")


def json_response(body: object, status: http.HTTPStatus = http.HTTPStatus.OK) -> Response:
    """A JSON response (never cached)."""
    return response(status, msgspec.json.encode(body) + b"\n", "application/json")
