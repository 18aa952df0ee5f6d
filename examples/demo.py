"""The out-of-the-box demo: serve the aggregated graph, ask it about a video, stream the answer.

    make demo        (or: .venv/bin/python examples/demo.py [--graph graphs.disagg])

It starts `vidgraph serve` on the tiny model with an embedded etcd, writes a
sample video (no media can be downloaded here), sends it with the official
`openai` client exactly as a user would, prints the answer as it streams, and
stops the graph. The tiny model's answer is nonsense text; its tokens are exact.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from openai import OpenAI

from graphs.serve import ROOT, serve_graph
from media.samples import write_sample_video


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--graph", default="graphs.agg", choices=["graphs.agg", "graphs.disagg"])
    parser.add_argument("--max-tokens", type=int, default=48)
    args = parser.parse_args()
    config = ROOT / "configs" / f"{args.graph.removeprefix('graphs.')}.yaml"

    with tempfile.TemporaryDirectory(prefix="vidgraph-demo-") as tmp:
        video = write_sample_video(Path(tmp) / "sample.mp4", seconds=3, fps=10, seed=7)
        print(f"starting {args.graph} with {config.relative_to(ROOT)} (tiny model, embedded etcd)")
        started = time.perf_counter()
        with serve_graph(
            args.graph,
            config,
            f"--EncodeWorker.allowed-local-media-path={tmp}",
            log_path=Path(tmp) / "serve.log",
        ) as graph:
            print(f"graph healthy at {graph.base_url} after {time.perf_counter() - started:.1f} s")
            client = OpenAI(base_url=f"{graph.base_url}/v1", api_key="unused")
            stream = client.chat.completions.create(
                model="tiny",
                messages=[
                    {
                        "role": "user",
                        "content": [
                            {"type": "text", "text": "What is in this video?"},
                            {"type": "video_url", "video_url": {"url": str(video)}},
                        ],
                    }
                ],
                max_tokens=args.max_tokens,
                stream=True,
                stream_options={"include_usage": True},
            )
            print("answer: ", end="", flush=True)
            for chunk in stream:
                if chunk.choices:
                    print(chunk.choices[0].delta.content or "", end="", flush=True)
                elif chunk.usage:
                    print(
                        f"\nusage: {chunk.usage.prompt_tokens} prompt tokens "
                        f"(video included), {chunk.usage.completion_tokens} generated"
                    )
        print("graph stopped")


if __name__ == "__main__":
    main()
