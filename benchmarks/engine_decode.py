"""Engine decode throughput (tokens/s) for a batch of 1 against a batch of 16, in one run.

    python -m benchmarks.engine_decode [--model tiny] [--device cpu] [--dtype float32]
                                       [--batch-sizes 1 16] [--max-tokens 64] [--repeats 3]
                                       [--threads N]

Each request is a one-video prompt (8 random frames) plus a question. Only the
decode steps are timed: the step that prefills the batch is left out, so the
numbers are what continuous batching buys once sequences are running. For
reference, `transformers` `generate()` (batch 1, greedy, same prompt) is timed
the same way: its whole run minus the time to its first token.
On a CPU shared with other processes, `--threads 1` avoids torch's intra-op
threads spinning against each other, which costs a tiny model more than its math.
Prints a table and writes benchmarks/results/engine_decode.json.
"""

import argparse
import json
import os
import platform
import statistics
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
import transformers
from transformers import LlavaNextVideoForConditionalGeneration

from engine import Engine, SamplingParams, resolve_model
from engine.models import MediaEmbedding

RESULTS = Path(__file__).parent / "results" / "engine_decode.json"
QUESTION = "USER: <video>\nWhat happens in this video, step by step? ASSISTANT:"


def decode_run(engine: Engine, batch: int, embeddings: torch.Tensor, max_tokens: int) -> dict:
    """One batch from admission to the end; the first (prefill) step is not timed."""
    prompt_ids = engine.tokenizer(QUESTION).input_ids
    sampling = SamplingParams(temperature=0, max_tokens=max_tokens, ignore_eos=True)
    for i in range(batch):
        engine.add_request(f"r{i}", prompt_ids, [embeddings], sampling)
    engine.step()
    steps: list[float] = []
    tokens = 0
    while engine.has_unfinished():
        start = time.perf_counter()
        tokens += len(engine.step())
        steps.append(time.perf_counter() - start)
    median_ms = 1e3 * statistics.median(steps)
    return {"tokens": tokens, "seconds": sum(steps), "median_step_ms": median_ms}


def hf_generate_run(engine: Engine, model: Any, frames: np.ndarray, max_tokens: int) -> dict:
    """`generate()` on the same weights: decode time = full run - time to the first token."""
    inputs = engine.processor(text=QUESTION, videos=[frames], return_tensors="pt")
    inputs = inputs.to(engine.model.device)

    def run(new_tokens: int) -> float:
        start = time.perf_counter()
        with torch.inference_mode():
            model.generate(
                **inputs, max_new_tokens=new_tokens, min_new_tokens=new_tokens, do_sample=False
            )
        return time.perf_counter() - start

    seconds = run(max_tokens) - run(1)
    return {"tokens": max_tokens - 1, "seconds": seconds, "median_step_ms": None}


def median_run(runs: list[dict]) -> dict:
    middle = sorted(runs, key=lambda r: r["tokens"] / r["seconds"])[len(runs) // 2]
    return {**middle, "tokens_per_s": middle["tokens"] / middle["seconds"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="tiny")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", default="float32")
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 16])
    parser.add_argument("--max-tokens", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, help="torch intra-op threads (default: torch's)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    path = resolve_model(args.model)
    engine = Engine.load(path, args.device, args.dtype, max_num_seqs=max(args.batch_sizes))
    hf_model = LlavaNextVideoForConditionalGeneration.from_pretrained(
        path, dtype=engine.model.dtype
    ).to(engine.model.device)
    frames = np.random.default_rng(0).integers(0, 256, (8, 336, 336, 3), dtype=np.uint8)
    embeddings = engine.encode_video(frames)
    decode_run(engine, 1, embeddings, 4)  # warm-up: first-call allocations, lazy inits

    rows = []
    for batch in args.batch_sizes:
        runs = [decode_run(engine, batch, embeddings, args.max_tokens) for _ in range(args.repeats)]
        rows.append({"case": f"engine batch {batch}", "batch": batch, **median_run(runs)})
    runs = [hf_generate_run(engine, hf_model, frames, args.max_tokens) for _ in range(args.repeats)]
    rows.append({"case": "transformers generate batch 1", "batch": 1, **median_run(runs)})

    base = rows[0]["tokens_per_s"]
    print(f"\n{'case':<30} {'tokens/s':>10} {'step ms':>8} {'vs batch 1':>11}")
    for row in rows:
        step = f"{row['median_step_ms']:.2f}" if row["median_step_ms"] is not None else "-"
        speedup = row["tokens_per_s"] / base
        print(f"{row['case']:<30} {row['tokens_per_s']:>10.1f} {step:>8} {speedup:>10.2f}x")

    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(
        json.dumps(
            {
                "model": args.model,
                "device": args.device,
                "dtype": args.dtype,
                "prompt_tokens": len(
                    engine.model.expand_prompt(
                        engine.tokenizer(QUESTION).input_ids, [MediaEmbedding(embeddings)]
                    ).token_ids
                ),
                "max_tokens": args.max_tokens,
                "repeats": args.repeats,
                "machine": {
                    "cpus": os.cpu_count(),
                    "torch_threads": torch.get_num_threads(),
                    "platform": platform.platform(),
                    "torch": torch.__version__,
                    "transformers": transformers.__version__,
                    "gpu": torch.cuda.get_device_name() if args.device == "cuda" else None,
                },
                "results": rows,
            },
            indent=2,
        )
        + "\n"
    )
    print(f"\nwrote {RESULTS}")


if __name__ == "__main__":
    main()
