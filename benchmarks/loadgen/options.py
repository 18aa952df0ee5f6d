"""Command-line flags of the workload mix, shared by the load generator and the exporter."""

from __future__ import annotations

import argparse
from collections.abc import Callable

from benchmarks.loadgen.workload import WorkloadSpec


def numbers(kind: type) -> Callable[[str], list]:
    """argparse type for a comma-separated list such as `1,2,4`."""
    return lambda text: [kind(item) for item in text.split(",") if item]


def add_workload_arguments(parser: argparse.ArgumentParser) -> None:
    mix = parser.add_argument_group("workload mix (shares sum to 1)")
    mix.add_argument(
        "--video-share", type=float, help="fresh, never-seen videos (default: 1 - repeat - text)"
    )
    mix.add_argument(
        "--repeat-share",
        type=float,
        default=0.0,
        help="videos re-sent byte for byte from a hot pool (embedding-cache hits)",
    )
    mix.add_argument("--text-share", type=float, default=0.0, help="text-only prompts")
    mix.add_argument("--image-share", type=float, default=0.0, help="one fresh PNG image each")
    mix.add_argument("--repeat-pool", type=int, default=4, help="number of hot videos")
    mix.add_argument("--video-seconds", type=numbers(float), default=[1.0, 2.0, 4.0])
    mix.add_argument("--video-fps", type=int, default=10)
    mix.add_argument("--video-size", default="96x64", help="WIDTHxHEIGHT")
    mix.add_argument("--max-tokens", type=int, default=32, help="output tokens of every request")
    mix.add_argument("--seed", type=int, default=0, help="workload mix (and arrival times)")
    mix.add_argument(
        "--turns", type=int, default=1, help="turns per conversation about the same video (1-4)"
    )
    mix.add_argument("--num-frames", type=int, help="frames to sample per video (media_io_kwargs)")


def workload_spec(args: argparse.Namespace) -> WorkloadSpec:
    """The spec the flags describe; exits with the rule that was broken if they are invalid."""
    try:
        width, height = (int(side) for side in args.video_size.lower().split("x"))
        video_share = args.video_share
        if video_share is None:
            video_share = 1.0 - args.repeat_share - args.text_share - args.image_share
        return WorkloadSpec(
            video_share=video_share,
            repeat_share=args.repeat_share,
            text_share=args.text_share,
            image_share=args.image_share,
            video_seconds=tuple(args.video_seconds),
            fps=args.video_fps,
            width=width,
            height=height,
            repeat_pool=args.repeat_pool,
            max_tokens=args.max_tokens,
            seed=args.seed,
            turns=args.turns,
            num_frames=args.num_frames,
        )
    except ValueError as exc:
        raise SystemExit(f"error: {exc}") from None
