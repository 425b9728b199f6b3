"""GetObject as a plain GET of a URL botocore presigns, for S3Backend (s3.py).

Every cold read, link and manifest is a GetObject. botocore's own costs 3 to 4
ms of CPU on the event loop (event hooks, user agent, header parsing); here
botocore only signs the URL with SigV4 (its credentials, region and addressing:
0.5 ms) and a session of our own sends it (0.5 ms), trusting the certificates
botocore would trust and going through the proxy it would use
(docs/benchmarks.md).

An error answer becomes botocore's ClientError, read as botocore reads it, so
s3.py translates it as it translates every other call. botocore follows S3's
"the bucket is in another region" answers for its own calls; a presigned URL
must be signed for the bucket's region, so on such an answer the URL is signed
again for the region S3 names, and every later read is signed for it too.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import re
import ssl
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
from aiobotocore.config import AioConfig
from aiobotocore.session import AioSession
from botocore import exceptions as boto
from botocore.httpsession import ProxyConfiguration, get_cert_path
from botocore.utils import get_environ_proxies
from yarl import URL

from ..config import S3Settings

__all__ = ["PresignedReads"]

log = logging.getLogger(__name__)

_PRESIGNED_SECONDS = 900  # a presigned GET is sent at once; this only bounds a leak
_ERROR_BODY_LIMIT = 64 * 1024
_ERROR_CODE = re.compile(rb"<Code>([^<]{1,200})</Code>")
_ERROR_MESSAGE = re.compile(rb"<Message>([^<]{0,500})</Message>")
_ERROR_REGION = re.compile(rb"<Region>([a-z0-9-]{1,64})</Region>")
# What S3 answers a request signed for the wrong region.
_WRONG_REGION = frozenset({"PermanentRedirect", "AuthorizationHeaderMalformed", "301"})


class PresignedReads:
    """Presigned GETs of one bucket; open with `PresignedReads.open`."""

    def __init__(
        self,
        settings: S3Settings,
        session: AioSession,
        config: AioConfig,
        client: Any,
        http: aiohttp.ClientSession,
        stack: contextlib.AsyncExitStack,
    ) -> None:
        self._settings = settings
        self._session = session
        self._config = config
        self._http = http
        self._stack = stack
        self.region: str = config.region_name
        self._signers: dict[str, Any] = {self.region: client}
        self._moving = asyncio.Lock()
        self._proxies: dict[str, tuple[str | None, dict[str, str]]] = {}

    @classmethod
    @contextlib.asynccontextmanager
    async def open(
        cls,
        settings: S3Settings,
        session: AioSession,
        config: AioConfig,
        client: Any,
        connections: int,
    ) -> AsyncIterator[PresignedReads]:
        """Reads signed by `client` (botocore's S3 client for the bucket), on at
        most `connections` connections, until the block ends."""
        tls = await asyncio.to_thread(_tls_context, session)
        async with contextlib.AsyncExitStack() as stack:
            http = await stack.enter_async_context(
                aiohttp.ClientSession(
                    connector=aiohttp.TCPConnector(limit=connections, ssl=tls),
                    timeout=aiohttp.ClientTimeout(
                        total=None,
                        sock_connect=settings.connect_timeout,
                        sock_read=settings.read_timeout,
                    ),
                    auto_decompress=False,
                    skip_auto_headers={"Accept-Encoding"},
                )
            )
            yield cls(settings, session, config, client, http, stack)

    async def get(self, key: str, headers: dict[str, str]) -> aiohttp.ClientResponse:
        """The answer to a GET of `key` with `headers` (Range), its body unread;
        raises botocore's ClientError for an error answer."""
        for attempt in range(2):
            region = self.region
            url = await self._signers[region].generate_presigned_url(
                "get_object",
                Params={"Bucket": self._settings.bucket, "Key": key},
                ExpiresIn=_PRESIGNED_SECONDS,
            )
            proxy, proxy_headers = self._proxy_for(url)
            response = await self._http.get(
                URL(url, encoded=True),
                headers=headers,
                proxy=proxy,
                proxy_headers=proxy_headers,
                allow_redirects=False,
            )
            if response.status < 300:
                return response
            try:
                body = await response.content.read(_ERROR_BODY_LIMIT)
            finally:
                response.close()
            found = _ERROR_CODE.search(body)
            code = found.group(1).decode(errors="replace") if found else str(response.status)
            said = _ERROR_MESSAGE.search(body)
            message = said.group(1).decode(errors="replace") if said else ""
            elsewhere = _bucket_region(response.headers, body)
            if attempt == 0 and code in _WRONG_REGION and elsewhere not in (None, region):
                assert elsewhere is not None
                await self._move_to(elsewhere, region)
                continue
            raise boto.ClientError(
                {
                    "Error": {"Code": code, "Message": message},
                    "ResponseMetadata": {"HTTPStatusCode": response.status},
                },
                "GetObject",
            )
        raise AssertionError("unreachable")

    async def _move_to(self, region: str, was: str) -> None:
        """Sign reads for `region` from now on."""
        async with self._moving:
            if region not in self._signers:
                log.warning(
                    "s3://%s is in region %s, not %s: reads are signed for %s "
                    "(set --s3-region %s to say so)",
                    self._settings.bucket,
                    region,
                    was,
                    region,
                    region,
                )
                config = self._config.merge(AioConfig(region_name=region))
                self._signers[region] = await self._stack.enter_async_context(
                    self._session.create_client(
                        "s3", endpoint_url=self._settings.endpoint, config=config
                    )
                )
            self.region = region

    def _proxy_for(self, url: str) -> tuple[str | None, dict[str, str]]:
        """The proxy botocore would use for `url` (HTTP(S)_PROXY, NO_PROXY)."""
        origin = url.split("/", 3)[2]
        if origin not in self._proxies:
            config = ProxyConfiguration(get_environ_proxies(url))
            proxy = config.proxy_url_for(url)
            self._proxies[origin] = (proxy, config.proxy_headers_for(proxy) if proxy else {})
        return self._proxies[origin]


def _bucket_region(headers: Any, body: bytes) -> str | None:
    """The region S3 says the bucket is in, if it says so."""
    region = headers.get("x-amz-bucket-region")
    if region:
        return str(region)
    found = _ERROR_REGION.search(body)
    return found.group(1).decode() if found else None


def _tls_context(session: AioSession) -> ssl.SSLContext:
    """The certificates botocore would trust: the ca_bundle setting
    (AWS_CA_BUNDLE), else REQUESTS_CA_BUNDLE, else its default bundle."""
    verify = session.get_config_variable("ca_bundle") or os.environ.get("REQUESTS_CA_BUNDLE")
    return ssl.create_default_context(cafile=get_cert_path(verify or True))
