"""What one request did, for its access-log line.

The server opens a trace around each request; the cache notes what it did
(`blob:hit`, `blob:join`, `tag:stale`, ...) without knowing about requests. The
trace lives in a context variable, which aiohttp keeps per request handler.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field

__all__ = ["RequestTrace", "note_cache", "note_sent", "traced"]


@dataclass
class RequestTrace:
    cache: list[str] = field(default_factory=list)
    sent_bytes: int = 0  # body bytes sent outside aiohttp's writer (sendfile)

    @property
    def cache_outcome(self) -> str:
        return ",".join(self.cache) or "-"


_current: ContextVar[RequestTrace | None] = ContextVar("registry_local_trace", default=None)


@contextmanager
def traced() -> Iterator[RequestTrace]:
    trace = RequestTrace()
    token = _current.set(trace)
    try:
        yield trace
    finally:
        _current.reset(token)


def note_cache(kind: str, result: str) -> None:
    trace = _current.get()
    if trace is not None:
        trace.cache.append(f"{kind}:{result}")


def note_sent(count: int) -> None:
    trace = _current.get()
    if trace is not None:
        trace.sent_bytes += count
