"""The web pages of a node: home, audience, overlay and VR pages, the JS SDK, vendor files.

``install(router, ...)`` adds these routes to the node's route table
(server/http.py). ``Pages.respond(path, headers)`` is the whole contract: a
request path (query string allowed) and its headers in, an HTTP response out,
or ``None`` when the path is not a page route. It does no I/O but reading files
under its root, and keeps what it read in memory, keyed by each file's size and
mtime, so a file edited on disk is served fresh; each page has its CSP, and only
listed file types and npm packages are served, never a dot file.

Routes (``ROUTES`` below is the table; a room name is ``[A-Za-z0-9_-]{1,64}``;
a new page, e.g. a dashboard, is one HTML file in clients/web/, one row in
``ROUTES`` and its router pattern in ``PATTERNS``; its script imports
``/static/common.js`` and ``/js/fablecast.js`` like the others):

- ``/``, ``/watch/<room>``, ``/overlay/<room>``, ``/vr/<room>``: the pages'
  HTML (clients/web/*.html). The page reads its room from its own URL.
- ``/static/<file>``: the pages' CSS and JS (clients/web/static/).
- ``/js/<file>``: the JS SDK (clients/js/*.js, *.d.ts).
- ``/js/node_modules/<package>/<dir>/<file>``: files of the npm packages the
  pages load (``VENDOR``: @msgpack/msgpack's ES build, three.js's build), as
  installed by ``npm ci`` in clients/js (the Makefile's ``web`` target). They
  are never copied into the repository. Only the listed directories of the
  listed packages are served.

Caching: every response carries a strong ``ETag`` (a SHA-256 prefix of the
bytes) and ``Cache-Control: no-cache``: browsers keep the file and revalidate
it, a matching ``If-None-Match`` is answered 304 with no body. The pages are
few and small, so a revalidation per load costs one round trip and never
serves a stale SDK after an upgrade (content-hashed names would need a build
step, which the pages do not have).

Security: every response has ``Content-Security-Policy`` (``CSP``: scripts,
styles, images and fonts from this origin only, WebSocket and fetch to this
origin only, no inline scripts or styles, no plugins, no framing except the
overlay, which OBS and stream tools embed), ``X-Content-Type-Options: nosniff``
and ``Referrer-Policy: no-referrer``. A path is resolved and must stay under its
directory (no ``..``, no symlink out, no dot files, only known file types):
anything else is 404, never an error or a traceback.

Where the files are: ``root`` is the repository's ``clients/`` folder (found
beside the ``fablecast`` package in a source checkout or an editable install).
A wheel does not carry it: set ``[server] web_root`` to a copy of ``clients/``
with ``npm ci`` run in ``clients/js`` (the Docker image does this). Without
it, the pages answer 503 with that explanation; WebSocket rooms work as before.
"""

from __future__ import annotations

import hashlib
import http
import os
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

import msgspec
from websockets.datastructures import Headers
from websockets.http11 import Response

import fablecast
from fablecast.protocol import messages as m
from fablecast.server.http import Handler, HttpRequest, Router
from fablecast.server.room.state import Room

#: The Content-Security-Policy of every page (see the module docstring).
CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data: blob:; "
    "font-src 'self'; connect-src 'self'; media-src 'self'; manifest-src 'self'; "
    "base-uri 'none'; form-action 'none'; object-src 'none'; frame-ancestors 'none'"
)
#: The overlay is embedded by stream tools (OBS browser sources, web dashboards).
CSP_OVERLAY = CSP.replace("frame-ancestors 'none'", "frame-ancestors *")

#: npm packages' directories served under /js/node_modules/ (package -> directories).
VENDOR: dict[str, tuple[str, ...]] = {
    "@msgpack/msgpack": ("dist.esm",),
    "three": ("build",),
}

_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".mjs": "text/javascript; charset=utf-8",
    ".ts": "text/plain; charset=utf-8",
    ".json": "application/json",
    ".svg": "image/svg+xml",
    ".png": "image/png",
    ".ico": "image/x-icon",
    ".woff2": "font/woff2",
}

ROOM = r"[A-Za-z0-9_-]{1,64}"
#: Page routes: URL pattern -> (HTML file under web/, CSP).
ROUTES: tuple[tuple[re.Pattern[str], str, str], ...] = (
    (re.compile(r"/"), "index.html", CSP),
    (re.compile(rf"/watch/{ROOM}/?"), "watch.html", CSP),
    (re.compile(rf"/overlay/{ROOM}/?"), "overlay.html", CSP_OVERLAY),
    (re.compile(rf"/vr/{ROOM}/?"), "vr.html", CSP),
    # The moderator dashboard: the page is public, every action on it needs a
    # moderator's token and is authorized by the room (docs/moderation.md).
    (re.compile(r"/dashboard/?"), "dashboard.html", CSP),
)
#: The router patterns of the pages' files (``ROUTES`` checks the room names).
PATTERNS = (
    "/watch/{room}",
    "/overlay/{room}",
    "/vr/{room}",
    "/dashboard",
    "/static/{path*}",
    "/js/{path*}",
)
_SAFE_PART = re.compile(r"[A-Za-z0-9_@][A-Za-z0-9_.@-]*")


def default_root() -> Path | None:
    """The source tree's ``clients/`` folder, when this is a checkout; else None."""
    pkg = Path(fablecast.__file__).resolve().parent  # clients/python/fablecast
    root = pkg.parent.parent
    return root if (root / "web" / "watch.html").is_file() else None


@dataclass(frozen=True, slots=True)
class _File:
    key: tuple[int, int]  # (size, mtime_ns)
    body: bytes
    etag: str


class Pages:
    """Serves the pages, the SDK and the vendor files under ``root`` (see the module doc)."""

    def __init__(self, root: Path | None) -> None:
        self.root = root.resolve() if root is not None else None
        self._cache: dict[Path, _File] = {}

    def respond(self, target: str, headers: Headers) -> Response | None:
        """The response to GET ``target``, or None when it is not a page route."""
        path = target.split("?", 1)[0].split("#", 1)[0]
        for pattern, name, csp in ROUTES:
            if pattern.fullmatch(path):
                return self._file(("web", name), headers, csp)
        for prefix, base in (("/static/", ("web", "static")), ("/js/", ("js",))):
            if path.startswith(prefix):
                parts = path[len(prefix) :].split("/")
                if base == ("js",) and parts[0] == "node_modules":
                    if not _vendor_allowed(parts[1:]):
                        return _not_found()
                elif len(parts) != 1:
                    return _not_found()
                return self._file((*base, *parts), headers, CSP)
        return None

    def _file(self, parts: tuple[str, ...], headers: Headers, csp: str) -> Response:
        if self.root is None:
            return _plain(
                http.HTTPStatus.SERVICE_UNAVAILABLE,
                "web pages not installed: set [server] web_root to a copy of the repository's "
                "clients/ folder with `npm ci` run in clients/js (docs/configuration.md)\n",
            )
        if not all(_SAFE_PART.fullmatch(p) for p in parts) or ".." in parts:
            return _not_found()
        ctype = _TYPES.get(os.path.splitext(parts[-1])[1])
        if ctype is None:
            return _not_found()
        path = self.root.joinpath(*parts)
        try:
            real = path.resolve(strict=True)
            if not real.is_relative_to(self.root) or not real.is_file():
                return _not_found()
            f = self._read(real)
        except OSError:
            return _not_found()
        h = Headers()
        h["Content-Type"] = ctype
        h["ETag"] = f.etag
        h["Cache-Control"] = "no-cache"
        _security(h, csp)
        if f.etag in _etags(headers.get("If-None-Match", "")):
            h["Content-Length"] = "0"
            return Response(304, "Not Modified", h, b"")
        h["Content-Length"] = str(len(f.body))
        return Response(200, "OK", h, f.body)

    def _read(self, path: Path) -> _File:
        st = path.stat()
        key = (st.st_size, st.st_mtime_ns)
        cached = self._cache.get(path)
        if cached is not None and cached.key == key:
            return cached
        body = path.read_bytes()
        f = _File(key, body, '"' + hashlib.sha256(body).hexdigest()[:32] + '"')
        self._cache[path] = f
        return f


class MoodSummary(msgspec.Struct, kw_only=True):
    """A room's mood for the room list: mean valence/arousal and its strongest reaction."""

    valence: float
    arousal: float
    intensity: float
    top: str | None


class RoomSummary(msgspec.Struct, kw_only=True):
    """One entry of ``GET /api/rooms`` (docs/protocol.md, "HTTP")."""

    name: str
    title: str
    audience: int
    phase: str
    reason: str | None
    narrator: str
    beat: int
    mood: MoodSummary


def summarize(room: Room, now: float) -> RoomSummary:
    """The list entry of ``room`` at wall-clock time ``now`` (pure)."""
    frame = room.state_frame("mood", now)
    assert isinstance(frame, m.Mood)
    top = max(frame.reactions.items(), key=lambda kv: kv[1])[0] if frame.reactions else None
    return RoomSummary(
        name=room.name,
        title=room.settings.title,
        audience=room.viewer_count,
        phase=room.phase.value,
        reason=room.reason,
        narrator=room.narrator,
        beat=room.beat,
        mood=MoodSummary(
            valence=round(frame.valence, 3),
            arousal=round(frame.arousal, 3),
            intensity=round(frame.intensity, 2),
            top=top,
        ),
    )


def rooms_response(rooms: list[RoomSummary]) -> Response:
    """``GET /api/rooms``: ``{"rooms": [...]}``, never cached."""
    body = msgspec.json.encode({"rooms": rooms}) + b"\n"
    h = Headers()
    h["Content-Type"] = "application/json"
    h["Content-Length"] = str(len(body))
    h["Cache-Control"] = "no-store"
    _security(h, CSP)
    return Response(200, "OK", h, body)


def _vendor_allowed(parts: list[str]) -> bool:
    # @scope/name/dir/file... or name/dir/file...
    if parts and parts[0].startswith("@"):
        package, rest = "/".join(parts[:2]), parts[2:]
    else:
        package, rest = (parts[0] if parts else ""), parts[1:]
    dirs = VENDOR.get(package)
    return dirs is not None and len(rest) >= 2 and rest[0] in dirs


def _etags(header: str) -> set[str]:
    return {t.strip().removeprefix("W/") for t in header.split(",") if t.strip()}


def _security(h: Headers, csp: str) -> None:
    h["Content-Security-Policy"] = csp
    h["X-Content-Type-Options"] = "nosniff"
    h["Referrer-Policy"] = "no-referrer"
    h["Permissions-Policy"] = "xr-spatial-tracking=(self), camera=(), microphone=(), geolocation=()"


def _plain(status: http.HTTPStatus, text: str) -> Response:
    body = text.encode()
    h = Headers()
    h["Content-Type"] = "text/plain; charset=utf-8"
    h["Content-Length"] = str(len(body))
    h["Cache-Control"] = "no-store"
    _security(h, CSP)
    return Response(status.value, status.phrase, h, body)


def _not_found() -> Response:
    return _plain(http.HTTPStatus.NOT_FOUND, "not found\n")


def install(
    router: Router,
    rooms: Callable[[], Iterable[Room]],
    clock: Callable[[], float],
    root: Path | None,
    index: Handler,
) -> Pages:
    """Add the page routes and ``GET /api/rooms`` to a node's ``router``.

    ``/`` is the home page for browsers (``Accept`` names ``text/html``); other
    clients (curl, probes) get ``index``, the node's plain-text room list.
    ``rooms`` lists the node's rooms and ``clock`` is its wall clock (mood decay).
    """
    pages = Pages(root)

    def page(req: HttpRequest) -> Response:
        resp = pages.respond(req.path, req.headers)
        return resp if resp is not None else _not_found()

    def home(req: HttpRequest) -> Response:
        return page(req) if "text/html" in req.headers.get("Accept", "") else index(req)

    def room_list(req: HttpRequest) -> Response:
        now = clock()
        return rooms_response([summarize(room, now) for room in rooms()])

    router.add("/api/rooms", room_list)
    router.add("/", home)
    for pattern in PATTERNS:
        router.add(pattern, page)
    return pages
