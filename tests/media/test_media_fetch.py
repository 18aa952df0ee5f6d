"""MediaFetcher end to end: data: and file:// sources, and http against a loopback server."""

import base64
import socket
from collections.abc import Callable
from pathlib import Path

import pytest

from media import MediaError, MediaFetcher, MediaOptions

Options = Callable[..., MediaOptions]


async def _fetch(url: str, options: MediaOptions, resolver: object = None) -> bytes:
    kwargs = {} if resolver is None else {"resolver": resolver}
    async with MediaFetcher(options, **kwargs) as fetcher:
        return await fetcher.fetch(url)


async def _refusal(url: str, options: MediaOptions, resolver: object = None) -> MediaError:
    with pytest.raises(MediaError) as caught:
        await _fetch(url, options, resolver)
    return caught.value


# data: URLs


async def test_a_base64_data_url_gives_its_bytes(mp4_video: bytes) -> None:
    url = "data:video/mp4;base64," + base64.b64encode(mp4_video).decode()
    assert await _fetch(url, MediaOptions()) == mp4_video


@pytest.mark.parametrize(
    ("url", "rule"),
    [
        ("data:video/mp4;base64,", "empty-media"),
        ("data:video/mp4;base64,@@not base64@@", "data-url"),
        ("data:video/mp4;base64,QUJ", "data-url"),
        ("data:video/mp4,plain-text-payload", "data-url"),
        ("data:video/mp4;base64", "data-url"),
    ],
)
async def test_bad_data_urls_are_clear_errors(url: str, rule: str) -> None:
    error = await _refusal(url, MediaOptions())
    assert (error.rule, error.status) == (rule, 400)


async def test_an_oversized_data_url_is_a_413() -> None:
    url = "data:video/mp4;base64," + base64.b64encode(b"x" * 2000).decode()
    error = await _refusal(url, MediaOptions(max_fetch_bytes=1000))
    assert (error.rule, error.status) == ("max-fetch-bytes", 413)


# file:// and bare paths


@pytest.fixture
def media_dir(tmp_path: Path, mp4_video: bytes) -> Path:
    allowed = tmp_path / "allowed"
    allowed.mkdir()
    (allowed / "clip.mp4").write_bytes(mp4_video)
    (allowed / "a clip.mp4").write_bytes(mp4_video)
    (tmp_path / "secret.mp4").write_bytes(b"outside")
    (allowed / "link.mp4").symlink_to(tmp_path / "secret.mp4")
    return allowed


@pytest.mark.parametrize(
    "name", ["file://{dir}/clip.mp4", "{dir}/clip.mp4", "file://localhost{dir}/a%20clip.mp4"]
)
async def test_local_files_inside_the_allowed_folder_are_read(
    media_dir: Path, mp4_video: bytes, name: str
) -> None:
    options = MediaOptions(allowed_local_media_path=media_dir)
    assert await _fetch(name.format(dir=media_dir), options) == mp4_video


@pytest.mark.parametrize(
    "name",
    [
        "file://{dir}/../secret.mp4",
        "{dir}/../secret.mp4",
        "file://{dir}/%2e%2e/secret.mp4",
        "file://{dir}/link.mp4",
        "/etc/passwd",
    ],
)
async def test_local_files_outside_the_allowed_folder_are_refused(
    media_dir: Path, name: str
) -> None:
    options = MediaOptions(allowed_local_media_path=media_dir)
    error = await _refusal(name.format(dir=media_dir), options)
    assert error.rule == "allowed-local-media-path"
    assert "outside the folder" in error.message


async def test_local_files_are_refused_when_no_folder_is_allowed(media_dir: Path) -> None:
    error = await _refusal(f"file://{media_dir}/clip.mp4", MediaOptions())
    assert error.rule == "allowed-local-media-path"


@pytest.mark.parametrize(
    ("name", "rule"),
    [
        ("file://{dir}/missing.mp4", "local-file"),
        ("file://{dir}", "local-file"),
        ("file://otherhost{dir}/clip.mp4", "allowed-local-media-path"),
        ("file:clip.mp4", "allowed-local-media-path"),
    ],
)
async def test_bad_local_urls_are_clear_errors(media_dir: Path, name: str, rule: str) -> None:
    options = MediaOptions(allowed_local_media_path=media_dir)
    assert (await _refusal(name.format(dir=media_dir), options)).rule == rule


# http(s) against the loopback server


async def test_http_fetch_returns_the_body_and_sends_the_user_agent(
    media_server, loopback_options: Options, mp4_video: bytes
) -> None:
    options = loopback_options(user_agent="vidgraph-test/1")
    assert await _fetch(f"{media_server.base}/video", options) == mp4_video
    path, headers = media_server.requests[-1]
    assert (path, headers["User-Agent"]) == ("/video", "vidgraph-test/1")


async def test_the_loopback_server_is_refused_without_the_test_opt_ins(media_server) -> None:
    error = await _refusal(f"{media_server.base}/video", MediaOptions(allow_direct_port=True))
    assert error.rule == "allow-direct-ip"
    error = await _refusal(
        f"{media_server.base}/video", MediaOptions(allow_direct_ip=True, allow_direct_port=True)
    )
    assert error.rule == "allow-private-ips"


@pytest.mark.parametrize(("status", "answer"), [(404, 400), (500, 502)])
async def test_http_errors_name_the_status_and_a_failing_host_is_a_502(
    media_server, loopback_options: Options, status: int, answer: int
) -> None:
    error = await _refusal(f"{media_server.base}/status/{status}", loopback_options())
    assert (error.rule, error.status, error.upstream) == ("http-status", answer, answer == 502)
    assert f"HTTP {status}" in error.message


async def test_a_refused_connection_and_a_failed_lookup_are_502(
    loopback_options: Options,
) -> None:
    with socket.socket() as probe:  # a port nothing listens on
        probe.bind(("127.0.0.1", 0))
        closed = probe.getsockname()[1]
    error = await _refusal(f"http://127.0.0.1:{closed}/v.mp4", loopback_options())
    assert (error.rule, error.status) == ("fetch", 502)

    async def no_dns(host: str, port: int) -> list[str]:
        raise OSError("Name or service not known")

    error = await _refusal("http://media.example/v.mp4", loopback_options(), no_dns)
    assert (error.rule, error.status) == ("dns", 502)


async def test_a_server_that_does_not_answer_in_time_times_out(
    media_server, loopback_options: Options
) -> None:
    error = await _refusal(f"{media_server.base}/slow?s=1.5", loopback_options(timeout_ms=300))
    assert (error.rule, error.status) == ("timeout-ms", 504)


async def test_timeout_bounds_the_whole_download_not_each_read(
    media_server, loopback_options: Options
) -> None:
    """Each byte arrives well within the timeout, the whole body does not."""
    url = f"{media_server.base}/drip?n=8&every=0.1"
    assert await _fetch(url, loopback_options(timeout_ms=3000)) == b"x" * 8
    error = await _refusal(url, loopback_options(timeout_ms=400))
    assert error.rule == "timeout-ms"


@pytest.mark.parametrize("route", ["video", "chunked?size=20000"])
async def test_bodies_over_the_byte_cap_are_a_413(
    media_server, loopback_options: Options, mp4_video: bytes, route: str
) -> None:
    """Refused from Content-Length when the server sends one, else while streaming."""
    limit = min(len(mp4_video), 20000) - 1
    error = await _refusal(f"{media_server.base}/{route}", loopback_options(max_fetch_bytes=limit))
    assert (error.rule, error.status) == ("max-fetch-bytes", 413)


async def test_up_to_three_redirects_are_followed(media_server, loopback_options: Options) -> None:
    assert await _fetch(f"{media_server.base}/hops/3", loopback_options()) == b"arrived"
    error = await _refusal(f"{media_server.base}/hops/4", loopback_options())
    assert error.rule == "redirects"


@pytest.mark.parametrize(
    ("target", "rule"),
    [
        ("http://169.254.169.254/latest/meta-data/", "blocked-address"),
        ("http://[::ffff:169.254.169.254]/", "blocked-address"),
        ("http://metadata.google.internal/computeMetadata/v1/", "blocked-host"),
        ("http://evil.test/", "blocked-address"),
        ("file:///etc/passwd", "scheme"),
        ("ftp://evil.test/", "scheme"),
    ],
)
async def test_every_redirect_is_checked(
    media_server, loopback_options: Options, target: str, rule: str
) -> None:
    async def dns(host: str, port: int) -> list[str]:
        return {"evil.test": ["169.254.169.254"]}[host]

    url = f"{media_server.base}/redirect?to={target}"
    assert (await _refusal(url, loopback_options(), dns)).rule == rule


async def test_the_address_checked_is_the_address_connected_to(
    media_server, loopback_options: Options, mp4_video: bytes
) -> None:
    """DNS rebinding: a second lookup would say metadata, but there is no second lookup."""
    answers = iter([["127.0.0.1"]] + [["169.254.169.254"]] * 5)
    questions: list[str] = []

    async def rebinding_dns(host: str, port: int) -> list[str]:
        questions.append(host)
        return next(answers)

    url = f"http://rebind.test:{media_server.port}/video"
    assert await _fetch(url, loopback_options(), rebinding_dns) == mp4_video
    assert questions == ["rebind.test"]
    _, headers = media_server.requests[-1]
    assert headers["Host"] == f"rebind.test:{media_server.port}"


async def test_each_redirect_hop_is_resolved_and_checked_again(
    media_server, loopback_options: Options
) -> None:
    answers = iter([["127.0.0.1"], ["169.254.169.254"]])

    async def rebinding_dns(host: str, port: int) -> list[str]:
        return next(answers)

    base = f"http://rebind.test:{media_server.port}"
    error = await _refusal(f"{base}/redirect?to={base}/video", loopback_options(), rebinding_dns)
    assert error.rule == "blocked-address"


async def test_an_allow_listed_host_name_is_fetched(
    media_server, loopback_options: Options, mp4_video: bytes
) -> None:
    async def dns(host: str, port: int) -> list[str]:
        return ["127.0.0.1"]

    options = loopback_options(allowed_media_domains=["media.test"])
    url = f"http://media.test:{media_server.port}/video"
    assert await _fetch(url, options, dns) == mp4_video
    error = await _refusal(f"http://other.test:{media_server.port}/video", options, dns)
    assert error.rule == "allowed-media-domains"


async def test_one_fetcher_serves_many_fetches(
    media_server, loopback_options: Options, mp4_video: bytes
) -> None:
    async with MediaFetcher(loopback_options()) as fetcher:
        for _ in range(3):
            assert await fetcher.fetch(f"{media_server.base}/video") == mp4_video


async def test_a_closed_port_is_a_fetch_error(loopback_options: Options) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    error = await _refusal(f"http://127.0.0.1:{port}/video", loopback_options())
    assert error.rule == "fetch"
    assert "ConnectError" in error.message


async def test_a_malformed_url_is_a_clear_error() -> None:
    assert (await _refusal("http://[::1/video", MediaOptions())).rule == "url"
