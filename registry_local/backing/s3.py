"""The S3 backing store, on aiobotocore. With presigned.py, the only module that
imports boto.

Every botocore and transport exception is translated here, by `_boundary`, into
BackendUnavailable (network trouble, timeouts, 5xx, throttling: a retry may
help), BackendMisconfigured (access denied, no such bucket, wrong region, no
credentials: only the operator can fix it) or BackendError (anything else S3
refuses); a missing key is None. Reasons are in words an operator can act on.
Nothing above this module ever sees a botocore type. Every request has a connect
and a read timeout, and passes a circuit breaker (breaker.py) that stops calls
while S3 keeps failing.

One retry loop per call, `_request` (botocore's own is off), with jittered
backoff (backoff.py). Two kinds of answer are tried again:

- a failure (no answer, a timeout, another 5xx): `S3Settings.attempts` tries
  in all, and each one counts toward the circuit breaker;
- back-pressure (503 SlowDown, 429, a 503 asking to "reduce your request
  rate"): S3 is up and asks for fewer requests, so the call waits and tries
  again for as long as a slow answer may take (--s3-read-timeout), and the
  breaker hears that S3 answered. A fleet past a prefix's request rate slows
  down; it never shuts every read of the host off.

GetObject, the call on every cold read, is a GET of a URL botocore presigns
(presigned.py): a quarter of the CPU of botocore's own call. Its errors take
the same path through `_boundary`; every other call goes through botocore.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import io
import logging
import os
import re
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Sequence
from pathlib import Path
from typing import Any, TypeVar

import aiohttp
from aiobotocore.config import AioConfig
from aiobotocore.session import get_session
from botocore import exceptions as boto

from ..backoff import ExponentialBackoff
from ..config import S3Settings, StoreSettings
from ..errors import BackendError, BackendMisconfigured, BackendUnavailable, ObjectTooLarge
from ..singleflight import SingleFlight
from ..telemetry.metrics import S3Operation, S3Outcome, S3Recorder
from .backend import Listed
from .breaker import CircuitBreaker
from .presigned import PresignedReads

__all__ = ["S3Backend"]

T = TypeVar("T")

log = logging.getLogger(__name__)

_TRANSPORT_ERRORS: tuple[type[BaseException], ...] = (
    boto.HTTPClientError,
    boto.ConnectionError,
    boto.IncompleteReadError,
    aiohttp.ClientError,
    asyncio.TimeoutError,
    ConnectionError,
)
_MULTIPART_THRESHOLD = 16 << 20
_PART_SIZE = 8 << 20
_MAX_PARTS = 9_000  # S3 allows 10,000
_PART_CONCURRENCY = 4
_SMALL_REQUESTS = 16  # connections beside the blob reads: links, tags, manifests
_LISTS_AT_ONCE = 16  # children of one listing checked for objects at once
_QUERY = re.compile(r"(https?://[^\s?'\"]*)\?[^\s'\"]*")
_NOT_FOUND_CODES = frozenset({"NoSuchKey", "NotFound", "404"})
_RETRYABLE_CODES = frozenset({"ServiceUnavailable", "InternalError", "RequestTimeout"})
# S3 asking for fewer requests (and S3-compatible stores saying so their way).
_THROTTLE_CODES = frozenset(
    {"SlowDown", "Throttling", "ThrottlingException", "RequestLimitExceeded", "TooManyRequests"}
)
_RETRIES = ExponentialBackoff(base=0.05, cap=2.0)


class _NotFound(BackendError):
    pass


class _Throttled(BackendUnavailable):
    """S3 answered, asking for fewer requests: wait, and do not count it as S3 failing."""


def _throttled(operation: S3Operation, status: int, code: str, message: str) -> bool:
    """Whether an error answer is back-pressure: SlowDown and its kin, a 429, a
    503 that asks to "reduce your request rate", or a 503 to a HEAD (which has
    no body to name its error: S3 answers a HEAD past the rate so)."""
    if status == 429 or code in _THROTTLE_CODES:
        return True
    if status != 503:
        return False
    return "reduce your request rate" in message.lower() or (
        operation.startswith("Head") and code == "503"
    )


class _Refused(BackendError):
    """A conditional write whose condition did not hold."""


# Refusals only a change of configuration fixes: the code, and what to say.
_MISCONFIGURED: dict[str, tuple[str, str]] = {
    "AccessDenied": ("access denied", "check the credentials and the bucket policy"),
    "403": ("access denied", "check the credentials and the bucket policy"),
    "InvalidAccessKeyId": ("unknown access key", "the access key does not exist in S3"),
    "SignatureDoesNotMatch": ("wrong secret key", "the secret key does not match the access key"),
    "InvalidToken": ("bad session token", "renew the session credentials"),
    "ExpiredToken": ("expired credentials", "renew the session credentials"),
    "NoSuchBucket": ("no such bucket", "check --s3-bucket (and --s3-endpoint)"),
    "PermanentRedirect": ("wrong region", "the bucket is in another region: set --s3-region"),
    "301": ("wrong region", "the bucket is in another region: set --s3-region"),
    "AuthorizationHeaderMalformed": ("wrong region", "set --s3-region to the bucket's region"),
}


# A conditional write that lost: 412, or 409 when another conditional write of
# the same key was under way (AWS asks to retry; the caller reads again instead).
_REFUSED_CODES = frozenset({"PreconditionFailed", "ConditionalRequestConflict"})


@contextlib.contextmanager
def _boundary(
    operation: S3Operation, key: str, metrics: S3Recorder | None = None
) -> Iterator[None]:
    """Translate botocore and transport errors; count the request if `metrics`."""
    began = time.monotonic()
    outcome: S3Outcome = "ok"
    try:
        yield
    except boto.ClientError as exc:
        error = exc.response.get("Error", {})
        code = str(error.get("Code", ""))
        message = str(error.get("Message", ""))
        status = int(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0) or 0)
        if code in _REFUSED_CODES or status in (409, 412):
            outcome = "refused"
            raise _Refused(operation, key, code) from None
        if operation == "HeadBucket" and status == 404:
            code = "NoSuchBucket"  # a HEAD has no body to say so
        if code in _MISCONFIGURED:
            outcome = "error"
            fault, advice = _MISCONFIGURED[code]
            detail = code if code == str(status) else f"{status} {code}"
            raise BackendMisconfigured(
                operation, key, f"{fault} ({detail}): {advice}", fault
            ) from None
        if code in _NOT_FOUND_CODES or (status == 404 and code != "NoSuchBucket"):
            outcome = "not_found"
            raise _NotFound(operation, key, code) from None
        if _throttled(operation, status, code, message):
            outcome = "unavailable"
            raise _Throttled(operation, key, f"{status} {code}") from None
        if status >= 500 or code in _RETRYABLE_CODES:
            outcome = "unavailable"
            raise BackendUnavailable(operation, key, f"{status} {code}") from None
        outcome = "error"
        raise BackendError(operation, key, f"{status} {code}") from None
    except _TRANSPORT_ERRORS as exc:
        outcome = "unavailable"
        raise BackendUnavailable(operation, key, _transport_reason(exc)) from None
    except boto.NoCredentialsError:
        outcome = "error"
        raise BackendMisconfigured(
            operation,
            key,
            "no AWS credentials found (environment, profile, instance role): "
            "give the process credentials",
            "no credentials",
        ) from None
    except boto.BotoCoreError as exc:
        outcome = "error"
        raise BackendError(operation, key, f"{type(exc).__name__}: {exc}") from None
    finally:
        if metrics is not None:
            metrics.request(operation, outcome, time.monotonic() - began)


def _transport_reason(exc: BaseException) -> str:
    """What went wrong on the way to S3, naming the URL where botocore knows it."""
    if isinstance(exc, asyncio.TimeoutError) and not str(exc):
        return "timed out"
    text = _QUERY.sub(r"\1", str(exc) or type(exc).__name__)  # no presigned signature
    return text.replace("Could not connect to the endpoint URL: ", "cannot connect to ")


class S3Backend:
    """Backend over one bucket; see backend.Backend for the contract."""

    def __init__(
        self,
        settings: S3Settings,
        client: Any,
        metrics: S3Recorder | None,
        reads: PresignedReads,
        scratch: str | None = None,
    ) -> None:
        self._settings = settings
        # Where a probe may write and delete an object of its own ("dir/"), or None.
        self._scratch = scratch
        self._emptied_prefixes: bool | None = None
        self._probes: SingleFlight[None, bool] = SingleFlight()
        self._client = client
        self._reads = reads
        self._bucket = settings.bucket
        self._metrics = metrics
        self.breaker = CircuitBreaker(
            settings.circuit_threshold, settings.circuit_cooldown, metrics
        )

    @classmethod
    @contextlib.asynccontextmanager
    async def connect(
        cls,
        settings: S3Settings,
        metrics: S3Recorder | None = None,
        scratch: str | None = None,
        blob_reads: int = StoreSettings.max_concurrency,
    ) -> AsyncIterator[S3Backend]:
        """An open backend; the client's connections close when the block ends.
        `scratch` is a prefix ("dir/") where it may write and delete probes;
        `blob_reads` bodies are read at most at once (--s3-max-concurrency)."""
        # Blob reads, plus room for the small requests that never wait for them.
        connections = blob_reads + _SMALL_REQUESTS
        config = AioConfig(
            region_name=settings.region or "us-east-1",
            # Custom endpoints (MinIO, SeaweedFS, moto) want path-style addressing.
            s3={"addressing_style": "path" if settings.endpoint else "auto"},
            connect_timeout=settings.connect_timeout,
            read_timeout=settings.read_timeout,
            # Retries are ours (`_request`): one loop per call, jittered and counted.
            retries={"total_max_attempts": 1},
            max_pool_connections=connections,
            # SigV4 for presigned reads too (botocore would presign with SigV2,
            # which regions opened since 2014 refuse).
            signature_version="s3v4",
            # Checksums only where S3 requires them: keeps older S3 servers working.
            request_checksum_calculation="when_required",
            response_checksum_validation="when_required",
        )
        session = get_session()
        async with (
            session.create_client("s3", endpoint_url=settings.endpoint, config=config) as client,
            PresignedReads.open(settings, session, config, client, connections) as reads,
        ):
            backend = cls(settings, client, metrics, reads, scratch)
            try:
                yield backend
            finally:
                await backend._probes.close()

    @property
    def description(self) -> str:
        where = self._settings.endpoint or "AWS"
        return f"s3://{self._bucket} at {where}"

    async def _request(
        self, operation: S3Operation, key: str, call: Callable[[], Awaitable[T]]
    ) -> T:
        """Make one S3 call: `call()` again after a failure a retry may fix, up
        to `attempts` tries, and after back-pressure until the call has waited
        --s3-read-timeout (see the module docstring). Raises BackendUnavailable
        when neither came right, BackendError."""
        deadline = time.monotonic() + self._settings.read_timeout
        failures = retries = 0
        left: float | None  # how long the next pause may be
        while True:
            if not self.breaker.allow():
                raise BackendUnavailable(operation, key, self.breaker.why_open())
            try:
                with _boundary(operation, key, self._metrics):
                    result = await call()
            except _Throttled:
                self.breaker.success()  # S3 answered: up, and busy
                left = deadline - time.monotonic()
                if left <= 0:
                    raise
            except BackendUnavailable as exc:
                self.breaker.failure(exc.reason)
                failures += 1
                if failures >= self._settings.attempts:
                    raise
                left = None
            except BackendError:
                self.breaker.success()  # S3 answered, if with an error
                raise
            else:
                self.breaker.success()
                return result
            retries += 1
            if self._metrics is not None:
                self._metrics.retry(operation)
            await _RETRIES.pause(retries, left)

    async def _head(self, key: str) -> dict[str, Any] | None:
        try:
            head: dict[str, Any] = await self._request(
                "HeadObject", key, lambda: self._client.head_object(Bucket=self._bucket, Key=key)
            )
        except _NotFound:
            return None
        return head

    async def stat(self, key: str) -> int | None:
        head = await self._head(key)
        return None if head is None else int(head["ContentLength"])

    async def modified(self, key: str) -> float | None:
        head = await self._head(key)
        return None if head is None else float(head["LastModified"].timestamp())

    async def read(self, key: str, limit: int) -> bytes | None:
        stream = await self.open(key)
        if stream is None:
            return None
        try:
            if stream.size > limit:
                raise ObjectTooLarge(key, limit)
            chunks = []
            while chunk := await stream.read(1 << 20):
                chunks.append(chunk)
            return b"".join(chunks)
        finally:
            await stream.close()

    async def open(self, key: str, offset: int = 0, end: int | None = None) -> _S3Stream | None:
        headers: dict[str, str] = {}
        if end is not None and end <= offset:
            size = await self.stat(key)
            return None if size is None else _S3Stream(None, key, size, size, size, None, None)
        if end is not None:
            headers["Range"] = f"bytes={offset}-{end - 1}"
        elif offset:
            headers["Range"] = f"bytes={offset}-"
        try:
            response = await self._request("GetObject", key, lambda: self._reads.get(key, headers))
        except _NotFound:
            return None
        except BackendError as exc:
            # A range starting at or past the end (also any range of an empty object).
            if headers and "InvalidRange" in exc.reason:
                size = await self.stat(key)
                return None if size is None else _S3Stream(None, key, size, size, size, None, None)
            raise
        if offset and response.status != 206:
            response.close()
            raise BackendError("GetObject", key, "the store ignored the Range header")
        size = _total_size(response.headers)
        stop = size if end is None else min(end, size)
        return _S3Stream(response, key, size, offset, stop, self._metrics, self.breaker)

    async def _level(self, prefix: str) -> tuple[list[str], list[str]]:
        """The objects and the "directories" (common prefixes) right under `prefix`."""
        objects: list[str] = []
        directories: list[str] = []
        token: str | None = None
        while True:
            kwargs: dict[str, Any] = {"Bucket": self._bucket, "Prefix": prefix, "Delimiter": "/"}
            if token:
                kwargs["ContinuationToken"] = token
            page = await self._list_page(prefix, kwargs)
            for common in page.get("CommonPrefixes", []):
                directories.append(common["Prefix"][len(prefix) :].rstrip("/"))
            for item in page.get("Contents", []):
                objects.append(item["Key"][len(prefix) :])
            token = page.get("NextContinuationToken")
            if not page.get("IsTruncated") or not token:
                return [n for n in objects if n], [n for n in directories if n]

    async def _list_page(self, prefix: str, kwargs: dict[str, Any]) -> dict[str, Any]:
        page: dict[str, Any] = await self._request(
            "ListObjectsV2", prefix, functools.partial(self._client.list_objects_v2, **kwargs)
        )
        return page

    async def _holds_objects(self, prefix: str) -> bool:
        query = {"Bucket": self._bucket, "Prefix": prefix, "MaxKeys": 1}
        page = await self._list_page(prefix, query)
        return bool(page.get("Contents"))

    async def _keeps_emptied_prefixes(self) -> bool:
        """Whether this store lists a "directory" after its last object is gone
        (SeaweedFS, and other S3-compatible stores, do; AWS S3 does not). Found
        out once, by writing and deleting one object under the scratch prefix;
        if that cannot be done, assume it does: listings are then checked child
        by child, which is right on every store, only slower."""
        if self._emptied_prefixes is None:
            self._emptied_prefixes = await self._probes.run(None, self._probe_emptied_prefixes)
        return self._emptied_prefixes

    async def _probe_emptied_prefixes(self) -> bool:
        if self._scratch is None:
            return True
        name = uuid.uuid4().hex
        try:
            await self.write(f"{self._scratch}{name}/probe", b"")
            await self.delete(f"{self._scratch}{name}/probe")
            _, directories = await self._level(self._scratch)
        except BackendError as exc:
            log.info("could not probe how %s lists emptied prefixes: %s", self.description, exc)
            return True
        kept = name in directories
        log.debug("%s %s emptied prefixes", self.description, "lists" if kept else "does not list")
        return kept

    async def walk(self, prefix: str) -> list[str]:
        return [listed.name for listed in await self.walk_dated(prefix)]

    async def walk_dated(self, prefix: str) -> list[Listed]:
        keys: list[Listed] = []
        token: str | None = None
        while True:
            kwargs: dict[str, Any] = {"Bucket": self._bucket, "Prefix": prefix}
            if token:
                kwargs["ContinuationToken"] = token
            page = await self._list_page(prefix, kwargs)
            keys.extend(
                Listed(
                    item["Key"][len(prefix) :],
                    float(item["LastModified"].timestamp()),
                    int(item.get("Size", 0)),
                )
                for item in page.get("Contents", [])
            )
            token = page.get("NextContinuationToken")
            if not page.get("IsTruncated") or not token:
                return sorted(keys)

    async def list(self, prefix: str) -> list[str]:
        objects, directories = await self._level(prefix)
        if directories and await self._keeps_emptied_prefixes():
            turns = asyncio.Semaphore(_LISTS_AT_ONCE)

            async def holds_objects(name: str) -> bool:
                async with turns:
                    return await self._holds_objects(f"{prefix}{name}/")

            held = await asyncio.gather(*(holds_objects(name) for name in directories))
            directories = [name for name, full in zip(directories, held, strict=True) if full]
        return sorted({*objects, *directories})

    async def write(self, key: str, data: bytes) -> None:
        await self._request(
            "PutObject",
            key,
            lambda: self._client.put_object(
                Bucket=self._bucket, Key=key, Body=data, ContentType="application/octet-stream"
            ),
        )
        if self._metrics is not None:
            self._metrics.transferred(written=len(data))

    async def create(self, key: str, data: bytes) -> str | None:
        return await self._put_if(key, data, IfNoneMatch="*")

    async def replace(self, key: str, data: bytes, version: str) -> str | None:
        return await self._put_if(key, data, IfMatch=version)

    async def _put_if(self, key: str, data: bytes, **condition: str) -> str | None:
        try:
            response = await self._request(
                "PutObject",
                key,
                lambda: self._client.put_object(
                    Bucket=self._bucket,
                    Key=key,
                    Body=data,
                    ContentType="application/json",
                    **condition,
                ),
            )
        except (_Refused, _NotFound):
            return None  # If-Match on a key that is gone: 404 on some stores
        if self._metrics is not None:
            self._metrics.transferred(written=len(data))
        return str(response["ETag"])

    async def read_versioned(self, key: str, limit: int) -> tuple[bytes, str] | None:
        try:
            response = await self._request(
                "GetObject", key, lambda: self._client.get_object(Bucket=self._bucket, Key=key)
            )
        except _NotFound:
            return None
        body = response["Body"]
        try:
            if _total_size(response["ResponseMetadata"]["HTTPHeaders"]) > limit:
                raise ObjectTooLarge(key, limit)
            with _boundary("GetObject", key):
                data: bytes = await body.read()
        finally:
            body.close()
        return data, str(response["ETag"])

    async def write_file(
        self, key: str, path: Path, start: int = 0, end: int | None = None
    ) -> None:
        size = (await asyncio.to_thread(path.stat)).st_size
        stop = size if end is None else min(end, size)
        length = max(0, stop - start)
        if length <= _MULTIPART_THRESHOLD:
            put = functools.partial(
                self._client.put_object,
                Bucket=self._bucket,
                Key=key,
                ContentType="application/octet-stream",
            )
            await self._send_file("PutObject", key, put, path, start, length)
            return
        part_size = max(_PART_SIZE, -(-length // _MAX_PARTS))
        upload_id = await self._create_upload(key)
        turns = asyncio.Semaphore(_PART_CONCURRENCY)

        async def upload_part(number: int, offset: int) -> dict[str, Any]:
            put = functools.partial(
                self._client.upload_part,
                Bucket=self._bucket,
                Key=key,
                UploadId=upload_id,
                PartNumber=number,
            )
            async with turns:
                part = min(part_size, stop - offset)
                answer = await self._send_file("UploadPart", key, put, path, offset, part)
                return {"PartNumber": number, "ETag": answer["ETag"]}

        numbered = enumerate(range(start, stop, part_size), start=1)
        await self._complete(key, upload_id, [upload_part(n, offset) for n, offset in numbered])

    async def _send_file(
        self,
        operation: S3Operation,
        key: str,
        send: Callable[..., Awaitable[dict[str, Any]]],
        path: Path,
        offset: int,
        length: int,
    ) -> dict[str, Any]:
        """`send(Body=..., ContentLength=...)` (PutObject, UploadPart) with bytes
        [offset, offset + length) of a file as the body, read from the file as
        it is sent, never held whole; the file is opened afresh for each try."""

        async def call() -> dict[str, Any]:
            # A quick local open, on the loop: opened in a thread, a file whose
            # caller is cancelled meanwhile (shutdown) would be left open.
            file = io.FileIO(path, "rb")
            try:
                return await send(Body=_FileRange(file, offset, length), ContentLength=length)
            finally:
                file.close()

        answer = await self._request(operation, key, call)
        if self._metrics is not None:
            self._metrics.transferred(written=length)
        return answer

    async def _create_upload(self, key: str) -> str:
        """A new multipart upload of `key`: its id."""
        created = await self._request(
            "CreateMultipartUpload",
            key,
            lambda: self._client.create_multipart_upload(
                Bucket=self._bucket, Key=key, ContentType="application/octet-stream"
            ),
        )
        upload_id: str = created["UploadId"]
        return upload_id

    async def compose(self, key: str, sources: Sequence[str]) -> None:
        upload_id = await self._create_upload(key)
        turns = asyncio.Semaphore(_PART_CONCURRENCY)

        async def copy(number: int, source: str) -> dict[str, Any]:
            async with turns:
                answer = await self._request(
                    "UploadPartCopy",
                    key,
                    functools.partial(
                        self._client.upload_part_copy,
                        Bucket=self._bucket,
                        Key=key,
                        UploadId=upload_id,
                        PartNumber=number,
                        CopySource={"Bucket": self._bucket, "Key": source},
                    ),
                )
                return {"PartNumber": number, "ETag": answer["CopyPartResult"]["ETag"]}

        await self._complete(key, upload_id, [copy(n, s) for n, s in enumerate(sources, start=1)])

    async def _complete(
        self, key: str, upload_id: str, parts: Sequence[Awaitable[dict[str, Any]]]
    ) -> None:
        """Run the part uploads of a multipart upload and complete it; abort it
        if anything fails, so no half-made object and no orphaned parts stay."""
        try:
            async with asyncio.TaskGroup() as group:
                tasks = [group.create_task(_as_coroutine(part)) for part in parts]
            done = [task.result() for task in tasks]
            await self._request(
                "CompleteMultipartUpload",
                key,
                lambda: self._client.complete_multipart_upload(
                    Bucket=self._bucket,
                    Key=key,
                    UploadId=upload_id,
                    MultipartUpload={"Parts": done},
                ),
            )
        except BaseException as exc:
            with contextlib.suppress(BackendError):
                await self._request(
                    "AbortMultipartUpload",
                    key,
                    lambda: self._client.abort_multipart_upload(
                        Bucket=self._bucket, Key=key, UploadId=upload_id
                    ),
                )
            if isinstance(exc, BaseExceptionGroup):
                raise exc.exceptions[0] from None
            raise

    async def delete(self, key: str) -> None:
        await self._request(
            "DeleteObject", key, lambda: self._client.delete_object(Bucket=self._bucket, Key=key)
        )

    async def delete_tree(self, prefix: str) -> None:
        keys = [prefix + key for key in await self.walk(prefix)]
        for start in range(0, len(keys), 1000):
            batch = {"Objects": [{"Key": k} for k in keys[start : start + 1000]], "Quiet": True}
            await self._request(
                "DeleteObjects",
                prefix,
                functools.partial(self._client.delete_objects, Bucket=self._bucket, Delete=batch),
            )

    async def remove_emptied(self, prefix: str, root: str) -> None:
        # SeaweedFS removes an emptied directory on a DeleteObject of its key with
        # the trailing slash, and only once nothing is under it, emptied
        # directories included: so deepest first. A directory that holds an
        # object is left as it is (by the store too, should one be written into
        # it between the check and the delete).
        if not await self._keeps_emptied_prefixes():
            return
        while prefix != root and prefix.startswith(root):
            if await self._holds_objects(prefix):
                return
            for directory in reversed(await self._directories(prefix)):
                await self.delete(directory)
            prefix = prefix[: prefix.rstrip("/").rfind("/") + 1]

    async def _directories(self, prefix: str) -> Sequence[str]:
        """`prefix` and every directory-like prefix under it, parents first."""
        found, level = [prefix], [prefix]
        while level:
            listed = await asyncio.gather(*(self._level(p) for p in level))
            level = [
                f"{p}{name}/" for p, (_, names) in zip(level, listed, strict=True) for name in names
            ]
            found += level
        return found

    async def check(self) -> None:
        await self._request(
            "HeadBucket", self._bucket, lambda: self._client.head_bucket(Bucket=self._bucket)
        )


async def _as_coroutine(awaitable: Awaitable[T]) -> T:
    return await awaitable


class _FileRange(io.RawIOBase):
    """Bytes [offset, offset + length) of a file as a seekable stream: a request
    body read in chunks as it is sent (botocore measures it by seeking, aiohttp
    reads it in a thread), so no part of a file is ever held whole."""

    def __init__(self, file: io.FileIO, offset: int, length: int) -> None:
        super().__init__()
        self._file = file
        self._offset = offset
        self._length = length
        self._position = 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        n = min(len(buffer), self._length - self._position)
        if n <= 0:
            return 0
        # fileno() refuses once the request is over: a read still queued in a
        # thread then fails instead of reading whatever reused the descriptor.
        data = os.pread(self._file.fileno(), n, self._offset + self._position)
        if not data:
            raise OSError(f"the file ended {self._length - self._position} bytes early")
        buffer[: len(data)] = data
        self._position += len(data)
        return len(data)

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self._position, io.SEEK_END: self._length}[whence]
        self._position = max(0, base + offset)
        return self._position

    def tell(self) -> int:
        return self._position


def _total_size(headers: Any) -> int:
    """The object's size from a GetObject answer's headers (any case of names)."""
    lower = {str(name).lower(): value for name, value in headers.items()}
    content_range = lower.get("content-range")
    if content_range:  # "bytes 100-199/1000"
        return int(str(content_range).rpartition("/")[2])
    return int(lower["content-length"])


class _S3Stream:
    def __init__(
        self,
        body: aiohttp.ClientResponse | None,
        key: str,
        size: int,
        position: int,
        stop: int,
        metrics: S3Recorder | None,
        breaker: CircuitBreaker | None,
    ) -> None:
        self._body = body
        self._metrics = metrics
        self._breaker = breaker
        self._key = key
        self._position = position
        self._stop = stop
        self.size = size

    async def read(self, n: int) -> bytes:
        if self._body is None or self._position >= self._stop:
            return b""
        try:
            with _boundary("GetObject", self._key):
                chunk = await self._body.content.read(min(n, self._stop - self._position))
            if not chunk:
                raise BackendUnavailable("GetObject", self._key, "body ended early")
        except BackendUnavailable as exc:
            if self._breaker is not None:
                self._breaker.failure(exc.reason)
            raise
        self._position += len(chunk)
        if self._metrics is not None:
            self._metrics.transferred(read=len(chunk))
        return chunk

    async def close(self) -> None:
        if self._body is not None:
            if self._position >= self._stop and self._body.content.at_eof():
                self._body.release()  # read to its end: the connection is reused
            else:
                self._body.close()
            self._body = None
