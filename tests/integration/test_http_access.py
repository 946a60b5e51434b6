"""HTTP on the node's port as an attacker sees it: methods, bodies, pipelining, Host, /metrics."""

from __future__ import annotations

import asyncio
import logging
import urllib.error
import urllib.request
from collections.abc import AsyncIterator
from types import SimpleNamespace

import pytest

from fablecast.inference.backends.scripted import ScriptedEngine
from fablecast.server.config import AuthConfig
from fablecast.server.node import Node
from tests.integration.ws_harness import make_config
from tests.support import scaled

pytestmark = pytest.mark.integration

UPGRADE = (
    b"Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\n"
    b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
)


async def raw(port: int, request: bytes) -> bytes:
    """Send ``request`` as is; everything the server answers before it closes."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(request)
    await writer.drain()
    try:
        async with asyncio.timeout(scaled(3)):
            return await reader.read()
    finally:
        writer.close()


def status(response: bytes) -> int:
    return int(response.split(b" ", 2)[1])


@pytest.fixture
async def node() -> AsyncIterator[Node]:
    n = Node(make_config(), engine=ScriptedEngine())
    await n.start()
    yield n
    await n.stop()


@pytest.mark.parametrize("method", [b"TRACE", b"CONNECT", b"FOO", b"POST", b"PUT", b"DELETE"])
@pytest.mark.parametrize("path", [b"/", b"/healthz", b"/metrics", b"/rooms/demo"])
async def test_only_get_and_head(node: Node, method: bytes, path: bytes) -> None:
    extra = UPGRADE if path.startswith(b"/rooms/") else b""
    response = await raw(
        node.port, method + b" " + path + b" HTTP/1.1\r\nHost: x\r\n" + extra + b"\r\n"
    )
    assert status(response) == 405
    assert b"\r\nAllow: GET" in response


@pytest.mark.parametrize("path", [b"/rooms", b"/nope/demo", b"/rooms-demo"])
async def test_paths_outside_rooms_are_404(node: Node, path: bytes) -> None:
    response = await raw(
        node.port, b"GET " + path + b" HTTP/1.1\r\nHost: x\r\n" + UPGRADE + b"\r\n"
    )
    assert status(response) == 404


async def test_host_is_not_reflected(node: Node) -> None:
    response = await raw(node.port, b"GET / HTTP/1.1\r\nHost: <script>x</script>\r\n\r\n")
    assert status(response) == 200
    assert b"<script>" not in response and b"/rooms/demo" in response


@pytest.mark.parametrize(
    "head",
    [
        b"POST /healthz HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello",
        b"GET /healthz HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello",
        b"GET /healthz HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n",
        b"GET /rooms/demo HTTP/1.1\r\nHost: x\r\n" + UPGRADE + b"Content-Length: 3\r\n\r\nabc",
    ],
)
async def test_bodies_are_answered_400_without_a_traceback(
    node: Node, head: bytes, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    response = await raw(node.port, head)
    assert status(response) == 400 and response.endswith(b"requests with a body are not accepted\n")
    assert not _logged(caplog)


async def test_pipelined_requests_get_one_answer_and_no_error(
    node: Node, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    one = b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n"
    response = await raw(node.port, one * 3)
    assert response.count(b"HTTP/1.1 ") == 1 and status(response) == 200
    await asyncio.sleep(0.1)
    assert not _logged(caplog)


def _logged(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    """Records an operator would see: warnings and errors, or tracebacks above DEBUG."""
    return [
        r
        for r in caplog.records
        if r.levelno >= logging.WARNING or (r.exc_info and r.levelno > logging.DEBUG)
    ]


def _peer(host: str) -> SimpleNamespace:
    return SimpleNamespace(remote_address=(host, 40000))


def _request(headers: dict[str, str]) -> SimpleNamespace:
    from websockets.datastructures import Headers

    return SimpleNamespace(path="/metrics", method="GET", headers=Headers(headers))


async def test_metrics_default_to_loopback_only(node: Node) -> None:
    assert node._metrics_refusal(_peer("127.0.0.1"), _request({})) is None  # type: ignore[arg-type]
    assert node._metrics_refusal(_peer("::1"), _request({})) is None  # type: ignore[arg-type]
    refused = node._metrics_refusal(_peer("203.0.113.9"), _request({}))  # type: ignore[arg-type]
    assert refused is not None and refused.status_code == 403
    url = f"http://127.0.0.1:{node.port}/metrics"
    with await asyncio.to_thread(urllib.request.urlopen, url) as resp:
        assert b"fablecast_refused" in resp.read()


async def test_metrics_behind_a_bearer_token() -> None:
    config = make_config()
    config.auth = AuthConfig(metrics_token="s3cret")
    n = Node(config, engine=ScriptedEngine())
    await n.start()
    try:
        url = f"http://127.0.0.1:{n.port}/metrics"
        with pytest.raises(urllib.error.HTTPError) as info:
            await asyncio.to_thread(urllib.request.urlopen, url)
        assert info.value.code == 401
        wrong = urllib.request.Request(url, headers={"Authorization": "Bearer nope"})
        with pytest.raises(urllib.error.HTTPError):
            await asyncio.to_thread(urllib.request.urlopen, wrong)
        right = urllib.request.Request(url, headers={"Authorization": "Bearer s3cret"})
        with await asyncio.to_thread(urllib.request.urlopen, right) as resp:
            assert resp.status == 200
    finally:
        await n.stop()


async def test_metrics_on_their_own_listener() -> None:
    config = make_config()
    config.auth = AuthConfig(metrics_port=0)
    n = Node(config, engine=ScriptedEngine())
    await n.start()
    try:
        with pytest.raises(urllib.error.HTTPError) as info:
            await asyncio.to_thread(urllib.request.urlopen, f"http://127.0.0.1:{n.port}/metrics")
        assert info.value.code == 404
        url = f"http://127.0.0.1:{n.metrics_port}/metrics"
        with await asyncio.to_thread(urllib.request.urlopen, url) as resp:
            assert resp.status == 200 and b"fablecast_connections" in resp.read()
        with pytest.raises(urllib.error.HTTPError) as info:
            await asyncio.to_thread(urllib.request.urlopen, f"http://127.0.0.1:{n.metrics_port}/")
        assert info.value.code == 404
    finally:
        await n.stop()
