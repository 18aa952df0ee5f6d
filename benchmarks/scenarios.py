"""Named workloads: which requests, and which load points, a comparison runs.

Each scenario is a request mix (`WorkloadSpec` fields) and a default sweep; the
command line can replace the sweep (`--concurrency`, `--rate`).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from benchmarks.loadgen.runner import LoadPoint

MIXED = {"video_share": 0.6, "repeat_share": 0.2, "text_share": 0.2}


@dataclass(frozen=True)
class Scenario:
    """A request mix and its default load points (closed loop, or Poisson rates)."""

    description: str
    mix: dict = field(default_factory=dict)
    concurrency: tuple[int, ...] = (1, 4, 16, 32)
    rates: tuple[float, ...] = ()

    def points(
        self, concurrency: list[int] | None = None, rates: list[float] | None = None
    ) -> list[LoadPoint]:
        """Poisson points when rates are given (here or on the command line), else closed loop."""
        if rates or (self.rates and not concurrency):
            return [LoadPoint(rate=rate) for rate in rates or self.rates]
        return [LoadPoint(concurrency=c) for c in concurrency or self.concurrency]


SCENARIOS = {
    "concurrency": Scenario(
        "closed-loop sweep; 60 % fresh videos (1-4 s), 20 % repeats of 4 hot videos, 20 % text",
        MIXED,
    ),
    "rate": Scenario(
        "Poisson arrivals up to saturation, same mix as `concurrency`",
        MIXED,
        rates=(2.0, 4.0, 8.0, 16.0, 32.0),
    ),
    "multiturn": Scenario(
        "4-turn chats about one fresh video each (prefix and embedding caches at work)",
        {"video_share": 1.0, "turns": 4},
        concurrency=(1, 4, 16),
    ),
    "long-video": Scenario(
        "one fresh 60 s video per request (4 fps), 32 frames sampled",
        {"video_share": 1.0, "video_seconds": (60.0,), "fps": 4, "num_frames": 32},
        concurrency=(1, 4),
    ),
    "images": Scenario("one fresh PNG image per request", {"video_share": 0.0, "image_share": 1.0}),
    "video-only": Scenario(
        "fresh 2 and 4 s videos only (for encode scaling)",
        {"video_seconds": (2.0, 4.0)},
        concurrency=(1, 2, 4, 8, 16),
    ),
    "text-video": Scenario(
        "half text-only prompts, half fresh videos", {"video_share": 0.5, "text_share": 0.5}
    ),
    "hires": Scenario(
        "the `concurrency` mix at 320x240 instead of 96x64", {**MIXED, "width": 320, "height": 240}
    ),
}
