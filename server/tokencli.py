"""``fablecast token``: issue a signed token for a room and a role (docs/security.md).

The keys come from ``FABLECAST_AUTH_KEYS`` or the ``[auth]`` table of
``--config``, the same way the node reads them, so a token issued here
verifies on a node started with the same keys. The token goes to stdout
alone (for ``$(fablecast token ...)``); what it grants goes to stderr.
"""

from __future__ import annotations

import argparse
import re
import secrets
import sys
import time
from typing import Any

from fablecast.server.auth import ALL_ROOMS, KEYS_ENV, ROLES, Authenticator, KeyRing
from fablecast.server.config import ConfigError, load_config

_TTL = re.compile(r"(\d+(?:\.\d+)?)([smhd]?)")
_UNIT = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_ttl(text: str) -> float:
    """``90``, ``90s``, ``15m``, ``1h``, ``7d`` -> seconds (positive)."""
    match = _TTL.fullmatch(text.strip())
    if match is None or float(match.group(1)) <= 0:
        raise argparse.ArgumentTypeError(f"ttl {text!r}: use e.g. 90s, 15m, 1h, 7d")
    return float(match.group(1)) * _UNIT[match.group(2)]


def register(sub: Any) -> None:
    """Add ``token`` to the ``fablecast`` command."""
    p = sub.add_parser("token", help="issue a signed token (role and room scope) for hello.token")
    p.add_argument("--room", required=True, help=f"room name, or '{ALL_ROOMS}' for every room")
    p.add_argument("--role", required=True, choices=ROLES)
    p.add_argument("--ttl", type=parse_ttl, default=3600.0, help="lifetime: 90s, 15m, 1h, 7d")
    p.add_argument("--subject", help="identity votes count under (default: ROLE-<random>)")
    p.add_argument("--config", help="TOML config whose [auth] keys sign the token")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Print one token; exit 2 without keys or with a bad claim."""
    try:
        auth = load_config(args.config).auth
        ring = KeyRing.from_config(auth.keys, auth.current_key)
    except (ConfigError, ValueError) as exc:
        print(f"fablecast token: {exc}", file=sys.stderr)
        return 2
    if ring is None:
        print(
            f"fablecast token: no signing key: set {KEYS_ENV}=kid:secret (32+ bytes) "
            "or [auth] keys in --config, the same keys the node uses",
            file=sys.stderr,
        )
        return 2
    subject = args.subject or f"{args.role}-{secrets.token_hex(4)}"
    try:
        token = Authenticator(ring).issue(subject, args.role, args.room, args.ttl, time.time())
    except ValueError as exc:
        print(f"fablecast token: {exc}", file=sys.stderr)
        return 2
    print(token)
    print(
        f"subject {subject}, role {args.role}, room {args.room}, "
        f"expires in {args.ttl:g} s, key {ring.current}",
        file=sys.stderr,
    )
    return 0
