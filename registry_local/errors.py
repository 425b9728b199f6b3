"""Every exception registry-local raises on purpose, and the OCI codes they become.

    RegistryLocalError              base of everything below
    ├── RegistryError               an answer for the client; carries an ErrorCode
    │   ├── BlobUnknown, ManifestUnknown, NameUnknown          404
    │   ├── BlobUploadUnknown                                   404
    │   ├── NameInvalid, TagInvalid, DigestInvalid, SizeInvalid,
    │   │   ManifestInvalid, ManifestBlobUnknown,
    │   │   BlobUploadInvalid, PaginationNumberInvalid          400
    │   ├── Unsupported                                         405 (or 404 for no route)
    │   ├── RangeInvalid                                        416
    │   │   └── TooManyRanges       more ranges than one answer carries  400
    │   ├── Unavailable                                         503
    │   ├── Unauthorized            no or wrong credentials                401
    │   ├── Denied                  credentials that do not allow it       403
    │   └── _BadRequest *           a malformed POST /-/warm (server.handlers.warm),
    │                               code UNKNOWN                400 or 413
    ├── BackendError                the backing store (S3 or a directory) failed
    │   ├── BackendUnavailable      unreachable, timed out, 5xx, throttled: worth a retry
    │   │   └── PeerBusy *          a fleet peer has no stream to spare (fleet.peers)
    │   ├── BackendMisconfigured    access denied, no such bucket, wrong region, no
    │   │                           credentials: only the operator can fix it
    │   ├── ObjectTooLarge          an object is bigger than the reader allows
    │   ├── UpstreamDenied          an origin registry refused our credentials
    │   └── _NotFound, _Refused *   S3 said no such object, or refused a conditional
    │                               write (backing.s3, private to it)
    ├── StartError                  the server cannot start as configured (a port in
    │                               use, a backing store that refuses it)
    ├── FillFailed                  a fill did not commit; its joiners are released with it
    │   ├── DigestMismatch          the bytes did not hash to the digest asked for
    │   └── NoRoom *                no room in the cache: serve uncached (fill.fill)
    ├── ConfigError                 the configuration cannot be used (the CLI exits 2)
    ├── GcBusy *                    another gc holds the bucket's lease (retention.gc)
    ├── SourceError *               an image to import or export is missing, unreadable
    │                               or corrupt (transfer.files)
    └── LoadWorkerDied *            a load-test worker process did not start as asked,
                                    or exited before its wave ended (loadtest.workers)

    * defined in the module named in parentheses; the rest are defined here.
      Outside the tree: loadtest.client's PullFailed, a plain Exception for one
      simulated pull that failed, which the load test records as a failed pull.

Each status is its code's own; a few raises set another (such as 413 for a manifest
over 4 MiB, 414 for too many tags in one push, 507 for no room in the cache).

Lower layers raise the domain errors; `as_registry_error` maps them onto the OCI table
once, at the HTTP boundary, so no handler builds error JSON.
"""

from __future__ import annotations

import enum
import json
import re
from typing import Any, ClassVar

__all__ = [
    "BackendError",
    "BackendMisconfigured",
    "BackendUnavailable",
    "BlobUnknown",
    "BlobUploadInvalid",
    "BlobUploadUnknown",
    "ConfigError",
    "Denied",
    "DigestInvalid",
    "DigestMismatch",
    "ErrorCode",
    "FillFailed",
    "ManifestBlobUnknown",
    "ManifestInvalid",
    "ManifestUnknown",
    "NameInvalid",
    "NameUnknown",
    "ObjectTooLarge",
    "PaginationNumberInvalid",
    "RangeInvalid",
    "RegistryError",
    "RegistryLocalError",
    "SizeInvalid",
    "StartError",
    "TagInvalid",
    "TooManyRanges",
    "Unauthorized",
    "Unavailable",
    "Unsupported",
    "UpstreamDenied",
    "as_registry_error",
    "envelope",
]


class ErrorCode(enum.Enum):
    """The distribution-spec error codes, with distribution's statuses and messages."""

    BLOB_UNKNOWN = (404, "blob unknown to registry")
    BLOB_UPLOAD_INVALID = (400, "blob upload invalid")
    BLOB_UPLOAD_UNKNOWN = (404, "blob upload unknown to registry")
    DIGEST_INVALID = (400, "provided digest did not match uploaded content")
    MANIFEST_BLOB_UNKNOWN = (400, "manifest references a blob unknown to the registry")
    MANIFEST_INVALID = (400, "manifest invalid")
    MANIFEST_UNKNOWN = (404, "manifest unknown")
    NAME_INVALID = (400, "invalid repository name")
    NAME_UNKNOWN = (404, "repository name not known to registry")
    SIZE_INVALID = (400, "provided length did not match content length")
    TAG_INVALID = (400, "manifest tag did not match URI")
    UNAUTHORIZED = (401, "authentication required")
    DENIED = (403, "requested access to the resource is denied")
    UNSUPPORTED = (405, "the operation is unsupported")
    TOOMANYREQUESTS = (429, "too many requests")
    PAGINATION_NUMBER_INVALID = (400, "invalid number of results requested")
    RANGE_INVALID = (416, "invalid content range")
    UNAVAILABLE = (503, "service unavailable")
    UNKNOWN = (500, "unknown error")

    @property
    def status(self) -> int:
        return self.value[0]

    @property
    def message(self) -> str:
        return self.value[1]


class RegistryLocalError(Exception):
    """Base of every error registry-local raises on purpose."""


class RegistryError(RegistryLocalError):
    """An error answer for the client, rendered as the OCI JSON envelope."""

    code: ClassVar[ErrorCode] = ErrorCode.UNKNOWN

    def __init__(
        self,
        message: str | None = None,
        *,
        detail: Any = None,
        status: int | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        self.message = message or self.code.message
        self.detail = detail
        self.status = status or self.code.status
        self.headers = headers or {}
        super().__init__(self.message)


class BlobUnknown(RegistryError):
    """The blob is unknown to the registry, or to this repository (404 BLOB_UNKNOWN)."""

    code = ErrorCode.BLOB_UNKNOWN


class ManifestUnknown(RegistryError):
    """No such manifest or tag, or no image for the platform asked (404 MANIFEST_UNKNOWN)."""

    code = ErrorCode.MANIFEST_UNKNOWN


class NameUnknown(RegistryError):
    """The repository name is not known to the registry (404 NAME_UNKNOWN)."""

    code = ErrorCode.NAME_UNKNOWN


class NameInvalid(RegistryError):
    """The repository name is not a valid one (400 NAME_INVALID)."""

    code = ErrorCode.NAME_INVALID


class TagInvalid(RegistryError):
    """A tag is not a valid one (400 TAG_INVALID; 414 for too many in one push)."""

    code = ErrorCode.TAG_INVALID


class DigestInvalid(RegistryError):
    """A digest is missing or malformed, or content did not hash to it
    (400 DIGEST_INVALID)."""

    code = ErrorCode.DIGEST_INVALID


class ManifestInvalid(RegistryError):
    """A manifest that cannot be accepted: malformed, unsupported or too large
    (400 MANIFEST_INVALID; 413 for one over 4 MiB)."""

    code = ErrorCode.MANIFEST_INVALID


class PaginationNumberInvalid(RegistryError):
    """The `n` of a paginated request is not a valid count (400 PAGINATION_NUMBER_INVALID)."""

    code = ErrorCode.PAGINATION_NUMBER_INVALID


class ManifestBlobUnknown(RegistryError):
    """A pushed manifest references content the repository does not link
    (400 MANIFEST_BLOB_UNKNOWN)."""

    code = ErrorCode.MANIFEST_BLOB_UNKNOWN


class BlobUploadUnknown(RegistryError):
    """No such upload session (404 BLOB_UPLOAD_UNKNOWN)."""

    code = ErrorCode.BLOB_UPLOAD_UNKNOWN


class BlobUploadInvalid(RegistryError):
    """A blob upload request cannot be used, such as one with a malformed Content-Range
    (400 BLOB_UPLOAD_INVALID)."""

    code = ErrorCode.BLOB_UPLOAD_INVALID


class SizeInvalid(RegistryError):
    """A chunk's length does not match its Content-Range (400 SIZE_INVALID)."""

    code = ErrorCode.SIZE_INVALID


class Unsupported(RegistryError):
    """The operation is not supported, or not enabled here (405 UNSUPPORTED)."""

    code = ErrorCode.UNSUPPORTED


class RangeInvalid(RegistryError):
    """A range that cannot be satisfied: of a blob, or an upload chunk that does not
    start where the upload ends (416 RANGE_INVALID)."""

    code = ErrorCode.RANGE_INVALID


class TooManyRanges(RangeInvalid):
    """A Range request for more ranges than registry-local answers at once."""

    def __init__(self, message: str, *, detail: Any = None) -> None:
        super().__init__(message, detail=detail, status=400)


class Unavailable(RegistryError):
    """The registry cannot answer this now, or until its operator acts (503 UNAVAILABLE)."""

    code = ErrorCode.UNAVAILABLE


class Unauthorized(RegistryError):
    """The request lacks valid credentials (401 UNAUTHORIZED); carries the challenge."""

    code = ErrorCode.UNAUTHORIZED


class Denied(RegistryError):
    """The credentials are valid but do not allow what was asked (403 DENIED)."""

    code = ErrorCode.DENIED


class BackendError(RegistryLocalError):
    """The backing store answered with an error that a retry will not fix."""

    def __init__(self, operation: str, key: str, reason: str) -> None:
        self.operation = operation
        self.key = key
        self.reason = reason
        super().__init__(f"{operation} {key}: {reason}")


class BackendUnavailable(BackendError):
    """The backing store could not be reached or asked us to back off."""


class BackendMisconfigured(BackendError):
    """The backing store refuses us for a reason of configuration (credentials,
    bucket, region). `fault` says which in a few words a client may be told."""

    def __init__(self, operation: str, key: str, reason: str, fault: str) -> None:
        self.fault = fault
        super().__init__(operation, key, reason)


class ObjectTooLarge(BackendError):
    """An object is larger than the caller's limit (a manifest over 4 MiB)."""

    def __init__(self, key: str, limit: int) -> None:
        super().__init__("read", key, f"object larger than {limit} bytes")


class UpstreamDenied(BackendError):
    """An origin registry (--upstream) refused our credentials for a repository."""


class StartError(RegistryLocalError):
    """The server cannot start as configured: a port in use, a host that does not
    resolve, a backing store that refuses it. The CLI exits 1 with the message."""


class FillFailed(RegistryLocalError):
    """A fill ended without committing its blob."""

    def __init__(self, digest: str, reason: str) -> None:
        self.digest = digest
        self.reason = reason
        super().__init__(f"fill of {digest} failed: {reason}")


class DigestMismatch(FillFailed):
    """The bytes read did not hash to the digest they were stored under."""

    def __init__(self, digest: str, actual: str) -> None:
        self.actual = actual
        super().__init__(digest, f"content hashed to {actual}")


class ConfigError(RegistryLocalError):
    """The configuration cannot be used."""


def as_registry_error(exc: BaseException) -> RegistryError | None:
    """The client-facing error for a domain error, or None for a bug."""
    if isinstance(exc, RegistryError):
        return exc
    if isinstance(exc, UpstreamDenied):
        origin = re.match(r"https?://[^/\s]+", exc.key)
        where = f" at {origin.group(0)}" if origin else ""
        return Unavailable(
            f"the upstream registry{where} refused registry-local's credentials, or none "
            "could be found for it, for this repository"
        )
    if isinstance(exc, BackendMisconfigured):
        # Permanent until the operator acts: say so, and which kind (never the
        # key, the bucket or the endpoint's words).
        return Unavailable(
            f"registry-local cannot use its backing store ({exc.fault}): "
            "its configuration must be fixed by the operator"
        )
    if isinstance(exc, BackendError):
        # Say which kind of failure, never the key or the endpoint's words.
        return Unavailable("backing store unavailable, try again")
    if isinstance(exc, FillFailed):
        return Unavailable("fetching the blob from the backing store failed, try again")
    return None


def envelope(error: RegistryError) -> bytes:
    """The OCI error body for one error."""
    entry: dict[str, Any] = {"code": error.code.name, "message": error.message}
    if error.detail is not None:
        entry["detail"] = error.detail
    return json.dumps({"errors": [entry]}).encode()
