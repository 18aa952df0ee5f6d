"""KV-aware routing on the real graph: a conversation about one video stays on one decode worker."""

from __future__ import annotations

from pathlib import Path

import httpx
from reliability_helpers import (
    REQUEST_TIMEOUT_S,
    WORKERS,
    wait_until,
    wait_whole,
    worker_stats,
)

from graphs.serve import RunningGraph


def served(graph: RunningGraph) -> dict[str, float]:
    """Requests each decode worker has taken (prefilled remotely or itself), by instance.

    Read again until every decode worker answered: a worker slow to reply to the
    stats round (a loaded host) is left out of /metrics for that round.
    """

    def every_worker() -> dict[str, float] | None:
        taken: dict[str, float] = {}
        for stat in ("remote_prefills", "local_prefills"):
            for (component, instance), count in worker_stats(graph.base_url, stat).items():
                if component == "DecodeWorker":
                    taken[instance] = taken.get(instance, 0) + count
        return taken if len(taken) == WORKERS["DecodeWorker"] else None

    return wait_until("every decode worker's counts in one /metrics round", every_worker, 60)


def ask(graph: RunningGraph, video: Path, question: str) -> None:
    body = {
        "model": "tiny",
        "messages": [
            {
                "role": "user",
                "content": [
                    {"type": "video_url", "video_url": {"url": f"file://{video}"}},
                    {"type": "text", "text": question},
                ],
            }
        ],
        "max_tokens": 2,
        "temperature": 0,
    }
    response = httpx.post(
        f"{graph.base_url}/v1/chat/completions", json=body, timeout=REQUEST_TIMEOUT_S
    )
    assert response.status_code == 200, response.text


def test_every_question_about_one_video_goes_to_one_decode_worker(
    graph: RunningGraph, media_dir: Path
) -> None:
    """Both processors route by the video (`router: cache-aware`), so its KV is reused.

    Requests go one at a time, so no worker is over its share and bounded load never
    spills one. Two workers and two videos: the owners may coincide, so this checks
    that each video sticks, not that they differ.
    """
    for component in ("DecodeWorker", "Processor"):
        wait_whole(graph, component)
    for video in ("v1.mp4", "v2.mp4"):
        before = served(graph)
        for question in ("What is in it?", "And then?", "Who is there?", "Why?"):
            ask(graph, media_dir / video, question)
        after = served(graph)
        took = {i: after.get(i, 0) - before.get(i, 0) for i in after}
        assert sorted(took.values())[-1] == 4, (video, took)
