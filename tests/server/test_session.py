"""server/session.py: the fragment sweep and the request screen, without sockets."""

from __future__ import annotations

from types import SimpleNamespace

from fablecast.protocol.codes import CloseCode
from fablecast.server.session import _BODY, ConnectionGuard


class FakeSession:
    def __init__(self) -> None:
        self.ws = SimpleNamespace(protocol=SimpleNamespace(current_size=None))
        self.closed = False
        self.codes: list[CloseCode] = []

    def close(self, code: CloseCode, reason: str) -> None:
        self.closed = True
        self.codes.append(code)


def test_a_fragment_left_unfinished_past_the_timeout_is_closed_once() -> None:
    guard = ConnectionGuard(timeout_s=10.0)
    idle, slow, finishing = FakeSession(), FakeSession(), FakeSession()
    for s in (idle, slow, finishing):
        guard.add(s)  # type: ignore[arg-type]
    slow.ws.protocol.current_size = 100
    finishing.ws.protocol.current_size = 100
    assert guard.sweep(0.0) == []
    finishing.ws.protocol.current_size = None  # its final fragment came
    assert guard.sweep(9.9) == []
    finishing.ws.protocol.current_size = 5  # a new message starts: a new clock
    assert guard.sweep(10.0) == [slow]
    assert slow.codes == [CloseCode.PROTOCOL_ERROR]
    assert guard.sweep(19.9) == [] and guard.sweep(20.0) == [finishing]
    assert guard.sweep(100.0) == []  # closed sessions are not closed again
    assert idle.codes == [] and slow.codes == [CloseCode.PROTOCOL_ERROR]
    for s in (idle, slow, finishing):
        guard.discard(s)  # type: ignore[arg-type]
    assert not guard.sessions


def test_requests_announcing_a_body_are_recognised() -> None:
    assert _BODY.search(b"GET / HTTP/1.1\r\nHost: x\r\nContent-Length: 5")
    assert _BODY.search(b"GET / HTTP/1.1\r\ncontent-length:\t12")
    assert _BODY.search(b"GET / HTTP/1.1\r\nTransfer-Encoding: chunked")
    assert not _BODY.search(b"GET / HTTP/1.1\r\nHost: x\r\nContent-Length: 0")
    assert not _BODY.search(b"GET / HTTP/1.1\r\nHost: x\r\nContent-Length: 000")
    assert not _BODY.search(b"GET / HTTP/1.1\r\nX-Content-Length: 5")
