"""The SSRF guard: which hosts and addresses a media URL may reach.

`video_url` is untrusted, so before every connection (the first request and
each redirect) the guard checks the scheme, port, host name and domain
allow-list, resolves the host exactly once, checks every address it got, and
returns the one address to connect to. Connecting to that address, rather than
resolving again, is what stops DNS rebinding: the answer we checked is the
answer we use.
"""

import asyncio
import ipaddress
import socket
from collections.abc import Awaitable, Callable

import httpx

from media.errors import MediaError
from media.options import MediaOptions

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
Resolver = Callable[[str, int], Awaitable[list[str]]]
"""Maps (host, port) to IP address strings; injectable so tests can fake DNS answers."""

DEFAULT_PORTS = {"http": 80, "https": 443}
ALWAYS_BLOCKED_HOSTS = frozenset({"metadata.google.internal", "metadata.goog"})
"""Cloud metadata services reachable by name; no option unblocks them."""

_CGNAT = ipaddress.ip_network("100.64.0.0/10")
_NAT64 = ipaddress.ip_network("64:ff9b::/96")
_PRIVATE_KINDS = frozenset({"loopback", "private", "CGNAT"})
"""The kinds `allow-private-ips` unblocks; link-local (metadata), multicast and the
rest stay blocked because no media server lives there."""


async def system_resolver(host: str, port: int) -> list[str]:
    """Resolve with the OS resolver (getaddrinfo), without blocking the event loop."""
    infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return [str(info[4][0]) for info in infos]


def address_kind(address: IPAddress) -> str | None:
    """Why `address` is not a public unicast address, or None if it is.

    IPv6 forms that embed an IPv4 address (IPv4-mapped, 6to4, NAT64) are judged
    by the IPv4 address inside, so ::ffff:127.0.0.1 is loopback like 127.0.0.1.
    """
    if isinstance(address, ipaddress.IPv6Address):
        embedded = address.ipv4_mapped or address.sixtofour
        if embedded is None and address in _NAT64:
            embedded = ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
        if embedded is not None:
            return address_kind(embedded)
    if address.is_unspecified:
        return "unspecified"
    if address.is_multicast:
        return "multicast"
    if address.is_link_local:
        return "link-local"
    if address.is_loopback:
        return "loopback"
    if address in _CGNAT:
        return "CGNAT"
    if address.is_reserved:
        return "reserved"
    if address.is_private:
        return "private"
    if not address.is_global:
        return "non-global"
    return None


def literal_address(host: str) -> IPAddress | None:
    """The IP address `host` spells, including legacy IPv4 forms like 2130706433 or 0x7f.1."""
    try:
        return ipaddress.ip_address(host)
    except ValueError:
        pass
    try:
        return ipaddress.IPv4Address(socket.inet_aton(host))
    except OSError:
        return None


class AddressGuard:
    """Decides, per connection, whether a URL may be fetched and at which address."""

    def __init__(self, options: MediaOptions, resolver: Resolver = system_resolver) -> None:
        self._options = options
        self._resolver = resolver

    async def pin(self, url: httpx.URL) -> str:
        """Check `url` and return the single IP address the connection must go to."""
        host = url.raw_host.decode("ascii").lower().rstrip(".")
        self._check_scheme_and_port(url)
        self._check_host_name(host)
        literal = literal_address(host)
        if literal is not None and not self._options.allow_direct_ip:
            raise MediaError(
                f"{url} names an IP address directly; use a host name "
                "(server option: allow-direct-ip)",
                rule="allow-direct-ip",
            )
        addresses = [literal] if literal is not None else await self._resolve(host, url)
        for address in addresses:
            self._check_address(host, address)
        return str(addresses[0])

    def _check_scheme_and_port(self, url: httpx.URL) -> None:
        if url.scheme not in DEFAULT_PORTS:
            raise MediaError(
                f"{url} uses scheme {url.scheme!r}; only http and https can be fetched here",
                rule="scheme",
            )
        if url.port is not None and url.port != DEFAULT_PORTS[url.scheme]:
            if not self._options.allow_direct_port:
                raise MediaError(
                    f"{url} uses port {url.port}; only the default {url.scheme} port is "
                    "allowed (server option: allow-direct-port)",
                    rule="allow-direct-port",
                )

    def _check_host_name(self, host: str) -> None:
        if host in ALWAYS_BLOCKED_HOSTS:
            raise MediaError(
                f"{host} is a cloud metadata service and can never be fetched from",
                rule="blocked-host",
            )
        if (host == "localhost" or host.endswith(".localhost")) and not (
            self._options.allow_private_ips
        ):
            raise MediaError(
                f"{host} is this machine; media URLs must point at a public host "
                "(server option: allow-private-ips)",
                rule="allow-private-ips",
            )
        allowed = self._options.allowed_media_domains
        if allowed is not None and host not in allowed:
            raise MediaError(
                f"{host} is not in this server's allowed media domains "
                f"({', '.join(sorted(allowed))}); host the media there",
                rule="allowed-media-domains",
            )

    async def _resolve(self, host: str, url: httpx.URL) -> list[IPAddress]:
        port = url.port or DEFAULT_PORTS[url.scheme]
        try:
            answers = await self._resolver(host, port)
        except OSError as error:
            raise MediaError(f"could not resolve {host}: {error}", rule="dns", status=502) from None
        if not answers:
            raise MediaError(f"{host} resolved to no address", rule="dns")
        return [ipaddress.ip_address(answer) for answer in answers]

    def _check_address(self, host: str, address: IPAddress) -> None:
        kind = address_kind(address)
        if kind is None:
            return
        if kind in _PRIVATE_KINDS:
            if self._options.allow_private_ips:
                return
            raise MediaError(
                f"{host} is {address}, a {kind} address; media URLs must point at a "
                "public host (server option: allow-private-ips)",
                rule="allow-private-ips",
            )
        raise MediaError(
            f"{host} is {address}, a {kind} address, which media can never be fetched from",
            rule="blocked-address",
        )
