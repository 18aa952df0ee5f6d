"""Engine v2 (paged KV, chunked prefill, prefix caching) against the slot engine it replaced.

    python -m benchmarks.engine_v2 [--old-commit cf2154f] [--repeats 3]

One run, the two engines interleaved, each workload in a fresh process pinned to
one torch thread, on the tiny checkpoint (the same directory for both):

- capacity: concurrent 1,000-token sequences (984 prompt + 16 generated tokens)
  held with a fixed 64 MiB KV budget.
  The slot design's number is arithmetic (budget / (max-model-len x bytes per
  token): each sequence owned a max-model-len slot); the paged engine's is measured
  (the most sequences running at once, all requests queued up front);
- throughput at concurrency 16 and 32: 2 x c video prompts (8 frames), 64 tokens
  each, output tokens per second, old vs new;
- interference: 8 running streams, then a video prompt of >= 2,000 tokens arrives;
  the streams' inter-token latency p50 and p99 over the steps around it, and the
  long prompt's own time to first token (the new engine at max-num-batched-tokens
  512, the default, 128 and 32: on CPU a step costs in proportion to its tokens, so
  the budget trades the streams' p99 against the long prompt's TTFT);
- prefix caching: a second question about the same (long) video after a first one:
  prompt tokens computed (queried - hit, counted by the engine) and TTFT of each.

The old engine is `git archive`d from `--old-commit` into a temporary directory and
imported from there. Writes benchmarks/results/engine_v2.json with commit, date,
load and the command.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

RESULTS = Path(__file__).parent / "results" / "engine_v2.json"
ROOT = Path(__file__).resolve().parents[1]
KV_BUDGET = 64 << 20
MAX_MODEL_LEN = 4096
QUESTION = "USER: <video>\nWhat happens in this video, step by step? ASSISTANT:"


def frames(count: int, seed: int = 0):
    import numpy as np

    return np.random.default_rng(seed).integers(0, 256, (count, 64, 64, 3), dtype=np.uint8)


def load(new: bool, **settings):
    import torch

    from engine import Engine, resolve_model

    torch.set_num_threads(1)
    if not new:  # the slot engine's knobs: KV for max_num_seqs x max_model_len
        settings = {k: v for k, v in settings.items() if k in ("max_num_seqs", "max_model_len")}
    return Engine.load(resolve_model("tiny"), **settings)


def run_all(engine, on_output=None) -> int:
    tokens = 0
    while engine.has_unfinished():
        outputs = engine.step()
        tokens += len(outputs)
        if on_output:
            on_output(outputs)
    return tokens


def throughput(new: bool, concurrency: int) -> dict:
    from engine import SamplingParams

    engine = load(new, max_num_seqs=concurrency, max_model_len=1024)
    video = engine.encode_video(frames(8))
    ids = engine.tokenizer(QUESTION).input_ids
    sampling = SamplingParams(temperature=0, max_tokens=64, ignore_eos=True)
    engine.add_request("warm", ids, [video], SamplingParams(temperature=0, max_tokens=2))
    run_all(engine)
    for i in range(2 * concurrency):
        engine.add_request(f"r{i}", ids, [engine.encode_video(frames(8, seed=i))], sampling)
    start = time.perf_counter()
    tokens = run_all(engine)
    seconds = time.perf_counter() - start
    return {"tokens": tokens, "seconds": seconds, "tokens_per_s": tokens / seconds}


def interference(new: bool, budget: int) -> dict:
    from engine import SamplingParams

    engine = load(new, max_num_seqs=16, max_model_len=MAX_MODEL_LEN, max_num_batched_tokens=budget)
    ids = engine.tokenizer(QUESTION).input_ids
    long_video = engine.encode_video(frames(128))  # 128 frames x 16 tokens: 2,048 tokens
    streams = SamplingParams(temperature=0, max_tokens=200, ignore_eos=True)
    for i in range(8):
        engine.add_request(
            f"s{i}", engine.tokenizer(f"USER: story {i} ASSISTANT:").input_ids, None, streams
        )
    last: dict[str, float] = {}
    gaps: list[float] = []

    def record(outputs) -> None:
        now = time.perf_counter()
        for out in outputs:
            if out.request_id.startswith("s"):
                if out.request_id in last:
                    gaps.append(now - last[out.request_id])
                last[out.request_id] = now

    steps = 0
    long_added = long_first = 0.0
    while engine.has_unfinished():
        if steps == 20:
            engine.add_request(
                "long", ids, [long_video], SamplingParams(temperature=0, max_tokens=8)
            )
            long_added = time.perf_counter()
        outputs = engine.step()
        record(outputs)
        if not long_first and any(out.request_id == "long" for out in outputs):
            long_first = time.perf_counter()
        steps += 1
    gaps.sort()
    p50, p99 = gaps[len(gaps) // 2], gaps[int(len(gaps) * 0.99)]
    if new:
        long_tokens = len(engine.model.expand_prompt(ids, [_media(long_video)]).token_ids)
    else:
        long_tokens = engine.model.num_prompt_tokens(ids, [long_video])
    return {
        "long_prompt_tokens": long_tokens,
        "itl_p50_ms": 1e3 * p50,
        "itl_p99_ms": 1e3 * p99,
        "p99_over_p50": p99 / p50,
        "itl_max_ms": 1e3 * gaps[-1],  # the old engine stalls once: p99 can miss it
        "long_prompt_ttft_ms": 1e3 * (long_first - long_added),
    }


def prefix_cache() -> dict:
    from engine import SamplingParams

    engine = load(True, max_num_seqs=4, max_model_len=MAX_MODEL_LEN)
    video = engine.encode_video(frames(64, seed=3))  # 1,024 video tokens
    sampling = SamplingParams(temperature=0, max_tokens=1)
    rows = []
    for i, question in enumerate(["What happens in this video?", "Who is in it?"]):
        ids = engine.tokenizer(f"USER: <video>\n{question} ASSISTANT:").input_ids
        before = engine.stats()
        start = time.perf_counter()
        engine.add_request(f"q{i}", ids, [video], sampling)
        run_all(engine)
        ttft = time.perf_counter() - start
        after = engine.stats()
        queried = after["prefix_cache_queried_tokens"] - before["prefix_cache_queried_tokens"]
        hit = after["prefix_cache_hit_tokens"] - before["prefix_cache_hit_tokens"]
        rows.append(
            {
                "prompt_tokens": queried,
                "cached": hit,
                "computed": queried - hit,
                "ttft_ms": 1e3 * ttft,
            }
        )
    return {
        "first": rows[0],
        "second": rows[1],
        "computed_drop": 1 - rows[1]["computed"] / rows[0]["computed"],
        "ttft_ratio": rows[1]["ttft_ms"] / rows[0]["ttft_ms"],
    }


def capacity() -> dict:
    from engine import SamplingParams

    engine = load(
        True,
        max_num_seqs=512,
        max_model_len=MAX_MODEL_LEN,
        kv_cache_memory=KV_BUDGET,
        max_num_batched_tokens=8192,  # admission is not what bounds it here: memory is
    )
    per_token = engine.model.kv_spec.bytes_per_token
    for i in range(120):  # 1,000-token text prompts, 16 tokens each
        engine.add_request(
            f"c{i}",
            [1] + [20 + (i + j) % 300 for j in range(999)],
            None,
            SamplingParams(temperature=0, max_tokens=16, ignore_eos=True),
        )
    most = 0
    while engine.has_unfinished():
        engine.step()
        most = max(most, len(engine.scheduler.running))
    return {
        "kv_budget_bytes": KV_BUDGET,
        "bytes_per_token": per_token,
        "slot_design": KV_BUDGET // (MAX_MODEL_LEN * per_token),
        "paged": most,
        "preemptions": engine.scheduler.num_preemptions,
    }


def _media(tensor):
    from engine.models import MediaEmbedding

    return MediaEmbedding(tensor)


def child(args: argparse.Namespace) -> None:
    new = args.engine == "new"
    if args.case == "throughput":
        result = throughput(new, args.concurrency)
    elif args.case == "interference":
        result = interference(new, args.concurrency)
    elif args.case == "prefix":
        result = prefix_cache()
    else:
        result = capacity()
    print(json.dumps(result))


def run_child(case: str, engine: str, old_dir: Path, concurrency: int = 0) -> dict:
    path = str(ROOT) if engine == "new" else f"{old_dir}:{ROOT}"
    env = {**os.environ, "PYTHONPATH": path}
    command = [
        sys.executable,
        "-m",
        "benchmarks.engine_v2",
        "--child",
        case,
        "--engine",
        engine,
        "--concurrency",
        str(concurrency),
    ]
    # `python -m` puts the working directory first on sys.path: the old engine's children
    # run from its directory, so `engine` is the old one there.
    cwd = ROOT if engine == "new" else old_dir
    out = subprocess.run(command, env=env, cwd=cwd, capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--old-commit", default="cf2154f")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--child")
    parser.add_argument("--engine", default="new")
    parser.add_argument("--concurrency", type=int, default=16)
    args = parser.parse_args()
    if args.child:
        args.case = args.child
        child(args)
        return
    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory() as old_dir:
        archive = subprocess.run(
            ["git", "archive", args.old_commit, "engine"], cwd=ROOT, capture_output=True, check=True
        ).stdout
        subprocess.run(["tar", "-x", "-C", old_dir], input=archive, check=True)
        results: dict = {
            "capacity": run_child("capacity", "new", Path(old_dir)),
            "prefix_cache": run_child("prefix", "new", Path(old_dir)),
        }
        for concurrency in (16, 32):
            runs: dict[str, list[float]] = {"old": [], "new": []}
            for _ in range(args.repeats):
                for engine in ("old", "new"):  # interleaved
                    row = run_child("throughput", engine, Path(old_dir), concurrency)
                    runs[engine].append(row["tokens_per_s"])
            results[f"throughput_c{concurrency}"] = {
                **{f"{e}_tokens_per_s": statistics.median(v) for e, v in runs.items()},
                "runs": runs,
                "speedup": statistics.median(runs["new"]) / statistics.median(runs["old"]),
            }
        results["interference"] = {"old": run_child("interference", "old", Path(old_dir))}
        for budget in (512, 128, 32):  # max-num-batched-tokens: the default, and smaller
            row = run_child("interference", "new", Path(old_dir), budget)
            results["interference"][f"new_batched_tokens_{budget}"] = row
    commit = subprocess.run(
        ["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True
    ).stdout.strip()
    record = {
        "commit": commit,
        "old_commit": args.old_commit,
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "command": "python -m benchmarks.engine_v2 " + " ".join(sys.argv[1:]),
        "machine": {
            "cpus": os.cpu_count(),
            "platform": platform.platform(),
            "load_before": load_before,
            "load_after": os.getloadavg(),
        },
        **results,
    }
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(record, indent=2) + "\n")
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
