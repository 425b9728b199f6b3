"""What one request did, for its access-log line.

The server opens a trace around each request; the cache notes what it did
(`blob:hit`, `blob:join`, `tag:stale`, ...) without knowing about requests. The
trace lives in a context variable, which aiohttp keeps per request handler (and
asyncio copies into the tasks a request starts, such as its fill). Every log
line written under a trace carries its request id (`RequestIdFilter`), so a
warning can be matched with the access-log line of the request that saw it.
"""

from __future__ import annotations

import logging
import re
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field

__all__ = [
    "RequestIdFilter",
    "RequestTrace",
    "current",
    "note_cache",
    "note_cut",
    "note_sent",
    "note_status",
    "request_id",
    "traced",
]

# What we accept of a client's X-Request-Id (a proxy's id keeps its logs joinable).
_CLIENT_ID = re.compile(r"[A-Za-z0-9._:-]{1,64}")


def request_id(offered: str | None) -> str:
    """The client's id when it is a plain token, else a new one."""
    if offered is not None and _CLIENT_ID.fullmatch(offered):
        return offered
    return uuid.uuid4().hex[:16]


@dataclass
class RequestTrace:
    """What one request did, for its access-log line: its id, the cache's notes, its
    status, the bytes sent outside aiohttp, and why the body ended short."""

    request_id: str = ""
    cache: list[str] = field(default_factory=list)
    sent_bytes: int = 0  # body bytes sent outside aiohttp's writer (sendfile)
    status: int | None = None  # the status sent with the headers, once they are
    cut: str | None = None  # why the body ended short, if it did

    @property
    def cache_outcome(self) -> str:
        return ",".join(self.cache) or "-"


_current: ContextVar[RequestTrace | None] = ContextVar("registry_local_trace", default=None)


@contextmanager
def traced(request_id: str = "") -> Iterator[RequestTrace]:
    trace = RequestTrace(request_id)
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


def current() -> RequestTrace | None:
    """The trace of the request being answered, if any."""
    return _current.get()


def note_status(status: int) -> None:
    """The headers went out with this status."""
    trace = _current.get()
    if trace is not None:
        trace.status = status


def note_cut(reason: str) -> None:
    """The body ended before its Content-Length: the client got a short answer."""
    trace = _current.get()
    if trace is not None and trace.cut is None:
        trace.cut = reason


class RequestIdFilter(logging.Filter):
    """Adds `request_id` to every record logged while a request is being answered."""

    def filter(self, record: logging.LogRecord) -> bool:
        trace = _current.get()
        if trace is not None and trace.request_id and not hasattr(record, "request_id"):
            record.request_id = trace.request_id
        return True
