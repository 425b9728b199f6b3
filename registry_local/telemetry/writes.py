"""What is said when content fetched from an origin cannot be written to the bucket."""

from __future__ import annotations

import logging

from ..oci.digest import Digest
from .logs import error_fields
from .metrics import OriginRecorder

__all__ = ["write_failed"]

log = logging.getLogger(__name__)


def write_failed(metrics: OriginRecorder, name: str, digest: Digest, exc: BaseException) -> None:
    """Something fetched from an origin could not be written to the bucket: the
    client is served all the same; the next host asks the origin again."""
    metrics.write_failed()
    log.warning(
        "could not write %s of %s through to the bucket: %s",
        digest,
        name,
        exc,
        extra={"repository": name, "digest": str(digest), **error_fields(exc)},
    )
