"""A node that also serves the web pages (server/pages.py).

Until the node's HTTP route table (server/http.py) exists, the pages are
added by overriding the node's one HTTP hook: page routes and ``/api/rooms``
first, then the node's own routes (probes, metrics, plain-text room list).
"""

from __future__ import annotations

from pathlib import Path

from websockets.asyncio.server import ServerConnection
from websockets.http11 import Request, Response

from fablecast.inference.engine import EngineClient
from fablecast.server.config import Config
from fablecast.server.node import Node
from fablecast.server.pages import Pages, default_root, route


class WebNode(Node):
    """A ``Node`` with the pages of ``web_root`` (default: the checkout's clients/)."""

    def __init__(
        self,
        config: Config | None = None,
        engine: EngineClient | None = None,
        web_root: Path | None = None,
    ) -> None:
        super().__init__(config, engine)
        configured = self.config.server.web_root
        self.pages = Pages(web_root or (Path(configured) if configured else default_root()))

    def _http(self, connection: ServerConnection, request: Request) -> Response | None:
        response = route(
            self.pages, lambda: [r.room for r in self.rooms.values()], request.path, request.headers
        )
        return response if response is not None else super()._http(connection, request)
