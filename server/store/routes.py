"""HTTP routes of the event log (docs/store.md):

- ``GET  /api/rooms/{room}/transcript?format=md|json`` the story so far, from the log
  (any room the log holds, open or not), Markdown by default;
- ``POST /api/rooms/{room}/rewind?beat=N`` rewind an open room (every viewer
  gets one ``rewind`` frame; later beats become a branch); ``{room, beat, branch}``;
- ``POST /api/rooms/{room}/fork?beat=N[&name=NEW]`` a new room that starts as
  ``room`` did up to beat N, opened at once: 201 ``{room, beat, url}``.

A POST carries no body (websockets reads none): arguments are in the query.

Errors are JSON ``{"code", "message"}``: ``unknown_beat`` (400) for a beat the
room has not committed, ``invalid_message`` (400) for a malformed argument,
404 for an unknown room, 503 when the log is off or down. Rewind and fork
change what everyone sees: until roles land (auth), they are accepted only
from the node's own host (loopback), 403 otherwise.
"""

from __future__ import annotations

import http
import ipaddress
import logging
import re
from typing import TYPE_CHECKING

from websockets.http11 import Response

from fablecast.protocol.codes import ErrorCode
from fablecast.server.http import HttpRequest, Router, json_response, response
from fablecast.server.rooms import RoomError
from fablecast.server.store.base import StoreError
from fablecast.server.store.story import transcript_json, transcript_markdown

if TYPE_CHECKING:
    from fablecast.server.node import Node

log = logging.getLogger(__name__)

_NAME = re.compile(r"[A-Za-z0-9_-]{1,64}")


class StoreRoutes:
    """The handlers, bound to a node."""

    def __init__(self, node: Node) -> None:
        self.node = node

    def add_to(self, router: Router) -> None:
        """Register the routes."""
        router.add_async("/api/rooms/{room}/transcript", self.transcript)
        router.add_async("/api/rooms/{room}/rewind", self.rewind, ("POST",))
        router.add_async("/api/rooms/{room}/fork", self.fork, ("POST",))

    async def transcript(self, req: HttpRequest) -> Response:
        """``GET /api/rooms/{room}/transcript``."""
        archive = self.node.archive
        if archive is None:
            return _error(http.HTTPStatus.SERVICE_UNAVAILABLE, "store_off", "the event log is off")
        fmt = req.arg("format", "md")
        if fmt not in ("md", "json"):
            return _error(
                http.HTTPStatus.BAD_REQUEST,
                ErrorCode.INVALID_MESSAGE,
                f"format must be md or json, not {fmt!r}",
            )
        room = req.params["room"]
        try:
            img = await archive.image(room)
        except StoreError as exc:
            return _error(http.HTTPStatus.SERVICE_UNAVAILABLE, "store_down", str(exc))
        if not img.exists:
            return _error(http.HTTPStatus.NOT_FOUND, "room_not_found", f"no room {room!r}")
        if fmt == "json":
            return json_response(transcript_json(img))
        return response(
            http.HTTPStatus.OK, transcript_markdown(img).encode(), "text/markdown; charset=utf-8"
        )

    async def rewind(self, req: HttpRequest) -> Response:
        """``POST /api/rooms/{room}/rewind?beat=N``."""
        refused = self._refuse(req)
        if refused is not None:
            return refused
        beat = _beat(req)
        if isinstance(beat, Response):
            return beat
        room = req.params["room"]
        runner = self.node.rooms.get(room)
        if runner is None:
            return _error(http.HTTPStatus.NOT_FOUND, "room_not_found", f"no open room {room!r}")
        assert self.node.archive is not None
        from fablecast.server.store.archive import BadBeat

        try:
            body = await self.node.archive.rewind(runner, beat)
        except BadBeat as exc:
            return _error(http.HTTPStatus.BAD_REQUEST, ErrorCode.UNKNOWN_BEAT, str(exc))
        except StoreError as exc:
            return _error(http.HTTPStatus.SERVICE_UNAVAILABLE, "store_down", str(exc))
        log.info("room %s rewound to beat %d (branch %d)", room, beat, body["branch"])
        return json_response(body)

    async def fork(self, req: HttpRequest) -> Response:
        """``POST /api/rooms/{room}/fork?beat=N[&name=NEW]``."""
        refused = self._refuse(req)
        if refused is not None:
            return refused
        beat = _beat(req)
        if isinstance(beat, Response):
            return beat
        name = req.arg("name")
        if name is not None and not _NAME.fullmatch(name):
            return _error(
                http.HTTPStatus.BAD_REQUEST,
                ErrorCode.INVALID_MESSAGE,
                "name must be 1-64 of A-Z a-z 0-9 _ -",
            )
        from fablecast.server.store.archive import BadBeat, UnknownRoom

        node, archive = self.node, self.node.archive
        assert archive is not None
        room = req.params["room"]
        if len(node.rooms) >= node.config.server.max_rooms:  # before anything is logged
            return _error(http.HTTPStatus.CONFLICT, ErrorCode.REJECTED, "max_rooms reached")
        try:
            rc = await archive.fork(room, beat, name, lambda n: n in node.rooms)
            await node.open_room_logged(rc)
        except UnknownRoom:
            return _error(http.HTTPStatus.NOT_FOUND, "room_not_found", f"no room {room!r}")
        except BadBeat as exc:
            return _error(http.HTTPStatus.BAD_REQUEST, ErrorCode.UNKNOWN_BEAT, str(exc))
        except (RoomError, ValueError) as exc:
            return _error(http.HTTPStatus.CONFLICT, ErrorCode.REJECTED, str(exc))
        except StoreError as exc:
            return _error(http.HTTPStatus.SERVICE_UNAVAILABLE, "store_down", str(exc))
        host = req.headers.get("Host", f"127.0.0.1:{node.port}")
        log.info("room %s forked from %s at beat %d", rc.name, room, beat)
        return json_response(
            {"room": rc.name, "beat": beat, "url": f"ws://{host}/rooms/{rc.name}"},
            http.HTTPStatus.CREATED,
        )

    def _refuse(self, req: HttpRequest) -> Response | None:
        if self.node.archive is None:
            return _error(http.HTTPStatus.SERVICE_UNAVAILABLE, "store_off", "the event log is off")
        try:
            local = req.remote is not None and ipaddress.ip_address(req.remote).is_loopback
        except ValueError:
            local = False
        if not local:
            return _error(
                http.HTTPStatus.FORBIDDEN, ErrorCode.REJECTED, "rewind and fork: loopback only"
            )
        return None


def _beat(req: HttpRequest) -> int | Response:
    raw = req.arg("beat")
    if raw is None or not raw.isdigit() or len(raw) > 9:
        return _error(
            http.HTTPStatus.BAD_REQUEST,
            ErrorCode.INVALID_MESSAGE,
            "beat must be a whole number (?beat=N)",
        )
    return int(raw)


def _error(status: http.HTTPStatus, code: str, message: str) -> Response:
    return json_response({"code": str(code), "message": message}, status)
