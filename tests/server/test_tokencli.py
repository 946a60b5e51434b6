"""``fablecast token``: issues a token the node's keys verify, refuses without keys."""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import pytest

from fablecast.cli import main
from fablecast.server.auth import KEYS_ENV, Authenticator, KeyRing
from fablecast.server.tokencli import parse_ttl

SECRET = "0123456789abcdef0123456789abcdef"


def test_token_verifies_with_the_same_keys(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv(KEYS_ENV, f"k1:{SECRET}")
    assert main(["token", "--room", "demo", "--role", "moderator", "--ttl", "1h"]) == 0
    out, err = capsys.readouterr()
    token = out.strip()
    principal = Authenticator(KeyRing({"k1": SECRET.encode()}, "k1")).verify(token, time.time())
    assert (principal.role, principal.room, principal.anonymous) == ("moderator", "demo", False)
    assert principal.subject.startswith("moderator-") and principal.subject in err
    assert 3590 < principal.expires_at - time.time() <= 3600


def test_token_from_config_keys(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delenv(KEYS_ENV, raising=False)
    config = tmp_path / "node.toml"
    config.write_text(
        f'[auth]\nkeys = {{ old = "{SECRET}", new = "{SECRET[::-1]}" }}\ncurrent_key = "new"\n'
    )
    args = ["token", "--config", str(config), "--room", "*", "--role", "host", "--subject", "ada"]
    assert main(args) == 0
    token = capsys.readouterr().out.strip()
    ring = KeyRing({"new": SECRET[::-1].encode()}, "new")
    assert Authenticator(ring).verify(token, time.time()).subject == "ada"


def test_token_without_keys_or_with_bad_claims_fails(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delenv(KEYS_ENV, raising=False)
    assert main(["token", "--room", "demo", "--role", "viewer"]) == 2
    assert "no signing key" in capsys.readouterr().err
    monkeypatch.setenv(KEYS_ENV, f"k1:{SECRET}")
    assert main(["token", "--room", "bad room", "--role", "viewer"]) == 2
    assert "room must be" in capsys.readouterr().err
    monkeypatch.setenv(KEYS_ENV, "k1:short")
    assert main(["token", "--room", "demo", "--role", "viewer"]) == 2
    assert "shorter" in capsys.readouterr().err


def test_parse_ttl() -> None:
    assert [parse_ttl(t) for t in ("90", "90s", "15m", "1h", "7d", "0.5h")] == [
        90,
        90,
        900,
        3600,
        604800,
        1800,
    ]
    for bad in ("", "0", "1w", "-1h", "h"):
        with pytest.raises(argparse.ArgumentTypeError):
            parse_ttl(bad)
