"""Server media options, and the per-request video sampling merged over them.

`MediaOptions` is what an operator writes in YAML (kebab-case keys, the names
and defaults of Dynamo's MediaFetcher/MediaDecoder where they exist).
`VideoSampling` is what one request decodes with: the server's defaults with the
request's `media_io_kwargs["video"]` merged over them. A request may pick its
own sampling and may lower a limit, never raise one, because limits protect the
server rather than describe the request.
"""

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    PositiveFloat,
    PositiveInt,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic.alias_generators import to_snake

from media.errors import MediaError

MiB = 1 << 20
DEFAULT_NUM_FRAMES = 8
"""Frames sampled when neither the server nor the request picks num_frames or fps."""

Modality = Literal["video", "image"]
Sampler = Literal["uniform", "qwen-vl"]
QWEN_FPS = 2.0
"""The qwen-vl sampler's frame rate when neither the server nor the request picks one."""


def _to_kebab(name: str) -> str:
    return to_snake(name).replace("_", "-")


def _forbid_both_modes(num_frames: int | None, fps: float | None) -> None:
    if num_frames is not None and fps is not None:
        raise MediaError(
            f"num_frames={num_frames} and fps={fps} were both given; "
            "sample either a fixed number of frames or at a frame rate, not both",
            rule="num_frames-xor-fps",
        )


class VideoLimits(BaseModel):
    """Ceilings on one video's decode, checked before any frame is decoded."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    max_alloc: PositiveInt = 512 * MiB
    """Most bytes the sampled RGB frames may take: frames x width x height x 3."""
    max_duration_s: PositiveFloat = 3600.0
    max_sampled_frames: PositiveInt = 256
    """Most frames one video may be sampled into, whichever sampling mode asked."""


class VideoSampling(VideoLimits):
    """How to sample one video: `num_frames` XOR (`fps` with optional `max_frames`).

    `sampler` picks the rules: `uniform` (`media.sampling`: uniform timestamps,
    frames at their own size) or `qwen-vl` (`media.qwen_vl`: as `qwen-vl-utils`
    samples for Qwen3-VL, which alone reads `min_frames` and the pixel budgets).
    """

    sampler: Sampler = "uniform"
    num_frames: PositiveInt | None = None
    fps: PositiveFloat | None = None
    min_frames: PositiveInt | None = None
    max_frames: PositiveInt | None = None
    min_pixels: PositiveInt | None = None
    max_pixels: PositiveInt | None = None
    total_pixels: PositiveInt | None = None
    strict: bool = False
    """Fail when a sampled frame cannot be decoded, instead of dropping it."""

    @model_validator(mode="after")
    def _one_mode(self) -> "VideoSampling":
        _forbid_both_modes(self.num_frames, self.fps)
        if self.num_frames is None and self.fps is None:
            raise MediaError("give num_frames or fps", rule="num_frames-xor-fps")
        if self.sampler == "uniform":
            for name in _QWEN_ONLY:
                if getattr(self, name) is not None:
                    raise MediaError(
                        f"{name} applies to the qwen-vl sampler only; this server samples "
                        "videos uniformly (server option: video-sampler)",
                        rule="media_io_kwargs",
                    )
        if self.max_frames is not None and self.fps is None:
            raise MediaError(
                f"max_frames={self.max_frames} caps fps sampling, but no fps was given; "
                "use num_frames for a fixed count",
                rule="num_frames-xor-fps",
            )
        if self.num_frames is not None and self.num_frames > self.max_sampled_frames:
            raise MediaError(
                f"num_frames={self.num_frames} is over the limit of {self.max_sampled_frames}; "
                "ask for fewer frames",
                rule="max-sampled-frames",
            )
        return self

    def cache_key(self) -> str:
        """A stable string of every field, so equal keys mean an identical decode."""
        return "video:" + json.dumps(self.model_dump(), sort_keys=True, separators=(",", ":"))


_QWEN_ONLY = ("min_frames", "min_pixels", "max_pixels", "total_pixels")


class _VideoRequest(BaseModel):
    """The keys a request may set under `media_io_kwargs["video"]`."""

    model_config = ConfigDict(extra="forbid")

    num_frames: PositiveInt | None = None
    fps: PositiveFloat | None = None
    min_frames: PositiveInt | None = None
    max_frames: PositiveInt | None = None
    min_pixels: PositiveInt | None = None
    max_pixels: PositiveInt | None = None
    total_pixels: PositiveInt | None = None
    strict: bool | None = None
    max_alloc: PositiveInt | None = None
    max_duration_s: PositiveFloat | None = None
    max_sampled_frames: PositiveInt | None = None


class MediaOptions(BaseModel):
    """Everything an operator configures about media: fetching, modalities, sampling, limits.

    Build it from a YAML section (`MediaOptions(**section)`, kebab-case keys) or
    from Python (snake_case keywords). Unknown keys are errors so typos surface
    at start-up.
    """

    model_config = ConfigDict(
        alias_generator=_to_kebab, populate_by_name=True, frozen=True, extra="forbid"
    )

    user_agent: str = "vidgraph/0.1"
    timeout_ms: PositiveInt = 30_000
    """Whole-fetch deadline, redirects and body included."""
    allow_direct_ip: bool = False
    """Off: a URL whose host is a literal IP address is refused."""
    allow_direct_port: bool = False
    """Off: a URL with a port other than 80 (http) or 443 (https) is refused."""
    allow_private_ips: bool = False
    """On: loopback, RFC 1918 / ULA and CGNAT addresses may be fetched (tests, on-prem)."""
    allowed_media_domains: frozenset[str] | None = None
    """If set, only these exact host names may be fetched from."""
    allowed_local_media_path: Path | None = None
    """If set, `file://` URLs and bare absolute paths may read files under this folder."""
    max_fetch_bytes: PositiveInt = 256 * MiB

    enable_video: bool = True
    enable_image: bool = True

    video_sampler: Literal["auto", "uniform", "qwen-vl"] = "auto"
    """`auto`: the model family's own (qwen-vl for Qwen3-VL, uniform otherwise)."""
    num_frames: PositiveInt | None = None
    fps: PositiveFloat | None = None
    min_frames: PositiveInt | None = None
    max_frames: PositiveInt | None = None
    min_pixels: PositiveInt | None = None
    max_pixels: PositiveInt | None = None
    total_pixels: PositiveInt | None = None
    strict: bool = False

    max_alloc: PositiveInt = 512 * MiB
    """Most bytes a decoded video's sampled frames, or a decoded image, may take as RGB."""
    max_duration_s: PositiveFloat = 3600.0
    max_sampled_frames: PositiveInt = 256
    max_image_width: PositiveInt = 8192
    max_image_height: PositiveInt = 8192

    @field_validator("allowed_media_domains")
    @classmethod
    def _normalize_domains(cls, domains: frozenset[str] | None) -> frozenset[str] | None:
        return None if domains is None else frozenset(d.lower().rstrip(".") for d in domains)

    @model_validator(mode="after")
    def _check_video_defaults(self) -> "MediaOptions":
        """Fail at start-up, not on the first request, when the video defaults conflict."""
        try:
            _forbid_both_modes(self.num_frames, self.fps)
            if self.enable_video:
                knobs = any(getattr(self, name) is not None for name in _QWEN_ONLY)
                self.video_sampling(family_sampler="qwen-vl" if knobs else "uniform")
        except MediaError as error:
            raise ValueError(str(error)) from None
        return self

    def check_enabled(self, modality: Modality) -> None:
        """Refuse a request carrying a modality this server does not serve."""
        if not getattr(self, f"enable_{modality}"):
            raise MediaError(
                f"this server does not accept {modality} input; send it without the "
                f"{modality} part (server option: enable-{modality})",
                rule=f"enable-{modality}",
            )

    def video_sampling(
        self, video_kwargs: Mapping[str, Any] | None = None, family_sampler: Sampler = "uniform"
    ) -> VideoSampling:
        """The sampling for one request: its `media_io_kwargs["video"]` over our defaults.

        Naming `num_frames` or `fps` in the request replaces the server's mode
        (so a server default of `fps: 2` and a request of `num_frames: 16` is
        not a conflict); naming both in one request is. `family_sampler` is the
        model's own sampler, used when `video-sampler` is `auto`.
        """
        self.check_enabled("video")
        request = _parse_video_kwargs(video_kwargs or {})
        _forbid_both_modes(request.num_frames, request.fps)
        sampler = family_sampler if self.video_sampler == "auto" else self.video_sampler
        if request.num_frames is not None:
            mode: dict[str, Any] = {
                "num_frames": request.num_frames,
                "max_frames": request.max_frames,
            }
        elif request.fps is not None:
            mode = {"fps": request.fps, "max_frames": request.max_frames or self.max_frames}
        elif self.fps is not None:
            mode = {"fps": self.fps, "max_frames": request.max_frames or self.max_frames}
        elif sampler == "qwen-vl" and self.num_frames is None:
            mode = {"fps": QWEN_FPS, "max_frames": request.max_frames or self.max_frames}
        else:
            mode = {
                "num_frames": self.num_frames or DEFAULT_NUM_FRAMES,
                "max_frames": request.max_frames,
            }
        knobs = {
            name: getattr(self, name) if getattr(request, name) is None else getattr(request, name)
            for name in _QWEN_ONLY
        }
        strict = self.strict if request.strict is None else request.strict
        return VideoSampling(
            sampler=sampler, **mode, **knobs, strict=strict, **self._lowered_limits(request)
        )

    def _lowered_limits(self, request: _VideoRequest) -> dict[str, Any]:
        limits = {}
        for name in VideoLimits.model_fields:
            ceiling = getattr(self, name)
            asked = getattr(request, name)
            if asked is not None and asked > ceiling:
                raise MediaError(
                    f"{name}={asked} is over this server's limit of {ceiling}; "
                    "a request can only lower a limit",
                    rule=_to_kebab(name),
                )
            limits[name] = ceiling if asked is None else asked
        return limits


def _parse_video_kwargs(video_kwargs: Mapping[str, Any]) -> _VideoRequest:
    try:
        return _VideoRequest.model_validate(video_kwargs)
    except ValidationError as error:
        problems = "; ".join(
            f"{'.'.join(str(part) for part in e['loc']) or 'video'}: {e['msg']}"
            for e in error.errors()
        )
        raise MediaError(
            f"media_io_kwargs.video is invalid ({problems}); allowed keys: "
            f"{', '.join(_VideoRequest.model_fields)}",
            rule="media_io_kwargs",
        ) from None
