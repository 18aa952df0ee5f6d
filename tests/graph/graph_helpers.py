"""Helpers of the graph tests: the HF reference, request bodies, token ids from logprobs."""

from __future__ import annotations

import base64
import re
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import numpy as np
import openai
import pytest
import torch
from transformers import AutoProcessor, LlavaNextVideoForConditionalGeneration

from benchmarks.systems import component_stat
from graphs.serve import ROOT, RunningGraph, serve_graph
from media import MediaOptions, decode_image_sync, decode_video_sync

NUM_FRAMES = 8  # configs/*.yaml: Common.num-frames
MAX_TOKENS = 12
# Top-two log-probs closer than this are a near-tie (see `Reference.greedy_clear_of_ties`).
NEAR_TIE = 1e-3
# Longer than the disagg configs' max-local-prefill-length (64) on its own: prefilled remotely.
LONG_TEXT = "Tell me, in many careful words, about " + "the river and the hills " * 12


def data_url(path: Path) -> str:
    return "data:video/mp4;base64," + base64.b64encode(path.read_bytes()).decode()


class Reference:
    """Greedy tokens from `transformers` `generate()` on the frames the graph samples."""

    def __init__(self, model_dir: Path) -> None:
        self.processor = AutoProcessor.from_pretrained(model_dir)
        self.model = LlavaNextVideoForConditionalGeneration.from_pretrained(model_dir).eval()
        self.sampling = MediaOptions(num_frames=NUM_FRAMES).video_sampling(None)

    def frames(self, path: Path) -> np.ndarray:
        return decode_video_sync(path.read_bytes(), self.sampling).frames

    def greedy(
        self, text: str, videos: list[Path], max_tokens: int, images: tuple[Path, ...] = ()
    ) -> list[int]:
        return self._generate(text, videos, max_tokens, images)[0]

    def greedy_clear_of_ties(
        self, text: str, video: Callable[[int], Path], candidates: range, count: int
    ) -> dict[int, list[int]]:
        """Greedy answers (MAX_TOKENS) of the first `count` seeds whose answer has no near-tie.

        For the tests of many requests at once: batching them into one forward moves
        the logits by a few ULPs, which can flip an argmax whose top two are closer
        than NEAR_TIE (measured: a gap of 1.2e-5 flipped). Exactness is checked where
        it is defined; a seed with such a tie is skipped, not tolerated.
        """
        clear: dict[int, list[int]] = {}
        for seed in candidates:
            tokens, margin = self._generate(text, [video(seed)], MAX_TOKENS, ())
            if margin >= NEAR_TIE:
                clear[seed] = tokens
            if len(clear) == count:
                return clear
        raise AssertionError(f"only {len(clear)} of {candidates} clear of near-ties")

    def _generate(
        self, text: str, videos: list[Path], max_tokens: int, images: tuple[Path, ...]
    ) -> tuple[list[int], float]:
        """Greedy tokens, and the smallest gap between the top two log-probs along them."""
        content = [{"type": "text", "text": text}]
        content += [{"type": "image"} for _ in images] + [{"type": "video"} for _ in videos]
        prompt = self.processor.apply_chat_template(
            [{"role": "user", "content": content}], add_generation_prompt=True
        )
        clips = [self.frames(v) for v in videos] or None
        pictures = [decode_image_sync(p.read_bytes(), MediaOptions()).frames[0] for p in images]
        inputs = self.processor(
            text=prompt, images=pictures or None, videos=clips, return_tensors="pt"
        )
        with torch.inference_mode():
            out = self.model.generate(
                **inputs,
                max_new_tokens=max_tokens,
                do_sample=False,
                output_scores=True,
                return_dict_in_generate=True,
            )
        top_two = torch.stack([step[0].log_softmax(-1).topk(2).values for step in out.scores])
        margin = float((top_two[:, 0] - top_two[:, 1]).min())
        return out.sequences[0, inputs["input_ids"].shape[1] :].tolist(), margin

    def greedy_text(self, prompt: str, max_tokens: int) -> list[int]:
        """A plain text prompt, no chat template (what /v1/completions runs)."""
        inputs = self.processor.tokenizer(prompt, return_tensors="pt")
        with torch.inference_mode():
            out = self.model.generate(**inputs, max_new_tokens=max_tokens, do_sample=False)
        return out[0, inputs["input_ids"].shape[1] :].tolist()


def user_message(text: str, urls: list[str]) -> list[dict]:
    """One user turn: the text first, then each video, as the reference renders it."""
    parts: list[dict] = [{"type": "text", "text": text}]
    parts += [{"type": "video_url", "video_url": {"url": url}} for url in urls]
    return [{"role": "user", "content": parts}]


def media_message(text: str, videos: list[Path], images: list[Path]) -> list[dict]:
    """One user turn: the text, then each image, then each video, as local files."""
    parts: list[dict] = [{"type": "text", "text": text}]
    parts += [{"type": "image_url", "image_url": {"url": f"file://{p}"}} for p in images]
    parts += [{"type": "video_url", "video_url": {"url": f"file://{p}"}} for p in videos]
    return [{"role": "user", "content": parts}]


def ask_model(client: openai.OpenAI, model: str, messages: list[dict], max_tokens: int, **kwargs):
    """A greedy chat completion from `model` with token ids in its logprobs."""
    extra = {"return_tokens_as_token_ids": True, **kwargs.pop("extra_body", {})}
    return client.chat.completions.create(
        model=model,
        messages=messages,
        max_tokens=max_tokens,
        temperature=0,
        logprobs=True,
        extra_body=extra,
        **kwargs,
    )


def token_ids(logprobs_content: list) -> list[int]:
    """Token ids from logprobs requested with vLLM's `return_tokens_as_token_ids`."""
    ids = []
    for entry in logprobs_content:
        token = entry["token"] if isinstance(entry, dict) else entry.token
        assert token.startswith("token_id:"), token
        ids.append(int(token.removeprefix("token_id:")))
    return ids


def answer_token_ids(answer: openai.types.chat.ChatCompletion | openai.Stream) -> list[int]:
    """The token ids of a greedy answer, whole or streamed (chunks' logprobs in order)."""
    if isinstance(answer, openai.Stream):
        chunks = [c for c in answer if c.choices and c.choices[0].logprobs]
        return [i for c in chunks for i in token_ids(c.choices[0].logprobs.content)]
    return token_ids(answer.choices[0].logprobs.content)


def ask(client: openai.OpenAI, messages: list[dict], **kwargs) -> openai.types.chat.ChatCompletion:
    return client.chat.completions.create(
        model="tiny",
        messages=messages,
        max_tokens=MAX_TOKENS,
        temperature=0,
        logprobs=True,
        extra_body={"return_tokens_as_token_ids": True},
        **kwargs,
    )


def worker_stats(graph: RunningGraph, component: str, stat: str) -> dict[str, float]:
    """One worker stat of each of a component's instances, from /metrics."""
    return component_stat(httpx.get(f"{graph.base_url}/metrics").text, component, stat)


def worker_stat(graph: RunningGraph, component: str, stat: str) -> float:
    """One worker stat summed over a component's instances."""
    return sum(worker_stats(graph, component, stat).values())


RUNNING = 'vidgraph:num_requests_running{model_name="tiny"}'  # requests in flight


def metric(graph: RunningGraph, name: str) -> float:
    """One sample from /metrics, named with its labels as Prometheus prints it."""
    body = httpx.get(f"{graph.base_url}/metrics").text
    return float(re.search(rf"^{re.escape(name)} (\S+)$", body, flags=re.M).group(1))


def start_graph(
    name: str,
    media_dir: Path,
    tmp_path_factory: pytest.TempPathFactory,
    *overrides: str,
    config: str | None = None,
) -> Iterator[RunningGraph]:
    """`graphs.NAME` with `configs/CONFIG.yaml` (default NAME), its encode workers allowed to
    read `media_dir`."""
    config = config or name
    with serve_graph(
        f"graphs.{name}",
        ROOT / "configs" / f"{config}.yaml",
        f"--EncodeWorker.allowed-local-media-path={media_dir}",
        *overrides,
        log_path=tmp_path_factory.mktemp(config) / "serve.log",
    ) as running:
        yield running
