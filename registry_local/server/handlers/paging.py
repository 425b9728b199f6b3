"""Distribution-spec pagination (`n`, `last`, `Link: <...>; rel="next"`), one
way for every list: tags, the catalog and referrers."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TypeVar

from aiohttp import web

from ...errors import PaginationNumberInvalid

__all__ = ["DEFAULT_PAGE", "page"]

T = TypeVar("T")

DEFAULT_PAGE = 1000  # entries per page of the catalog and referrers when `n` is not given


def _page_size(request: web.Request) -> int | None:
    """The `n` query parameter, if given."""
    raw = request.query.get("n")
    if raw is None or raw == "":
        return None
    if not raw.isdigit() or len(raw) > 9:
        raise PaginationNumberInvalid(detail={"n": raw[:20]})
    return int(raw)


def page(
    request: web.Request,
    entries: Sequence[T],
    default: int | None,
    key: Callable[[T], str],
) -> tuple[list[T], dict[str, str]]:
    """The entries (sorted by `key`) after `last`, at most `n` (or `default`; None:
    all) of them, and a Link header to the next page when there is one."""
    limit = _page_size(request)
    if limit is None:
        limit = default
    last = request.query.get("last", "")
    chosen = [entry for entry in entries if key(entry) > last]
    headers: dict[str, str] = {}
    if limit is not None and len(chosen) > limit:
        chosen = chosen[:limit]
        if chosen:
            url = request.rel_url.update_query(n=str(limit), last=key(chosen[-1]))
            headers["Link"] = f'<{url}>; rel="next"'
    return chosen, headers
