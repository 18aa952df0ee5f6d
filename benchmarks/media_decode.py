"""How long decode + sample takes on a 60 s 720p h264 clip, next to decoding every frame.

    python -m benchmarks.media_decode [--seconds 60] [--gops 250 60] [--repeats 3]

The clip is generated here (a textured pan and a moving box, libx264
`veryfast`, B-frames on, one clip per keyframe interval), so the run needs no
download.
Prints a table (speedup: best time of "decode every frame" over the case's best
time) and writes benchmarks/results/media_decode.json.
"""

import argparse
import io
import json
import os
import platform
import statistics
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path

import av
import numpy as np

from media import VideoSampling, decode_video_sync

WIDTH, HEIGHT, FPS = 1280, 720, 30
RESULTS = Path(__file__).parent / "results" / "media_decode.json"


def make_clip(seconds: int, gop: int) -> bytes:
    """A 720p h264 MP4 of a textured pan with a moving box: every frame differs.

    The texture repeats every 256 pixels, so the pan never jumps, and scene-cut
    detection is off: keyframes come exactly every `gop` frames.
    """
    ys, xs = np.mgrid[0 : HEIGHT + 256, 0 : WIDTH + 256]
    waves = np.sin(xs * np.pi / 32) * np.sin(ys * np.pi / 32) * 60
    texture = np.stack([xs + waves, ys - waves, xs + ys], axis=-1).astype(np.int64).astype(np.uint8)
    buffer = io.BytesIO()
    with av.open(buffer, "w", format="mp4") as output:
        stream = output.add_stream(
            "libx264", rate=FPS, options={"preset": "veryfast", "x264-params": "scenecut=0"}
        )
        stream.width, stream.height, stream.pix_fmt = WIDTH, HEIGHT, "yuv420p"
        stream.gop_size = gop
        for i in range(seconds * FPS):
            top, left = (2 * i) % 256, (4 * i) % 256
            pixels = texture[top : top + HEIGHT, left : left + WIDTH].copy()
            box = (17 * i) % (WIDTH - 160)
            pixels[200:360, box : box + 160] = 255
            output.mux(stream.encode(av.VideoFrame.from_ndarray(pixels, format="rgb24")))
        output.mux(stream.encode())
    return buffer.getvalue()


def keyframe_count(data: bytes) -> int:
    with av.open(io.BytesIO(data)) as container:
        return sum(packet.is_keyframe for packet in container.demux(video=0))


def sample(data: bytes, num_frames: int) -> int:
    """What the encode worker runs: index, seek, decode, convert the sampled frames."""
    return len(decode_video_sync(data, VideoSampling(num_frames=num_frames)).frames)


def decode_every_frame(data: bytes, to_rgb: bool) -> int:
    """The baseline a sampler without seeking pays: every frame through the decoder."""
    count = 0
    with av.open(io.BytesIO(data)) as container:
        for frame in container.decode(video=0):
            if to_rgb:
                frame.to_ndarray(format="rgb24")
            count += 1
    return count


CASES: dict[str, Callable[[bytes], int]] = {
    "sample num_frames=8": partial(sample, num_frames=8),
    "sample num_frames=32": partial(sample, num_frames=32),
    "decode every frame": partial(decode_every_frame, to_rgb=False),
    "decode every frame + RGB": partial(decode_every_frame, to_rgb=True),
}
BASELINE = "decode every frame"


def timed(data: bytes, repeats: int) -> dict[str, tuple[list[float], int]]:
    """Seconds per run and frames returned, per case; rounds interleave the cases so
    that load from other processes lands on all of them alike."""
    seconds: dict[str, list[float]] = {case: [] for case in CASES}
    frames: dict[str, int] = {}
    for _ in range(repeats):
        for case, run in CASES.items():
            start = time.perf_counter()
            frames[case] = run(data)
            seconds[case].append(time.perf_counter() - start)
    return {case: (seconds[case], frames[case]) for case in CASES}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=int, default=60)
    parser.add_argument("--gops", type=int, nargs="+", default=[250, 60])
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()

    load_before = os.getloadavg()
    rows = []
    for gop in args.gops:
        start = time.perf_counter()
        clip = make_clip(args.seconds, gop)
        print(
            f"generated a {args.seconds} s clip with gop {gop} ({keyframe_count(clip)} "
            f"keyframes): {len(clip) / 1e6:.1f} MB in {time.perf_counter() - start:.0f} s"
        )
        for case, (seconds, frames) in timed(clip, args.repeats).items():
            rows.append(
                {
                    "gop": gop,
                    "case": case,
                    "frames_out": frames,
                    "median_s": statistics.median(seconds),
                    "best_s": min(seconds),
                    "runs_s": seconds,
                }
            )

    # Best-of-N is the figure to compare: the CPUs are shared, and contention only adds time.
    print(f"\n{'gop':>4}  {'case':<26} {'frames':>6} {'best s':>7} {'median s':>9} {'speedup':>8}")
    for row in rows:
        baseline = next(r for r in rows if r["gop"] == row["gop"] and r["case"] == BASELINE)
        print(
            f"{row['gop']:>4}  {row['case']:<26} {row['frames_out']:>6} {row['best_s']:>7.3f} "
            f"{row['median_s']:>9.3f} {baseline['best_s'] / row['best_s']:>7.1f}x"
        )

    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(
        json.dumps(
            {
                "clip": {
                    "seconds": args.seconds,
                    "width": WIDTH,
                    "height": HEIGHT,
                    "fps": FPS,
                    "codec": "h264 (libx264 veryfast, mp4)",
                },
                "machine": {
                    "cpus": os.cpu_count(),
                    "platform": platform.platform(),
                    "pyav": av.__version__,
                    "ffmpeg_libavcodec": av.library_versions["libavcodec"],
                    "load_average_1m_before_after": [load_before[0], os.getloadavg()[0]],
                },
                "repeats": args.repeats,
                "results": rows,
            },
            indent=2,
        )
        + "\n"
    )
    print(f"\nwrote {RESULTS}")


if __name__ == "__main__":
    main()
