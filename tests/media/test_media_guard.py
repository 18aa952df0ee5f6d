"""The SSRF guard: every blocked address family, host name rule and option, via fetch.

Nothing here opens a connection: each URL is refused before one would be made.
Host names get their addresses from an injected resolver, never from real DNS.
"""

import pytest

from media import MediaError, MediaFetcher, MediaOptions


class FakeDNS:
    """A resolver that answers from a table and records every question."""

    def __init__(self, answers: dict[str, list[str]] | None = None) -> None:
        self.answers = answers or {}
        self.questions: list[str] = []

    async def __call__(self, host: str, port: int) -> list[str]:
        self.questions.append(host)
        if host not in self.answers:
            raise OSError(f"[Errno -2] Name or service not known: {host}")
        return self.answers[host]


async def _refusal(url: str, dns: FakeDNS | None = None, **options: object) -> MediaError:
    async with MediaFetcher(MediaOptions(**options), resolver=dns or FakeDNS()) as fetcher:
        with pytest.raises(MediaError) as caught:
            await fetcher.fetch(url)
    return caught.value


ALWAYS_BLOCKED = [
    ("169.254.169.254", "link-local"),
    ("[fe80::1]", "link-local"),
    ("[::ffff:169.254.169.254]", "link-local"),
    ("224.0.0.1", "multicast"),
    ("[ff02::1]", "multicast"),
    ("0.0.0.0", "unspecified"),
    ("[::]", "unspecified"),
    ("240.0.0.1", "reserved"),
    ("255.255.255.255", "reserved"),
    ("[::7f00:1]", "reserved"),
]
PRIVATE = [
    ("127.0.0.1", "loopback"),
    ("127.8.9.10", "loopback"),
    ("[::1]", "loopback"),
    ("[::ffff:127.0.0.1]", "loopback"),
    ("[2002:7f00:1::]", "loopback"),
    ("2130706433", "loopback"),
    ("0x7f.1", "loopback"),
    ("10.1.2.3", "private"),
    ("172.16.5.4", "private"),
    ("192.168.0.1", "private"),
    ("[::ffff:10.0.0.1]", "private"),
    ("[64:ff9b::a00:1]", "private"),
    ("[fc00::1]", "private"),
    ("[fd12:3456::1]", "private"),
    ("100.64.0.1", "CGNAT"),
    ("100.127.255.254", "CGNAT"),
]


@pytest.mark.parametrize(("host", "kind"), PRIVATE + ALWAYS_BLOCKED)
async def test_non_public_addresses_are_refused(host: str, kind: str) -> None:
    error = await _refusal(f"http://{host}/v.mp4", allow_direct_ip=True)
    expected = "allow-private-ips" if (host, kind) in PRIVATE else "blocked-address"
    assert (error.rule, error.status) == (expected, 400)
    assert f"a {kind} address" in error.message


@pytest.mark.parametrize(("host", "kind"), ALWAYS_BLOCKED)
async def test_allow_private_ips_never_opens_metadata_multicast_or_reserved(
    host: str, kind: str
) -> None:
    error = await _refusal(f"http://{host}/v.mp4", allow_direct_ip=True, allow_private_ips=True)
    assert error.rule == "blocked-address"


@pytest.mark.parametrize(("answer", "kind"), [("10.0.0.7", "private"), ("fe80::9", "link-local")])
async def test_a_host_name_resolving_to_a_blocked_address_is_refused(
    answer: str, kind: str
) -> None:
    dns = FakeDNS({"media.test": [answer]})
    error = await _refusal("http://media.test/v.mp4", dns)
    assert f"media.test is {answer}, a {kind} address" in error.message


async def test_one_blocked_answer_among_public_ones_is_enough_to_refuse() -> None:
    dns = FakeDNS({"media.test": ["93.184.216.34", "169.254.169.254"]})
    assert (await _refusal("http://media.test/v.mp4", dns)).rule == "blocked-address"


@pytest.mark.parametrize("host", ["localhost", "LocalHost.", "api.localhost"])
async def test_localhost_names_are_refused_without_asking_dns(host: str) -> None:
    dns = FakeDNS({"localhost": ["93.184.216.34"]})
    error = await _refusal(f"http://{host}/v.mp4", dns)
    assert error.rule == "allow-private-ips"
    assert dns.questions == []


async def test_the_metadata_host_name_is_refused_even_with_private_ips_allowed() -> None:
    dns = FakeDNS({"metadata.google.internal": ["93.184.216.34"]})
    error = await _refusal("http://metadata.google.internal/v1/", dns, allow_private_ips=True)
    assert error.rule == "blocked-host"


async def test_a_literal_ip_needs_allow_direct_ip() -> None:
    error = await _refusal("http://93.184.216.34/v.mp4")
    assert error.rule == "allow-direct-ip"
    assert "use a host name" in error.message


async def test_a_non_default_port_needs_allow_direct_port() -> None:
    dns = FakeDNS({"media.test": ["93.184.216.34"]})
    assert (await _refusal("http://media.test:8080/v.mp4", dns)).rule == "allow-direct-port"
    assert dns.questions == []
    # the default port written out is fine: this one gets as far as the address check
    dns = FakeDNS({"media.test": ["10.0.0.1"]})
    assert (await _refusal("http://media.test:80/v.mp4", dns)).rule == "allow-private-ips"


@pytest.mark.parametrize("host", ["other.test", "sub.media.test", "media.test.evil.test"])
async def test_the_domain_allow_list_matches_exact_host_names(host: str) -> None:
    dns = FakeDNS({host: ["93.184.216.34"]})
    error = await _refusal(f"http://{host}/v.mp4", dns, allowed_media_domains=["media.test"])
    assert error.rule == "allowed-media-domains"
    assert dns.questions == []


@pytest.mark.parametrize("answers", [None, []])
async def test_a_host_that_does_not_resolve_is_a_clear_error(answers: list[str] | None) -> None:
    dns = FakeDNS({} if answers is None else {"media.test": answers})
    error = await _refusal("http://media.test/v.mp4", dns)
    assert error.rule == "dns"
    assert "media.test" in error.message


@pytest.mark.parametrize(
    "url", ["ftp://media.test/v.mp4", "gopher://media.test/", "javascript:alert(1)", "v.mp4"]
)
async def test_other_schemes_are_refused(url: str) -> None:
    error = await _refusal(url)
    assert error.rule == "scheme"
    assert "only http and https" in error.message
