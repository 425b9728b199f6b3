"""Load-test clients in worker processes, so that a storm is not bound by one
interpreter.

A hundred clients in one Python process receive and hash every byte on one
core: past a few hundred MB/s the load tester, not the registry, sets the pace.
Worker processes each run a share of the clients (client n goes to process
n mod P) in an event loop of their own, and report over a socket:

    parent -> worker   (target, clients, ramp) first; then the client numbers
                       of each wave, or None to stop
    worker -> parent   ("ready", its workers.py) once imported; ("bytes", n)
                       and ("pull", what) as a wave goes; ("done", pulls, blobs)
                       at its end

A worker is `python -P -m registry_local.loadtest.workers FD`, talking over one
end of a socket pair: a fresh interpreter that imports only what pulling needs,
and never the parent's main module (as multiprocessing's spawn would).
PYTHONPATH names the parent's copy of the package, and `-P` keeps the working
directory off `sys.path` (plain `-m` puts it first, so a source checkout there
would win over an installed copy); a worker that imported another copy is
refused. Workers are started and imported before the first wave, so
start-up is not timed as part of the storm.
"""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import time
from multiprocessing.connection import Connection, wait
from pathlib import Path
from typing import Any

from ..errors import RegistryLocalError
from ..oci.digest import Digest
from .client import Pull, Tally, Target, run_clients

__all__ = ["ClientProcesses", "LoadWorkerDied"]

_REPORT_EVERY = 0.1  # seconds between byte counts sent to the parent
_HERE = str(Path(__file__).resolve())


class LoadWorkerDied(RegistryLocalError):
    """A worker process of the load test exited before finishing its wave."""


class ClientProcesses:
    """`count` worker processes sharing `clients` clients between them."""

    def __init__(self, target: Target, count: int, clients: int, ramp: float) -> None:
        self._target = target
        self._count = min(count, clients)
        self._clients = clients
        self._ramp = ramp
        self._workers: list[tuple[subprocess.Popen[bytes], Connection]] = []
        self._in_wave = False

    def start(self) -> None:
        """Start the workers; return once all are ready to pull (blocks)."""
        # The workers import this very copy of registry_local, installed or not.
        package_root = str(Path(_HERE).parent.parent)
        paths = [package_root, *filter(None, [os.environ.get("PYTHONPATH")])]
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(paths)}
        try:
            for _ in range(self._count):
                ours, theirs = socket.socketpair()
                with theirs:
                    process = subprocess.Popen(
                        [sys.executable, "-P", "-m", __name__, str(theirs.fileno())],
                        pass_fds=[theirs.fileno()],
                        env=env,
                    )
                conn = Connection(ours.detach())
                self._workers.append((process, conn))
                conn.send((self._target, self._clients, self._ramp))
            for _, conn in self._workers:
                if _receive(conn) != ("ready", _HERE):
                    raise LoadWorkerDied("a load-test worker did not start this registry_local")
        except BaseException:
            self.stop()
            raise

    def wave(self, tally: Tally) -> tuple[list[Pull], dict[Digest, int]]:
        """One wave of every client; blocks until all have finished."""
        self._in_wave = True
        for index, (_, conn) in enumerate(self._workers):
            try:
                conn.send(list(range(index, self._clients, self._count)))
            except OSError:
                raise LoadWorkerDied("a load-test worker process exited before the wave") from None
        pulls: list[Pull] = []
        blobs: dict[Digest, int] = {}
        pending = {conn for _, conn in self._workers}
        while pending:
            for ready in wait(list(pending)):
                assert isinstance(ready, Connection)
                message = _receive(ready)
                if message[0] == "bytes":
                    tally.advance(message[1])
                elif message[0] == "pull":
                    tally.item_done(message[1])
                else:
                    pulls.extend(message[1])
                    blobs.update(message[2])
                    pending.discard(ready)
        self._in_wave = False
        return pulls, blobs

    def stop(self) -> None:
        """Tell the workers to exit, and wait for them (blocks). Mid-wave (the
        run was interrupted), they are killed at once."""
        for process, conn in self._workers:
            if self._in_wave:
                process.kill()
            try:
                conn.send(None)
            except OSError:
                pass  # gone already
            try:
                process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
            conn.close()
        self._workers.clear()


def _receive(conn: Connection) -> tuple[Any, ...]:
    try:
        message: tuple[Any, ...] = conn.recv()
    except (EOFError, OSError):
        raise LoadWorkerDied("a load-test worker process exited mid-run") from None
    return message


class _PipeTally:
    """A worker's progress, sent to the parent: pulls at once, bytes in batches."""

    def __init__(self, conn: Connection) -> None:
        self._conn = conn
        self._bytes = 0
        self._sent = time.monotonic()

    def advance(self, count: int) -> None:
        self._bytes += count
        if time.monotonic() - self._sent > _REPORT_EVERY:
            self.flush()

    def item_done(self, what: str) -> None:
        self.flush()
        self._conn.send(("pull", what))

    def flush(self) -> None:
        if self._bytes:
            self._conn.send(("bytes", self._bytes))
            self._bytes = 0
        self._sent = time.monotonic()


def _work(conn: Connection) -> None:
    """A worker process: run each wave's share of clients until told to stop."""
    try:
        target, clients, ramp = conn.recv()
        conn.send(("ready", _HERE))
        while (numbers := conn.recv()) is not None:
            tally = _PipeTally(conn)
            pulls, blobs = asyncio.run(run_clients(target, numbers, clients, ramp, tally))
            tally.flush()
            conn.send(("done", pulls, blobs))
    except (EOFError, BrokenPipeError):
        pass  # the parent went away: so do we
    finally:
        conn.close()


if __name__ == "__main__":
    # Ctrl-C reaches the whole process group; the parent alone decides, and
    # stops the workers itself.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    _work(Connection(int(sys.argv[1])))
