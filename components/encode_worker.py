"""EncodeWorker: one video URL in, its vision embeddings readable over NIXL out.

The story of a request here: fetch the bytes (SSRF-safe, `media`), look the
embeddings up by content hash + sampling parameters + model, and only on a
miss decode and sample the frames (PyAV) and run the vision tower, pooling
and projector (`engine`). Requests for the same media that arrive together
share that work (single-flight); callers route equal media to the same
worker, so its cache stays hot. The embeddings are then exposed as a NIXL-readable
buffer; the caller reads them straight from this process's memory, and the
buffer is released once read (or when its lease runs out). A caller that asks
for `report_stages` hears `fetching`, `decoding` and `encoding` (neither on a
cache hit), then `encoding` again with what the video is and how many frames
were sampled.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from collections.abc import AsyncIterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import Field

from components.embedding_cache import (
    EmbeddingCache,
    SingleFlight,
    embedding_key,
    sampling_tag,
)
from components.model_worker import (
    ModelWorkerConfig,
    device_stats,
    load_engine,
    open_transport,
    transport_stats,
)
from components.stage_times import StageTimes
from components.stages import Report, ignore, reporting
from media import (
    DEFAULT_UPLOAD_DIR,
    DecodedVideo,
    MediaError,
    MediaFetcher,
    MediaOptions,
    VideoSampling,
    decode_image,
    decode_video,
    probe_video,
)
from protocol.errors import ServiceError
from protocol.messages import EncodeRequest, EncodeResponse, StageUpdate, VideoInfo
from runtime import Component, Context, endpoint

if TYPE_CHECKING:
    from engine.models import MediaEmbedding

# torch, the engine and NIXL are imported in start(): every process of the graph
# imports this module through graphs/, and the frontend should not pay for them.

MiB = 1 << 20
log = logging.getLogger(__name__)


class EncodeWorkerConfig(ModelWorkerConfig, MediaOptions):
    """The model that encodes, plus the media options (fetching, sampling, limits)."""

    embedding_cache_mib: int = Field(default=1024, ge=0)
    read_lease_s: float = Field(default=60.0, gt=0)
    max_concurrent_fetches: int = Field(default=16, ge=1)
    """Media downloads at once; more wait their turn, so a burst cannot hold unbounded bytes."""
    upload_dir: Path = DEFAULT_UPLOAD_DIR
    """The frontend's `upload-dir`: `file://` URLs under it are uploads and may be read."""


class EncodeWorker(Component):
    Config = EncodeWorkerConfig

    async def start(self) -> None:

        self.engine = await load_engine(self.config, max_num_seqs=0, part="vision")
        self.fetcher = MediaFetcher(self.config)
        self.uploads = MediaFetcher(
            self.config.model_copy(update={"allowed_local_media_path": self.config.upload_dir})
        )
        self.fetch_slots = asyncio.Semaphore(self.config.max_concurrent_fetches)
        self.cache = EmbeddingCache(self.config.embedding_cache_mib * MiB)
        self.flights: SingleFlight[tuple[MediaEmbedding, bool, bytes]] = SingleFlight()
        self.transport = open_transport(self.config)
        self.encoded = 0
        self.times = StageTimes()

    async def stop(self) -> None:
        await self.fetcher.aclose()
        await self.uploads.aclose()

    @endpoint
    async def encode(self, request: dict[str, Any], ctx: Context) -> AsyncIterator[dict[str, Any]]:
        from transport import Descriptor

        req = EncodeRequest.model_validate(request)
        try:
            async for item in reporting(lambda report: self.embed(req, report)):
                if isinstance(item, StageUpdate):
                    if req.report_stages:
                        yield item.model_dump()
                else:
                    embeddings, cache_hit = item
        except MediaError as error:
            raise ServiceError(
                str(error),
                status=error.status,
                type="upstream_error" if error.upstream else "invalid_request_error",
                param="messages",
                code=error.rule,
            ) from error
        tensors = [embeddings.embeddings, *embeddings.features.values()]
        readable = await self.transport.create_readable(
            [Descriptor(tensor) for tensor in tensors], lease_s=self.config.read_lease_s
        )
        yield EncodeResponse(
            embeddings=readable.metadata.to_dict(),
            num_tokens=embeddings.num_tokens,
            num_frames=sampled_frames(embeddings),
            cache_hit=cache_hit,
            modality=embeddings.modality,
            features=list(embeddings.features),
            grid=embeddings.grid,
            expansion=embeddings.expansion,
            content_hash=embeddings.content_hash,
        ).model_dump()

    async def embed(
        self, req: EncodeRequest, report: Report = ignore
    ) -> tuple[MediaEmbedding, bool]:
        """One video or image encoded, from the cache when its bytes were seen before."""
        modality = req.media.modality
        self.config.check_enabled(modality)
        kwargs = req.media_io_kwargs or {}
        # An image ignores the video sampling: it must work with video disabled.
        sampling = (
            self.config.video_sampling(kwargs.get("video"), self.engine.model.video_sampler)
            if modality == "video"
            else None
        )
        report(StageUpdate(stage="fetching"))
        how = sampling_tag(modality, sampling)
        url = req.media.url
        (embeddings, hit, data), shared = await self.flights.run(
            (url, how), lambda: self.fetch_and_embed(url, modality, sampling, how, report)
        )
        if req.report_stages and modality == "video":
            # Repeated, with what was found: a caller that shared another's
            # flight heard neither `decoding` nor `encoding` from it.
            info = await self.video_info(data, sampled_frames(embeddings), embeddings.frame_size)
            report(StageUpdate(stage="encoding", video=info))
        return embeddings, hit or shared

    async def fetch_and_embed(
        self,
        url: str,
        modality: str,
        sampling: VideoSampling | None,
        how: str,
        report: Report,
    ) -> tuple[MediaEmbedding, bool, bytes]:
        upload = url.startswith(self.config.upload_dir.as_uri() + "/")
        async with self.fetch_slots:
            with self.times.time("fetch"):
                data = await (self.uploads if upload else self.fetcher).fetch(url)
        # Hashing tens of MB takes long enough to stall other requests: not on the loop.
        key = await asyncio.to_thread(embedding_key, data, how, self.config.model)
        cached = self.cache.get(key)
        if cached is not None:
            return cached, True, data
        report(StageUpdate(stage="decoding"))
        with self.times.time("decode"):
            decoded = await self.decode(data, modality, sampling)
        report(StageUpdate(stage="encoding"))
        # Qwen3-VL writes each frame's time (index / source fps) into the prompt.
        times = (
            [i / decoded.source_fps for i in decoded.frame_indices] if decoded.source_fps else None
        )
        with self.times.time("encode"):
            embeddings = await asyncio.to_thread(
                self.engine.encode, decoded.frames, modality, times
            )
        height, width = decoded.frames.shape[1:3]
        embeddings = dataclasses.replace(
            embeddings,
            frame_size=(width, height),
            frames_sampled=len(decoded.frames),
            content_hash=key,
        )
        self.cache.put(key, embeddings)
        self.encoded += 1
        return embeddings, False, data

    async def video_info(
        self, data: bytes, frames: int, frame_size: tuple[int, int] | None
    ) -> VideoInfo:
        """What the caller is told of its video: the file's probe and the frames sampled."""
        probe = await asyncio.to_thread(probe_video, data)
        sampled_width, sampled_height = frame_size or (probe.width, probe.height)
        return VideoInfo(
            duration_s=probe.duration_s,
            fps=probe.fps,
            width=probe.width,
            height=probe.height,
            frames_sampled=frames,
            sampled_width=sampled_width,
            sampled_height=sampled_height,
        )

    async def decode(
        self, data: bytes, modality: str, sampling: VideoSampling | None
    ) -> DecodedVideo:
        """Decode untrusted bytes: whatever the decoder raises on them is the sender's 400.

        Crafted files make PyAV fail in ways `media` does not name yet (metadata
        that is not UTF-8, a stream with no known codec); they are still bad
        input, not a server fault, and must not read as a 500.
        """
        try:
            if sampling is not None:
                return await decode_video(data, sampling)
            return await decode_image(data, self.config)
        except MediaError:
            raise
        except Exception as error:
            log.warning("decoding a %s failed unexpectedly: %r", modality, error)
            raise MediaError(
                f"the {modality} could not be read ({type(error).__name__}); send a complete, "
                "supported file",
                rule="unreadable",
            ) from error

    def stats(self) -> dict[str, float]:
        return {
            "embedding_cache_hits": self.cache.hits,
            "embedding_cache_misses": self.cache.misses,
            "embedding_cache_bytes": self.cache.bytes,
            "media_encoded": self.encoded,
            "media_shared_in_flight": self.flights.shared,
            **transport_stats(self.transport),
            **self.times.stats(),
            **device_stats(self.config),
        }


def sampled_frames(embeddings: MediaEmbedding) -> int:
    """The frames an item was sampled to; `fetch_and_embed` records it on every item."""
    if embeddings.frames_sampled is None:
        raise RuntimeError("embeddings that did not come from fetch_and_embed")
    return embeddings.frames_sampled
