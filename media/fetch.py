"""`MediaFetcher`: turn an untrusted media URL into bytes, safely.

Fetching is separate from decoding so the encode worker can hash the bytes and
skip decoding on an embedding-cache hit.
"""

import asyncio
from types import TracebackType
from typing import Self

import httpx

from media.errors import MediaError
from media.guard import AddressGuard, Resolver, system_resolver
from media.options import MediaOptions
from media.sources import read_data_url, read_local_file, too_large

MAX_REDIRECTS = 3


class MediaFetcher:
    """Fetches `http(s)://`, `data:` and allow-listed `file://` media; reuse one per process.

    Every http connection goes to an address the `AddressGuard` checked, and
    redirects are followed here, not by httpx, so each hop is checked too.
    """

    def __init__(self, options: MediaOptions, *, resolver: Resolver = system_resolver) -> None:
        self._options = options
        self._guard = AddressGuard(options, resolver)
        # No keep-alive: a pooled connection is keyed by IP, and reusing one made
        # for another host name would send this request under that host's TLS name.
        self._client = httpx.AsyncClient(
            headers={"User-Agent": options.user_agent},
            timeout=options.timeout_ms / 1000,
            follow_redirects=False,
            trust_env=False,
            limits=httpx.Limits(max_keepalive_connections=0),
        )

    async def fetch(self, url: str) -> bytes:
        """The media bytes at `url`, never empty; raises MediaError for anything refused."""
        if url.startswith("data:"):
            # Decoding tens of MB of base64 takes long enough to stall other requests' streams.
            return await asyncio.to_thread(read_data_url, url, self._options.max_fetch_bytes)
        if url.startswith(("file:", "/")):
            return await asyncio.to_thread(
                read_local_file,
                url,
                self._options.allowed_local_media_path,
                self._options.max_fetch_bytes,
            )
        try:
            parsed = httpx.URL(url)
        except httpx.InvalidURL as error:
            raise MediaError(f"{url!r} is not a valid URL ({error})", rule="url") from None
        return await self._fetch_http(parsed)

    async def _fetch_http(self, url: httpx.URL) -> bytes:
        seconds = self._options.timeout_ms / 1000
        try:
            async with asyncio.timeout(seconds):
                return await self._follow_redirects(url)
        except (TimeoutError, httpx.TimeoutException):
            raise MediaError(
                f"fetching {url} took longer than {seconds:g} s; use a faster host or a "
                "smaller file (server option: timeout-ms)",
                rule="timeout-ms",
                status=504,
            ) from None
        except httpx.HTTPError as error:
            # Connection refused or reset, TLS failure: the other side's fault; a retry may work.
            raise MediaError(
                f"could not fetch {url}: {error!r}", rule="fetch", status=502
            ) from None

    async def _follow_redirects(self, url: httpx.URL) -> bytes:
        for _ in range(MAX_REDIRECTS + 1):
            response = await self._send(url)
            try:
                if not response.is_redirect:
                    return await self._read_body(url, response)
                url = url.join(response.headers["Location"])
            finally:
                await response.aclose()
        raise MediaError(
            f"{url} redirected more than {MAX_REDIRECTS} times; link the final URL",
            rule="redirects",
        )

    async def _send(self, url: httpx.URL) -> httpx.Response:
        """Send to the checked address while the server still sees (and TLS checks) the host."""
        address = await self._guard.pin(url)
        host_name = url.raw_host.decode("ascii")
        request = self._client.build_request(
            "GET",
            url.copy_with(host=address),
            headers={"Host": url.netloc.decode("ascii")},
            extensions={"sni_hostname": host_name} if url.scheme == "https" else {},
        )
        return await self._client.send(request, stream=True)

    async def _read_body(self, url: httpx.URL, response: httpx.Response) -> bytes:
        if response.status_code >= 500:
            raise MediaError(
                f"{url} answered HTTP {response.status_code}: the media host failed; retry later",
                rule="http-status",
                status=502,
            )
        if response.status_code != 200:
            raise MediaError(
                f"{url} answered HTTP {response.status_code}; check that the URL is right "
                "and publicly readable",
                rule="http-status",
            )
        limit = self._options.max_fetch_bytes
        declared = response.headers.get("Content-Length", "")
        if declared.isdigit() and int(declared) > limit:
            raise too_large(str(url), int(declared), limit)
        chunks, size = [], 0
        async for chunk in response.aiter_bytes():
            size += len(chunk)
            if size > limit:
                raise too_large(f"{url} (so far)", size, limit)
            chunks.append(chunk)
        if size == 0:
            raise MediaError(f"{url} returned an empty body", rule="empty-media")
        return b"".join(chunks)

    async def aclose(self) -> None:
        await self._client.aclose()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.aclose()
