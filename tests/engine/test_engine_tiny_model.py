"""The tiny checkpoint: byte-identical builds, a real HF directory, built once per cache."""

from __future__ import annotations

import dataclasses
import threading
import time
from pathlib import Path

from transformers import AutoProcessor, LlavaNextVideoProcessor

import engine.tiny_model as tiny_model
from engine import build_tiny_model, resolve_model


def test_building_twice_gives_identical_files(tiny_model_dir, tmp_path):
    again = build_tiny_model(tmp_path / "again")

    names = sorted(p.name for p in tiny_model_dir.iterdir())
    assert "model.safetensors" in names
    assert names == sorted(p.name for p in again.iterdir())
    for name in names:
        assert (tiny_model_dir / name).read_bytes() == (again / name).read_bytes(), name


def test_auto_processor_loads_a_llava_next_video_processor(tiny_model_dir, videos):
    processor = AutoProcessor.from_pretrained(tiny_model_dir)

    pixels = processor.video_processor(videos=[videos[1]], return_tensors="pt")

    assert isinstance(processor, LlavaNextVideoProcessor)
    assert pixels["pixel_values_videos"].shape == (1, 8, 3, 64, 64)
    tokenizer = processor.tokenizer
    assert 256 < len(tokenizer) < 512
    assert tokenizer.convert_ids_to_tokens(tokenizer("<video><image>").input_ids) == [
        "<s>",
        "<video>",
        "<image>",
    ]


def test_chat_template_takes_strings_and_parts(tiny_model_dir):
    processor = AutoProcessor.from_pretrained(tiny_model_dir)
    messages = [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": [{"type": "text", "text": "What?"}, {"type": "video"}]},
        {"role": "assistant", "content": "A dog."},
        {"role": "user", "content": "And then?"},
    ]
    text = processor.apply_chat_template(messages, add_generation_prompt=True)
    assert text == "Be brief. USER: <video>\nWhat? ASSISTANT: A dog. USER: And then? ASSISTANT:"


def test_resolve_model_passes_other_names_through():
    assert resolve_model("llava-hf/LLaVA-NeXT-Video-7B-hf") == "llava-hf/LLaVA-NeXT-Video-7B-hf"


def test_tiny_is_built_once_when_many_workers_start_together(tmp_path, monkeypatch):
    monkeypatch.setenv("VIDGRAPH_CACHE", str(tmp_path))
    builds: list[Path] = []

    def slow_build(path: Path) -> Path:
        builds.append(path)
        time.sleep(0.2)  # keep the others waiting on the lock
        return build_tiny_model(path)

    tiny = tiny_model.TINY_FAMILIES["llava-next-video"]
    monkeypatch.setitem(
        tiny_model.TINY_FAMILIES, "llava-next-video", dataclasses.replace(tiny, build=slow_build)
    )
    results: list[Path | str] = []
    workers = [
        threading.Thread(target=lambda: results.append(resolve_model("tiny"))) for _ in range(4)
    ]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()

    assert len(builds) == 1
    assert len(set(results)) == 1
    [path] = set(results)
    assert Path(path) == tmp_path / f"tiny-{tiny_model.BUILDER_VERSION}"
    assert (Path(path) / "model.safetensors").exists()
    assert [p.name for p in tmp_path.iterdir() if "building" in p.name] == []


def test_resolve_model_reuses_the_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("VIDGRAPH_CACHE", str(tmp_path))
    first = resolve_model("tiny")
    stamp = (Path(first) / "model.safetensors").stat().st_mtime_ns
    assert resolve_model("tiny") == first
    assert (Path(first) / "model.safetensors").stat().st_mtime_ns == stamp
