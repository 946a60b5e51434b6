"""``fablecast transcript`` and ``fablecast room rewind|fork``: the event log from the command line.

``transcript`` reads the log itself (``--store`` / ``--data-dir``, as ``serve``
takes them; SQLite in WAL mode lets it read while a node writes), or asks a
running node (``--node http://host:port``). ``room rewind`` and ``room fork``
ask a running node (they change what its viewers see), from its own host.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import urllib.error
import urllib.request
from typing import Any

from fablecast.server.store import StoreError, log_for_url
from fablecast.server.store.story import fold, transcript_json, transcript_markdown


def register(sub: Any) -> None:
    """Add ``transcript`` and ``room`` to the ``fablecast`` command."""
    p = sub.add_parser("transcript", help="a room's story so far, from the event log")
    p.add_argument("room")
    p.add_argument("--format", choices=("md", "json"), default="md")
    p.add_argument("--node", help="ask this running node (http://host:port) instead")
    p.add_argument("--store", default="", help="event log URL (as [store] url)")
    p.add_argument("--data-dir", default="data", help="event log folder (default ./data)")
    p.add_argument("-o", "--output", help="write to this file (default: stdout)")
    p.set_defaults(func=transcript)

    room = sub.add_parser("room", help="rewind or fork a room of a running node")
    actions = room.add_subparsers(dest="action", required=True, metavar="ACTION")
    rw = actions.add_parser("rewind", help="rewind ROOM to BEAT (later beats kept as a branch)")
    fk = actions.add_parser("fork", help="a new room from ROOM's BEAT, with its own URL")
    for q in (rw, fk):
        q.add_argument("room")
        q.add_argument("beat", type=int)
        q.add_argument("--node", default="http://127.0.0.1:8765", help="the node's HTTP URL")
    fk.add_argument("--name", help="the new room's name (default: generated)")
    rw.set_defaults(func=lambda a: _post(a, f"/api/rooms/{a.room}/rewind?beat={a.beat}"))
    fk.set_defaults(
        func=lambda a: _post(
            a,
            f"/api/rooms/{a.room}/fork?beat={a.beat}" + (f"&name={a.name}" if a.name else ""),
        )
    )


def transcript(args: argparse.Namespace) -> int:
    """Print (or write) the transcript; exit 1 when the room or the log cannot be read."""
    if args.node:
        status, body = _http(
            "GET", f"{args.node}/api/rooms/{args.room}/transcript?format={args.format}"
        )
        if status != 200:
            print(f"fablecast transcript: {body.decode(errors='replace').strip()}", file=sys.stderr)
            return 1
        text = body.decode()
    else:
        try:
            text = asyncio.run(_read(args.room, args.format, args.store, args.data_dir))
        except StoreError as exc:
            print(f"fablecast transcript: {exc}", file=sys.stderr)
            return 1
        except LookupError:
            print(f"fablecast transcript: no room {args.room!r} in the log", file=sys.stderr)
            return 1
    if args.output:
        with open(args.output, "w", encoding="utf-8") as f:
            f.write(text)
    else:
        sys.stdout.write(text)
    return 0


async def _read(room: str, fmt: str, url: str, data_dir: str) -> str:
    log = log_for_url(url, data_dir, reader=True)  # beside a running node: no lock
    await log.open()
    try:
        img = fold(room, await log.events(room))
    finally:
        await log.close()
    if not img.exists:
        raise LookupError(room)
    if fmt == "json":
        return json.dumps(transcript_json(img), ensure_ascii=False, indent=2) + "\n"
    return transcript_markdown(img)


def _post(args: argparse.Namespace, path: str) -> int:
    status, body = _http("POST", args.node.rstrip("/") + path)
    print(body.decode(errors="replace").strip())
    return 0 if status in (200, 201) else 1


def _http(method: str, url: str) -> tuple[int, bytes]:
    req = urllib.request.Request(url, method=method)
    try:
        with urllib.request.urlopen(req, timeout=30) as resp:
            return int(resp.status), resp.read()
    except urllib.error.HTTPError as err:
        return int(err.code), err.read()
    except OSError as exc:
        return 0, f"cannot reach {url}: {exc}".encode()
