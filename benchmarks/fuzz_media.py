"""Throw hostile media at a running graph: every one must be a 4xx, and no worker may die.

    python -m benchmarks.fuzz_media                      # serve graphs.disagg, 300 s of fuzz
    python -m benchmarks.fuzz_media --duration-s 60 --url http://127.0.0.1:8000

Each case is a video (or image) sent inline as a `data:` URL, the way an
attacker would: corrupt and truncated files, wrong containers, frames whose
declared size would need gigabytes once decoded (decompression bombs), and
random bytes. The fixed cases run first, then seeded random mutations of a
valid clip until the time is up. The worker pids are compared before and
after, so a crash the supervisor quietly restarted still counts.
"""

from __future__ import annotations

import argparse
import base64
import io
import json
import random
import sys
import tempfile
import time
import zlib
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path

import av
import httpx
import numpy as np
from PIL import Image

from graphs.serve import ROOT, serve_graph
from media.samples import sample_frames, write_sample_video

MIME = {"video": "video/mp4", "image": "image/png"}


def _flat_clip(width: int, height: int, frames: int) -> bytes:
    """A flat black H.264 clip: a few KB on the wire whatever its frame size."""
    out = io.BytesIO()
    with av.open(out, mode="w", format="mp4") as container:
        stream = container.add_stream("libx264", rate=8)
        stream.width, stream.height = width, height
        stream.options = {"preset": "ultrafast", "threads": "1"}
        frame = av.VideoFrame(width, height, "yuv420p")
        for plane in frame.planes:
            plane.update(bytes(plane.buffer_size))
        for _ in range(frames):
            container.mux(stream.encode(frame))
        container.mux(stream.encode())
    return out.getvalue()


def valid_clip() -> bytes:
    with tempfile.TemporaryDirectory() as folder:
        return write_sample_video(
            Path(folder) / "clip.mp4", seconds=1.0, fps=8, seed=3
        ).read_bytes()


def _clip_titled(marker: bytes) -> bytes:
    """A valid clip whose container title is `marker`, to be overwritten with bad bytes."""
    out = io.BytesIO()
    with av.open(out, mode="w", format="mp4") as container:
        container.metadata["title"] = marker.decode()
        stream = container.add_stream("libx264", rate=8)
        stream.width, stream.height = 64, 48
        for frame in sample_frames(4, 64, 48, seed=0):
            container.mux(stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")))
        container.mux(stream.encode())
    return out.getvalue()


def _png(width: int, height: int) -> bytes:
    out = io.BytesIO()
    Image.new("L", (width, height)).save(out, format="PNG")
    return out.getvalue()


def _png_claiming(width: int, height: int) -> bytes:
    """A 1x1 PNG whose header claims `width` x `height`: a bomb for any decoder that trusts it."""
    data = bytearray(_png(1, 1))
    header = b"IHDR" + width.to_bytes(4, "big") + height.to_bytes(4, "big") + data[24:29]
    data[12:29] = header
    data[29:33] = zlib.crc32(header).to_bytes(4, "big")
    return bytes(data)


def _wav() -> bytes:
    out = io.BytesIO()
    with av.open(out, mode="w", format="wav") as container:
        stream = container.add_stream("pcm_s16le", rate=8000)
        frame = av.AudioFrame.from_ndarray(
            np.zeros((1, 8000), np.int16), format="s16", layout="mono"
        )
        frame.sample_rate = 8000
        for packet in stream.encode(frame):
            container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return out.getvalue()


def fixed_cases() -> dict[str, tuple[str, bytes]]:
    """Named hostile inputs: (modality, bytes). Each must be refused with a 4xx."""
    clip = valid_clip()
    marker = b"TITLE-MARKER"
    return {
        "empty": ("video", b""),
        "random bytes": ("video", random.Random(0).randbytes(4096)),
        "truncated to the header": ("video", clip[:64]),
        "truncated halfway": ("video", clip[: len(clip) // 2]),
        "mp4 box sizes zeroed": ("video", clip[:8] + bytes(32) + clip[40:]),
        "audio only": ("video", _wav()),
        "metadata not UTF-8": ("video", _clip_titled(marker).replace(marker, b"\xff" * 12)),
        "unknown codec tag": ("video", clip.replace(b"avc1", b"zzzz")),
        "text sent as video": ("video", b"<html><body>not a video</body></html>" * 50),
        "8192x8192 h264 bomb": ("video", _flat_clip(8192, 8192, 1)),
        "60000x60000 png bomb": ("image", _png_claiming(60000, 60000)),
        "8000x8000 png under the side limit": ("image", _png_claiming(8000, 8000)),
        "mp4 sent as image": ("image", clip),
    }


def mutations(clip: bytes, seed: int) -> Iterator[tuple[str, tuple[str, bytes]]]:
    """Endless seeded mutations of a valid clip: flipped bytes, cuts, splices."""
    rng = random.Random(seed)
    while True:
        data = bytearray(clip)
        kind = rng.choice(["flip", "cut", "splice", "zero run"])
        if kind == "flip":
            for _ in range(rng.randint(1, 64)):
                data[rng.randrange(len(data))] = rng.randrange(256)
        elif kind == "cut":
            data = data[: rng.randrange(1, len(data))]
        elif kind == "splice":
            at = rng.randrange(len(data))
            data[at:at] = rng.randbytes(rng.randint(1, 512))
        else:
            at = rng.randrange(len(data))
            data[at : at + rng.randint(1, 256)] = bytes(256)
        yield f"mutation {kind}", ("video", bytes(data))


def chat_body(modality: str, data: bytes) -> dict:
    url = f"data:{MIME[modality]};base64,{base64.b64encode(data).decode()}"
    part = {"type": f"{modality}_url", f"{modality}_url": {"url": url}}
    return {
        "model": "tiny",
        "messages": [{"role": "user", "content": [{"type": "text", "text": "What?"}, part]}],
        "max_tokens": 2,
    }


def worker_pids(client: httpx.Client) -> dict[str, list[int]]:
    instances = client.get("/health").json()["instances"]
    return {name: sorted(i["pid"] for i in found) for name, found in instances.items()}


def send(client: httpx.Client, modality: str, data: bytes) -> int:
    """The status a hostile case got; a mutation may still be a decodable video (200)."""
    response = client.post("/v1/chat/completions", json=chat_body(modality, data))
    if response.status_code >= 400:
        assert "error" in response.json(), response.text
    return response.status_code


def fuzz(client: httpx.Client, duration_s: float, seed: int, say: Callable[[str], None]) -> dict:
    """Fixed cases, then mutations until `duration_s`; returns statuses by case kind."""
    before = worker_pids(client)
    statuses: dict[str, Counter[int]] = {}
    deadline = time.monotonic() + duration_s

    def book(name: str, status: int) -> None:
        statuses.setdefault(name, Counter())[status] += 1
        if status >= 500:
            say(f"{name}: HTTP {status}")

    for name, (modality, data) in fixed_cases().items():
        book(name, send(client, modality, data))
    for name, (modality, data) in mutations(valid_clip(), seed):
        if time.monotonic() > deadline:
            break
        book(name, send(client, modality, data))
    after = worker_pids(client)
    return {
        "statuses": {name: dict(counts) for name, counts in statuses.items()},
        "server_errors": sum(n for c in statuses.values() for s, n in c.items() if s >= 500),
        "workers_replaced": {n: before[n] for n in before if before[n] != after.get(n)},
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--url", help="a running graph; by default one is started")
    parser.add_argument("--duration-s", type=float, default=300.0)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks/results/fuzz_media.json")
    args = parser.parse_args()

    def run(url: str) -> dict:
        with httpx.Client(base_url=url, timeout=120) as client:
            return fuzz(client, args.duration_s, args.seed, lambda line: print(line, flush=True))

    if args.url:
        result = run(args.url)
    else:
        with tempfile.TemporaryDirectory() as folder:
            log = Path(folder) / "serve.log"
            with serve_graph("graphs.disagg", ROOT / "configs/disagg.yaml", log_path=log) as graph:
                result = run(graph.base_url)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))
    return 1 if result["server_errors"] or result["workers_replaced"] else 0


if __name__ == "__main__":
    sys.exit(main())
