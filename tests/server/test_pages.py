"""server/pages.py: page routes, caching, CSP, path safety, vendor allowlist, /api/rooms."""

from __future__ import annotations

import asyncio
import json
import os
import urllib.request
from pathlib import Path

import pytest
from websockets.datastructures import Headers

from fablecast.inference.backends.scripted import ScriptedEngine
from fablecast.server import pages as pg
from fablecast.server.node import Node
from fablecast.server.room.effects import ReactionSent, ViewerJoined
from fablecast.server.room.state import Room, RoomSettings
from tests.integration.ws_harness import make_config


@pytest.fixture
def root(tmp_path: Path) -> Path:
    clients = tmp_path / "clients"
    web = clients / "web"
    (web / "static").mkdir(parents=True)
    for name in ("index.html", "watch.html", "overlay.html", "vr.html"):
        (web / name).write_text(f"<!doctype html><title>{name}</title>")
    (web / "static" / "site.css").write_text("body{}")
    (web / "static" / ".secret.js").write_text("no")
    (web / "static" / "notes.txt").write_text("no")
    js = clients / "js"
    (js / "node_modules" / "@msgpack" / "msgpack" / "dist.esm").mkdir(parents=True)
    (js / "node_modules" / "@msgpack" / "msgpack" / "dist.esm" / "index.mjs").write_text("x")
    (js / "node_modules" / "@msgpack" / "msgpack" / "package.json").write_text("{}")
    (js / "node_modules" / "left-pad" / "build").mkdir(parents=True)
    (js / "node_modules" / "left-pad" / "build" / "index.js").write_text("x")
    (js / "fablecast.js").write_text("export {}")
    (tmp_path / "outside.js").write_text("secret")
    os.symlink(tmp_path / "outside.js", web / "static" / "link.js")
    return clients


def get(pages: pg.Pages, path: str, **headers: str) -> tuple[int, Headers, bytes]:
    r = pages.respond(path, Headers(headers))
    assert r is not None, path
    return r.status_code, r.headers, r.body


def test_page_routes_serve_their_html_with_csp(root: Path) -> None:
    pages = pg.Pages(root)
    for path, name in [
        ("/", "index.html"),
        ("/watch/demo", "watch.html"),
        ("/watch/demo?codec=msgpack", "watch.html"),
        ("/overlay/my_room-2", "overlay.html"),
        ("/vr/demo/", "vr.html"),
    ]:
        status, h, body = get(pages, path)
        assert status == 200 and name.encode() in body, path
        assert h["Content-Type"] == "text/html; charset=utf-8"
        assert "script-src 'self'" in h["Content-Security-Policy"]
        assert "unsafe-inline" not in h["Content-Security-Policy"]
        assert h["X-Content-Type-Options"] == "nosniff"
    assert "frame-ancestors *" in get(pages, "/overlay/demo")[1]["Content-Security-Policy"]
    assert "frame-ancestors 'none'" in get(pages, "/watch/demo")[1]["Content-Security-Policy"]
    # Not page routes: the node's other routes (then 404) answer them.
    for path in ("/watch/", "/watch/a b", "/watch/" + "x" * 65, "/healthz", "/rooms/demo"):
        assert pages.respond(path, Headers()) is None, path


def test_etag_revalidation_and_a_changed_file(root: Path) -> None:
    pages = pg.Pages(root)
    status, h, body = get(pages, "/static/site.css")
    assert status == 200 and body == b"body{}" and h["Cache-Control"] == "no-cache"
    etag = h["ETag"]
    status, h2, body = get(pages, "/static/site.css", **{"If-None-Match": etag})
    assert status == 304 and body == b"" and h2["ETag"] == etag
    status, _, _ = get(pages, "/static/site.css", **{"If-None-Match": f'"other", W/{etag}'})
    assert status == 304
    (root / "web" / "static" / "site.css").write_text("body{color:red}")
    status, h3, body = get(pages, "/static/site.css", **{"If-None-Match": etag})
    assert status == 200 and body == b"body{color:red}" and h3["ETag"] != etag


@pytest.mark.parametrize(
    "path",
    [
        "/static/../watch.html",
        "/static/..%2fwatch.html",
        "/static/.secret.js",
        "/static/notes.txt",
        "/static/link.js",
        "/static/missing.css",
        "/static/sub/site.css",
        "/static/",
        "/js/node_modules/@msgpack/msgpack/package.json",
        "/js/node_modules/@msgpack/msgpack/dist.esm/../package.json",
        "/js/node_modules/left-pad/build/index.js",
        "/js/node_modules/three",
        "/js/../web/watch.html",
        "/static/site.css\x00.js",
    ],
)
def test_unsafe_or_unknown_paths_are_404(root: Path, path: str) -> None:
    status, h, body = get(pg.Pages(root), path)
    assert status == 404 and body == b"not found\n"
    assert "Content-Security-Policy" in h


def test_sdk_and_allowed_vendor_files(root: Path) -> None:
    pages = pg.Pages(root)
    status, h, _ = get(pages, "/js/node_modules/@msgpack/msgpack/dist.esm/index.mjs")
    assert status == 200 and h["Content-Type"] == "text/javascript; charset=utf-8"
    assert get(pages, "/js/fablecast.js")[0] == 200


def test_without_files_the_pages_say_how_to_install_them() -> None:
    status, _, body = get(pg.Pages(None), "/watch/demo")
    assert status == 503 and b"web_root" in body and b"npm ci" in body


def test_the_checkout_has_its_pages() -> None:
    root = pg.default_root()
    assert root is not None and (root / "web" / "watch.html").is_file()


def test_room_summary() -> None:
    room = Room("demo", RoomSettings(title="The Lantern Market"))
    room.handle(ViewerJoined("p1"), now=0.0)
    room.handle(ViewerJoined("p2"), now=0.0)
    for _ in range(3):
        room.handle(ReactionSent("p1", reaction="fear", valence=None, arousal=None), now=1.0)
    s = pg.summarize(room, now=1.0)
    assert (s.name, s.title, s.audience) == ("demo", "The Lantern Market", 2)
    assert s.phase in ("narrating", "paused") and s.mood.top == "fear" and s.mood.valence < 0
    body = json.loads(pg.rooms_response([s]).body)
    assert body["rooms"][0]["audience"] == 2 and body["rooms"][0]["mood"]["top"] == "fear"


@pytest.mark.integration
async def test_a_node_serves_pages_and_the_room_list() -> None:
    node = Node(make_config(), engine=ScriptedEngine(tokens_per_s=200, first_token_s=0.01))
    await node.start()
    try:

        def fetch(path: str, accept: str = "*/*") -> tuple[int, dict[str, str], bytes]:
            req = urllib.request.Request(
                f"http://127.0.0.1:{node.port}{path}", headers={"Accept": accept}
            )
            try:
                with urllib.request.urlopen(req, timeout=5) as r:
                    return r.status, dict(r.headers), r.read()
            except urllib.error.HTTPError as e:
                return e.code, dict(e.headers), e.read()

        status, h, body = await asyncio.to_thread(fetch, "/watch/demo")
        assert status == 200 and b'src="/static/watch.js"' in body
        assert "Content-Security-Policy" in h and "ETag" in h
        status, _, body = await asyncio.to_thread(fetch, "/api/rooms")
        rooms = json.loads(body)["rooms"]
        assert status == 200 and [r["name"] for r in rooms] == ["demo"]
        status, _, body = await asyncio.to_thread(fetch, "/", "text/html,*/*")
        assert status == 200 and b"/static/home.js" in body
        status, _, body = await asyncio.to_thread(fetch, "/")  # curl: the plain-text list
        assert status == 200 and b"/rooms/demo" in body
        status, _, _ = await asyncio.to_thread(fetch, "/static/../../server/node.py")
        assert status == 404
    finally:
        await node.stop()
