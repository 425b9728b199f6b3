"""Readiness: the cache dir takes writes and the backing store answers.

Probes are cached for a short while and single-flighted, so a busy probe
endpoint costs the backing store at most one request per interval.
"""

from __future__ import annotations

import asyncio
import os
import time
import uuid
from dataclasses import dataclass

from ..backing.backend import Backend
from ..disk.store import DiskStore
from ..errors import BackendError, BackendMisconfigured, BackendUnavailable
from ..telemetry.metrics import ReadinessRecorder

__all__ = ["Readiness", "ReadinessReport", "store_fault"]


@dataclass(frozen=True)
class ReadinessReport:
    """One readiness probe's result: "ok" or what failed, for the disk and for the
    store, and whether coordination with other hosts is on."""

    disk: str  # "ok" or what failed
    store: str
    fleet: str = "off"  # coordination with other hosts: "on", "off", or why it is off

    @property
    def ready(self) -> bool:
        return self.disk == "ok" and self.store == "ok"


class Readiness:
    """Runs the readiness probes, one run in flight at a time, and reuses the report
    for `interval` seconds."""

    def __init__(
        self,
        disk: DiskStore,
        backend: Backend,
        metrics: ReadinessRecorder,
        interval: float,
        fleet: str,
    ) -> None:
        """Probes are reused for `interval` seconds (ServerSettings.ready_interval);
        `fleet` says whether coordination with other hosts is on."""
        self._fleet = fleet
        self._disk = disk
        self._backend = backend
        self._metrics = metrics
        self._interval = interval
        self._last: tuple[float, ReadinessReport] | None = None
        self._probe: asyncio.Task[ReadinessReport] | None = None

    async def report(self) -> ReadinessReport:
        if self._last is not None and time.monotonic() - self._last[0] < self._interval:
            return self._last[1]
        if self._probe is None or self._probe.done():
            self._probe = asyncio.create_task(self._run())
        return await asyncio.shield(self._probe)

    async def _run(self) -> ReadinessReport:
        disk, store = await asyncio.gather(self._check_disk(), self._check_store())
        report = ReadinessReport(disk, store, self._fleet)
        self._last = (time.monotonic(), report)
        self._metrics.checked(report.ready)
        return report

    async def _check_disk(self) -> str:
        probe = self._disk.layout.tmp_dir / f"ready-{uuid.uuid4().hex}.probe"

        def write_and_remove() -> None:
            fd = os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            try:
                os.write(fd, b"ok")
            finally:
                os.close(fd)
                os.unlink(probe)

        try:
            await asyncio.to_thread(write_and_remove)
        except OSError as exc:
            return f"cache dir not writable: {exc.strerror}"
        return "ok"

    async def _check_store(self) -> str:
        try:
            await self._backend.check()
        except BackendError as exc:
            return store_fault(exc)
        return "ok"


def store_fault(exc: BackendError) -> str:
    """What is wrong with the backing store, for /readyz and the log."""
    if isinstance(exc, BackendMisconfigured):
        return f"backing store refuses registry-local: {exc.reason}"
    if isinstance(exc, BackendUnavailable):
        return f"backing store unreachable: {exc.reason}"
    return f"backing store error: {exc.reason}"
