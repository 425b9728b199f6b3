"""The policy of `--access-policy`, read again whenever its file changes.

A bad file refuses to start (`PolicyFile.load` raises ConfigError). Later the
file is looked at every second (its modification time, size and inode, so a
Kubernetes ConfigMap's swapped symlink counts as a change); a change that does
not parse is logged as an error, counted, and the last good policy stays in
force: a typo must not open the cache or lock every client out.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from pathlib import Path

from ..errors import ConfigError
from ..telemetry.metrics import AccessRecorder
from .policy import Policy

__all__ = ["PolicyFile"]

log = logging.getLogger(__name__)

_INTERVAL = 1.0  # seconds between looks at the file
_Stamp = tuple[int, int, int] | None  # mtime_ns, size, inode; None: cannot be read


class PolicyFile:
    """The policy in force, and the task that reloads it. Create with `load`."""

    def __init__(self, path: Path, policy: Policy, stamp: _Stamp, metrics: AccessRecorder) -> None:
        self.path = path
        self.current = policy
        self._stamp = stamp
        self._metrics = metrics
        self._task: asyncio.Task[None] | None = None

    @classmethod
    def load(cls, path: Path, metrics: AccessRecorder) -> PolicyFile:
        """The policy as the file holds it now. Raises ConfigError."""
        stamp = _stamp(path)
        policy = Policy.read(path)
        metrics.policy_loaded(len(policy.rules))
        return cls(path, policy, stamp, metrics)

    def start(self) -> PolicyFile:
        self._task = asyncio.create_task(self._watch(), name="access-policy")
        return self

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def reload_if_changed(self) -> None:
        """Read the file again if it changed since it was last read."""
        stamp = await asyncio.to_thread(_stamp, self.path)
        if stamp == self._stamp:
            return
        self._stamp = stamp
        try:
            policy = await asyncio.to_thread(Policy.read, self.path)
        except ConfigError as exc:
            self._metrics.policy_reloaded(False)
            log.error("access policy not reloaded, the last good one stays in force: %s", exc)
            return
        self.current = policy
        self._metrics.policy_reloaded(True)
        self._metrics.policy_loaded(len(policy.rules))
        log.info("access policy reloaded from %s: %d rules", self.path, len(policy.rules))

    async def _watch(self) -> None:
        while True:
            await asyncio.sleep(_INTERVAL)  # a poll: files give no portable change event
            try:
                await self.reload_if_changed()
            except Exception:  # never let the watcher die: the policy must stay reloadable
                log.exception("access policy watcher: unexpected error")


def _stamp(path: Path) -> _Stamp:
    try:
        info = os.stat(path)
    except OSError:
        return None
    return info.st_mtime_ns, info.st_size, info.st_ino
