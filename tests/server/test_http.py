"""server/http.py Router: routes by pattern, GET/HEAD only, WebSocket paths go to the handshake."""

from __future__ import annotations

import http
import re

from websockets.datastructures import Headers
from websockets.http11 import Request, Response

from fablecast.server.http import HttpRequest, Router, json_response, text_response

WS = re.compile(r"/rooms/([A-Za-z0-9_-]{1,64})")


def router() -> Router:
    r = Router(WS)
    r.add("/healthz", lambda req: text_response(http.HTTPStatus.OK, "ok\n"))
    r.add(
        "/api/rooms/{room}/transcript",
        lambda req: json_response({"room": req.params["room"], "format": req.arg("format")}),
    )
    r.add("/static/{path*}", lambda req: text_response(http.HTTPStatus.OK, req.params["path"]))
    return r


def call(r: Router, path: str, method: str = "GET") -> Response | None:
    return r(None, Request(path, Headers(), method=method))  # type: ignore[arg-type]


def test_routes_match_segments_and_query() -> None:
    resp = call(router(), "/api/rooms/demo/transcript?format=md")
    assert resp is not None and resp.status_code == 200
    assert resp.body == b'{"room":"demo","format":"md"}\n'
    assert resp.headers["Content-Type"] == "application/json"


def test_a_segment_is_one_safe_path_segment() -> None:
    assert call(router(), "/api/rooms/a/b/transcript").status_code == 404  # type: ignore[union-attr]
    assert call(router(), "/api/rooms/%3Cx%3E/transcript").status_code == 404  # type: ignore[union-attr]


def test_tail_pattern() -> None:
    resp = call(router(), "/static/css/site.css")
    assert resp is not None and resp.body == b"css/site.css"


def test_unknown_path_is_404() -> None:
    resp = call(router(), "/nope")
    assert resp is not None and resp.status_code == 404


def test_only_get_and_head() -> None:
    resp = call(router(), "/healthz", "POST")
    assert resp is not None and resp.status_code == 405 and resp.headers["Allow"] == "GET, HEAD"
    head = call(router(), "/healthz", "HEAD")
    assert head is not None and head.status_code == 200 and head.body == b""
    assert head.headers["Content-Length"] == "3"


def test_websocket_paths_go_on_to_the_handshake() -> None:
    assert call(router(), "/rooms/demo") is None
    assert call(router(), "/rooms/bad name") is None  # the handshake answers it (4003)


def test_request_arg_default() -> None:
    req = HttpRequest("GET", "/", {}, Headers(), {})
    assert req.arg("x", "d") == "d"
