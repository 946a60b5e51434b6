"""A throwaway PostgreSQL server (tests, ``bench store``): Debian's initdb and pg_ctl, temp dir.

Never the machine's own server: a new cluster in a temporary folder, listening
on 127.0.0.1 on a free port, with its socket in that folder. As root, initdb
refuses to run, so the cluster is made and run as the ``postgres`` user.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path


def _pg_bin() -> Path:
    """``FABLECAST_PG_BIN``, else the newest ``/usr/lib/postgresql/<version>/bin`` (Debian)."""
    if os.environ.get("FABLECAST_PG_BIN"):
        return Path(os.environ["FABLECAST_PG_BIN"])
    found = sorted(
        Path("/usr/lib/postgresql").glob("*/bin/initdb"),
        key=lambda p: int(p.parts[-3]) if p.parts[-3].isdigit() else 0,
    )
    return found[-1].parent if found else Path("/usr/lib/postgresql/15/bin")


PG_BIN = _pg_bin()


def pg_missing() -> str | None:
    """Why a test PostgreSQL cannot start here (None: it can)."""
    if not (PG_BIN / "initdb").exists() or not (PG_BIN / "pg_ctl").exists():
        return f"PostgreSQL binaries not found in {PG_BIN} (Debian package postgresql; make test)"
    if os.geteuid() == 0:
        try:
            pwd.getpwnam("postgres")
        except KeyError:
            return "running as root and no 'postgres' user to run initdb as"
    return None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextlib.contextmanager
def postgres_server(*, fsync: bool = False) -> Iterator[str]:
    """Start a fresh cluster; yield its URL (database ``postgres``, trust auth); stop it.

    ``fsync`` off by default (tests: speed); on for benchmarks (real commits).
    """
    root = Path(tempfile.mkdtemp(prefix="fablecast-pg-"))
    data = root / "data"
    as_user: list[str] = []
    if os.geteuid() == 0:
        pw = pwd.getpwnam("postgres")
        os.chown(root, pw.pw_uid, pw.pw_gid)
        as_user = ["runuser", "-u", "postgres", "--"]
    port = _free_port()
    user = "postgres" if as_user else pwd.getpwuid(os.geteuid()).pw_name

    def run(*args: str) -> None:
        subprocess.run([*as_user, *args], check=True, capture_output=True, timeout=60, cwd=root)

    try:
        run(str(PG_BIN / "initdb"), "-D", str(data), "-A", "trust", "-U", user, "--no-sync")
        run(
            str(PG_BIN / "pg_ctl"),
            "-D",
            str(data),
            "-l",
            str(root / "log"),
            "-w",
            "-o",
            f"-p {port} -k {root} -c listen_addresses=127.0.0.1"
            f" -c fsync={'on' if fsync else 'off'}",
            "start",
        )
        try:
            yield f"postgresql://{user}@127.0.0.1:{port}/postgres"
        finally:
            with contextlib.suppress(subprocess.SubprocessError):
                run(str(PG_BIN / "pg_ctl"), "-D", str(data), "-m", "immediate", "-w", "stop")
    finally:
        shutil.rmtree(root, ignore_errors=True)
