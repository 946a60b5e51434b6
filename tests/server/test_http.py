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


async def test_coroutine_routes_name_their_methods_and_see_the_peer() -> None:
    async def handler(req: HttpRequest) -> Response:
        return json_response({"method": req.method, "remote": req.remote, "beat": req.arg("beat")})

    r = Router(WS)
    r.add_async("/api/rooms/{room}/rewind", handler, ("POST",))

    class Peer:
        remote_address = ("127.0.0.1", 5555)

    get = r(Peer(), Request("/api/rooms/demo/rewind", Headers(), method="GET"))  # type: ignore[arg-type]
    assert isinstance(get, Response) and get.status_code == 405 and get.headers["Allow"] == "POST"
    post = r(Peer(), Request("/api/rooms/demo/rewind?beat=2", Headers(), method="POST"))  # type: ignore[arg-type]
    assert post is not None and not isinstance(post, Response)
    resp = await post
    assert resp.body == b'{"method":"POST","remote":"127.0.0.1","beat":"2"}\n'
