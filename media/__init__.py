"""Media input for vidgraph: fetch untrusted URLs safely, then decode and sample them.

    options = MediaOptions(**config_section)                       # defaults and limits
    sampling = options.video_sampling(media_io_kwargs.get("video"))  # this request's
    async with MediaFetcher(options) as fetcher:
        data = await fetcher.fetch(url)          # SSRF-safe: http(s), data:, file://
    video = await decode_video(data, sampling)   # frames: uint8 (N, H, W, 3) RGB

Fetching and decoding are separate steps so a caller can hash the bytes and
skip decoding on a cache hit. Every refusal raises `MediaError`.
"""

from media.decoded import DecodedVideo
from media.errors import MediaError
from media.fetch import MediaFetcher
from media.guard import Resolver
from media.image import decode_image, decode_image_sync
from media.options import MediaOptions, VideoSampling
from media.probe import VideoProbe, probe_video
from media.sources import DEFAULT_UPLOAD_DIR
from media.stills import Stills, png
from media.video import decode_video, decode_video_sync

__all__ = [
    "DEFAULT_UPLOAD_DIR",
    "DecodedVideo",
    "MediaError",
    "MediaFetcher",
    "MediaOptions",
    "Resolver",
    "Stills",
    "VideoProbe",
    "VideoSampling",
    "decode_image",
    "decode_image_sync",
    "decode_video",
    "decode_video_sync",
    "png",
    "probe_video",
]
