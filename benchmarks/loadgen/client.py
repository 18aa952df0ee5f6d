"""Sends one streaming chat completion and times its server-sent events as they arrive.

httpx rather than the `openai` client: the timestamps must be taken when each SSE
line is read off the socket, with nothing (retries, object parsing) in between,
and the raw stream is also where a server's mid-stream error shows up.
"""

from __future__ import annotations

import json
import time

import httpx

from benchmarks.loadgen.record import RequestRecord
from benchmarks.loadgen.workload import PreparedRequest

JSON_HEADERS = {"Content-Type": "application/json", "Accept": "text/event-stream"}


def apply_sse_line(record: RequestRecord, line: str, now: float) -> bool:
    """Books one SSE line into `record`; True once the stream says it is done.

    Only `data:` lines matter (comments, `event:` and blank separators do not).
    A chunk counts as a token arrival when some choice carries text.
    """
    if not line.startswith("data:"):
        return False
    data = line[len("data:") :].strip()
    if data == "[DONE]":
        return True
    try:
        chunk = json.loads(data)
    except json.JSONDecodeError:
        record.fail(f"the server sent a data line that is not JSON: {data[:200]!r}", now)
        return True
    if "error" in chunk:
        record.fail(f"error in the stream: {json.dumps(chunk['error'])[:300]}", now)
        return True
    if any((choice.get("delta") or {}).get("content") for choice in chunk.get("choices") or []):
        record.on_content(now)
    if chunk.get("usage"):
        record.on_usage(chunk["usage"])
    return False


async def send(client: httpx.AsyncClient, url: str, request: PreparedRequest) -> RequestRecord:
    """One request from send to the end of its stream; failures are recorded, never raised."""
    record = RequestRecord(kind=request.kind, start=time.perf_counter())
    try:
        async with client.stream("POST", url, content=request.payload, headers=JSON_HEADERS) as r:
            if r.status_code != 200:
                body = (await r.aread()).decode(errors="replace")
                record.fail(f"HTTP {r.status_code}: {body[:300]}", time.perf_counter())
                return record
            async for line in r.aiter_lines():
                if apply_sse_line(record, line, time.perf_counter()):
                    break
    except httpx.HTTPError as exc:
        record.fail(f"{type(exc).__name__}: {exc}", time.perf_counter())
        return record
    if record.end is None:
        record.finish(time.perf_counter())
    return record
