"""``fablecast serve`` as a user runs it: a subprocess that prints its URLs, serves, drains."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from tests.support import scaled

pytestmark = pytest.mark.integration


def start_serve(*args: str) -> tuple[subprocess.Popen[str], list[str]]:
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "fablecast.cli",
            "serve",
            "--port",
            "0",
            "--engine",
            "scripted",
            *args,
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    assert proc.stdout is not None
    lines: list[str] = []
    deadline = time.monotonic() + scaled(30)
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            break
        lines.append(line)
        if "fablecast play" in line:
            break
    return proc, lines


def test_serve_prints_urls_serves_and_drains_on_sigterm(tmp_path: Path) -> None:
    config = tmp_path / "node.toml"
    config.write_text('[[rooms]]\nname = "lobby"\ntitle = "Test"\n')
    proc, lines = start_serve(
        "--config",
        str(config),
        "--no-uvloop",
        "--log-level",
        "WARNING",
        "--data-dir",
        str(tmp_path / "data"),
    )
    try:
        text = "".join(lines)
        match = re.search(r"http://127\.0\.0\.1:(\d+)", text)
        assert match, text
        port = int(match.group(1))
        assert f"fablecast watch ws://127.0.0.1:{port}/rooms/lobby" in text
        assert "/rooms/demo" not in text  # the config replaces the default room
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=5) as r:
            assert r.status == 200
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=scaled(15))
        assert proc.returncode == 0
        assert "draining" in out
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_serve_rejects_a_bad_config_with_exit_2(tmp_path: Path) -> None:
    config = tmp_path / "bad.toml"
    config.write_text("[server]\nport = 70000\n")
    result = subprocess.run(
        [sys.executable, "-m", "fablecast.cli", "serve", "--config", str(config)],
        check=False,
        capture_output=True,
        text=True,
        timeout=scaled(30),
    )
    assert result.returncode == 2
    assert "port" in result.stderr
