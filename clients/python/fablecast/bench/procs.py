"""Child-process plumbing shared by the benches: start, command, stop.

Each child (server under test, load generator) runs its own event loop (uvloop
when installed) and answers commands ``(name, arg)`` on a multiprocessing pipe,
read with ``loop.add_reader`` so the loop never blocks on it. Commands run
synchronously or as tasks; each gets exactly one reply ``(ok, value)``.
"""

from __future__ import annotations

import asyncio
import contextlib
import multiprocessing as mp
import multiprocessing.connection as mpc
import os
import time
from collections.abc import Callable, Coroutine
from typing import Any

#: A command handler: gets the argument, returns the reply value (maybe awaitable).
Handler = Callable[[Any], Any]


def run_loop(main: Callable[[], Coroutine[Any, Any, None]]) -> None:
    """Run ``main`` on uvloop when installed, else on the default loop."""
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is in the speed extra
        asyncio.run(main())
    else:
        with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
            runner.run(main())


async def serve_commands(conn: mpc.Connection, handlers: dict[str, Handler]) -> None:
    """Answer commands on ``conn`` until ``stop`` (or the parent goes away)."""
    loop = asyncio.get_running_loop()
    done = loop.create_future()
    tasks: set[asyncio.Task[None]] = set()

    def reply(message: tuple[bool, Any]) -> None:
        # The loop's reader made the pipe non-blocking; a reply larger than the
        # pipe buffer must not fail with EAGAIN, so write it in blocking mode.
        fd = conn.fileno()
        os.set_blocking(fd, True)
        try:
            conn.send(message)
        finally:
            os.set_blocking(fd, False)

    async def run(name: str, arg: Any) -> None:
        try:
            value = handlers[name](arg)
            if asyncio.iscoroutine(value) or isinstance(value, asyncio.Future):
                value = await value
        except Exception as exc:
            reply((False, f"{type(exc).__name__}: {exc}"))
        else:
            reply((True, value))

    def on_readable() -> None:
        fd = conn.fileno()
        try:
            # Readable means a message has begun; read all of it (blocking), as a
            # large one may still be on its way through the pipe.
            os.set_blocking(fd, True)
            try:
                name, arg = conn.recv()
            finally:
                os.set_blocking(fd, False)
        except (EOFError, OSError):
            if not done.done():
                done.set_result(None)
            return
        if name == "stop":
            if not done.done():
                done.set_result(arg)
            return
        task = loop.create_task(run(name, arg))
        tasks.add(task)
        task.add_done_callback(tasks.discard)

    loop.add_reader(conn.fileno(), on_readable)
    try:
        await done
    finally:
        loop.remove_reader(conn.fileno())
        for task in list(tasks):
            task.cancel()
        with contextlib.suppress(Exception):
            reply((True, "stopped"))


class Child:
    """A child process and its command pipe, seen from the bench."""

    def __init__(self, target: Callable[..., None], *args: Any, name: str = "child") -> None:
        ctx = mp.get_context("spawn")
        self.conn, child_conn = ctx.Pipe()
        self.proc = ctx.Process(target=target, args=(child_conn, *args), name=name, daemon=True)
        self.proc.start()
        child_conn.close()
        self.name = name

    def ask(self, name: str, arg: Any = None, timeout_s: float = 120.0) -> Any:
        """Send a command and wait for its reply (raises on a failed command)."""
        self.conn.send((name, arg))
        return self.wait(timeout_s)

    def wait(self, timeout_s: float = 120.0) -> Any:
        """Wait for the next reply."""
        if not self.conn.poll(timeout_s):
            raise TimeoutError(f"{self.name}: no reply within {timeout_s:g} s")
        ok, value = self.conn.recv()
        if not ok:
            raise RuntimeError(f"{self.name}: {value}")
        return value

    def stop(self, timeout_s: float = 10.0) -> None:
        """Ask the child to stop, then make sure it is gone."""
        with contextlib.suppress(Exception):
            self.conn.send(("stop", None))
            if self.conn.poll(timeout_s):
                self.conn.recv()
        self.proc.join(timeout_s)
        if self.proc.is_alive():
            self.proc.terminate()
            self.proc.join(5)
        with contextlib.suppress(Exception):
            self.conn.close()


def ask_all(
    children: list[Child], name: str, arg: Any = None, timeout_s: float = 120.0
) -> list[Any]:
    """Send one command to every child, then collect every reply (they run in parallel)."""
    for child in children:
        child.conn.send((name, arg))
    deadline = time.monotonic() + timeout_s
    return [c.wait(max(0.1, deadline - time.monotonic())) for c in children]


async def sleep_until(
    predicate: Callable[[], bool], timeout_s: float, step_s: float = 0.02
) -> bool:
    """Poll ``predicate`` until true or timeout; returns its last value."""
    deadline = time.monotonic() + timeout_s
    while not predicate():
        if time.monotonic() > deadline:
            return False
        await asyncio.sleep(step_s)
    return True
