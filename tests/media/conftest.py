"""Fixtures for the media tests: videos made with PyAV, and a loopback HTTP server."""

import io
import threading
import time
from collections.abc import Callable, Iterator
from fractions import Fraction
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

import av
import numpy as np
import pytest

from media import MediaOptions
from media.samples import add_reproducible_stream, reproducible_frame

LEVEL_STEP = 6
"""Frame i of a generated video is a flat grey of level 6 * i, so its index can be read back."""


def _make_video(
    codec: str = "libx264",
    container: str = "mp4",
    *,
    frames: int = 30,
    fps: int = 10,
    width: int = 64,
    height: int = 48,
    pix_fmt: str = "yuv420p",
    gop: int | None = None,
    rotation: int | None = None,
    pts_ms: list[int] | None = None,
    marker: bool = False,
) -> bytes:
    """Encode `frames` flat grey frames (frame i at level 6 * i, so at most 42) into `container`.

    `gop` sets the keyframe interval; `pts_ms` gives each frame its own
    timestamp (variable frame rate); `marker`
    paints a red block in the top-left corner so orientation can be checked.
    Encoded reproducibly: tests compare the frames of two encodes (a rotated and
    a plain one), and x264's defaults made those differ now and then under load.
    """
    buffer = io.BytesIO()
    with av.open(buffer, "w", format=container) as output:
        stream = add_reproducible_stream(
            output, codec, rate=fps, width=width, height=height, pix_fmt=pix_fmt
        )
        if gop is not None:
            stream.gop_size = gop
        if rotation is not None:
            stream.set_display_rotation(rotation)
        if pts_ms is not None:
            stream.codec_context.time_base = Fraction(1, 1000)
        output.start_encoding()  # write the header even when there are no frames
        for i in range(frames):
            pixels = np.full((height, width, 3), LEVEL_STEP * i, dtype=np.uint8)
            if marker:
                pixels[: height // 3, : width // 3] = (255, 0, 0)
            frame = reproducible_frame(pixels, stream, i)
            if pts_ms is not None:
                frame.pts, frame.time_base = pts_ms[i], Fraction(1, 1000)
            output.mux(stream.encode(frame))
        output.mux(stream.encode())
    return buffer.getvalue()


def _frame_levels(frames: np.ndarray) -> list[int]:
    """Which generated frame each decoded frame is, from its grey level."""
    return [round(float(frame[-4:, -4:].mean()) / LEVEL_STEP) for frame in frames]


@pytest.fixture(scope="session")
def make_video() -> Callable[..., bytes]:
    return _make_video


@pytest.fixture(scope="session")
def frame_levels() -> Callable[[np.ndarray], list[int]]:
    return _frame_levels


@pytest.fixture(scope="session")
def mp4_video() -> bytes:
    """30 frames at 10 fps (3 s), 64x48, h264."""
    return _make_video()


class _Handler(BaseHTTPRequestHandler):
    """Routes that misbehave on purpose: errors, slowness, oversize bodies, redirects."""

    protocol_version = "HTTP/1.1"
    server: "_MediaServer"

    def do_GET(self) -> None:
        self.server.requests.append((self.path, dict(self.headers)))
        parts = urlsplit(self.path)
        query = {key: values[0] for key, values in parse_qs(parts.query).items()}
        route = parts.path.strip("/").split("/")
        if route[0] == "video":
            self._send(200, self.server.body)
        elif route[0] == "status":
            self._send(int(route[1]), b"nope")
        elif route[0] == "slow":
            time.sleep(float(query["s"]))
            self._send(200, b"late")
        elif route[0] == "drip":
            self._drip(int(query["n"]), float(query["every"]))
        elif route[0] == "chunked":
            self._chunked(int(query["size"]))
        elif route[0] == "redirect":
            self._redirect(query["to"])
        elif route[0] == "hops" and int(route[1]) > 0:
            self._redirect(f"/hops/{int(route[1]) - 1}")
        elif route[0] == "hops":
            self._send(200, b"arrived")
        else:
            self._send(404, b"no such route")

    def _send(self, status: int, body: bytes) -> None:
        self.send_response(status)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _redirect(self, location: str) -> None:
        self.send_response(302)
        self.send_header("Location", location)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def _drip(self, count: int, every: float) -> None:
        self.send_response(200)
        self.send_header("Content-Length", str(count))
        self.end_headers()
        for _ in range(count):
            self.wfile.write(b"x")
            self.wfile.flush()
            time.sleep(every)

    def _chunked(self, size: int) -> None:
        self.send_response(200)
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        for start in range(0, size, 256):
            chunk = b"y" * min(256, size - start)
            self.wfile.write(b"%x\r\n%s\r\n" % (len(chunk), chunk))
        self.wfile.write(b"0\r\n\r\n")

    def log_message(self, format: str, *args: object) -> None:
        """Keep test output quiet."""


class _MediaServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, body: bytes) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.body = body
        self.requests: list[tuple[str, dict[str, str]]] = []

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"

    @property
    def port(self) -> int:
        return self.server_address[1]


@pytest.fixture(scope="session")
def media_server(mp4_video: bytes) -> Iterator[_MediaServer]:
    server = _MediaServer(mp4_video)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()
    thread.join(timeout=5)


@pytest.fixture
def loopback_options() -> Callable[..., MediaOptions]:
    """Options that may reach the loopback test server; tests opt in to each relaxation."""

    def build(**overrides: object) -> MediaOptions:
        settings = {"allow_private_ips": True, "allow_direct_ip": True, "allow_direct_port": True}
        return MediaOptions(**{**settings, **overrides})

    return build
