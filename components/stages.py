"""Stage reports: work deep inside a stage says where it is; its endpoint streams that out.

Endpoints are async generators, while the work that moves through stages
(fetch, decode, encode; or waiting for a prompt's embeddings) is ordinary
awaited code. `reporting` runs that work as a task and yields each report the
moment it is made, then the work's result, so a client watching the stream
sees the stages while they happen rather than all at once at the end.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import TypeVar

from protocol.messages import StageUpdate

T = TypeVar("T")
Report = Callable[[StageUpdate], None]


def ignore(update: StageUpdate) -> None:
    """The report of a caller that did not ask for stages."""


async def reporting(work: Callable[[Report], Awaitable[T]]) -> AsyncIterator[StageUpdate | T]:
    """Run `work(report)`, yielding every `StageUpdate` it reports, then its result.

    The work's exception is raised here; leaving the loop early cancels the work.
    """
    reports: asyncio.Queue[StageUpdate] = asyncio.Queue()
    task = asyncio.ensure_future(work(reports.put_nowait))
    try:
        while not task.done():
            next_report = asyncio.ensure_future(reports.get())
            await asyncio.wait({task, next_report}, return_when=asyncio.FIRST_COMPLETED)
            if next_report.done():
                yield next_report.result()
            else:
                next_report.cancel()
        while not reports.empty():
            yield reports.get_nowait()
        yield task.result()
    finally:
        if not task.done():
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
