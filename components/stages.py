"""Stage reports: work deep inside a stage says where it is; its endpoint streams that out.

Endpoints are async generators, while the work that moves through stages
(fetch, decode, encode; or waiting for a prompt's embeddings) is ordinary
awaited code. `reporting` runs that work as a task and yields each report the
moment it is made, then the work's result, so a client watching the stream
sees the stages while they happen rather than all at once at the end.
On the calling side, `answer_after` reads such a stream: the reports go to a
`Report`, the one answer after them is returned.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, TypeVar

from pydantic import BaseModel

from protocol.errors import ServiceError
from protocol.messages import StageUpdate

T = TypeVar("T")
Answer = TypeVar("Answer", bound=BaseModel)
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


async def answer_after(
    replies: AsyncIterator[dict[str, Any]], answer: type[Answer], report: Report, sender: str
) -> Answer:
    """The one `answer` that ends `replies`, each `StageUpdate` before it passed to `report`.

    The stream is read to its end, as `Client.call` reads a unary reply; anything
    but stage reports then exactly one answer, last, is the sender's error.
    """
    found: Answer | None = None
    async with contextlib.aclosing(replies):
        async for reply in replies:
            if found is not None:
                raise ServiceError(f"{sender} sent more after its answer")
            if "stage" in reply:
                report(StageUpdate.model_validate(reply))
            else:
                found = answer.model_validate(reply)
    if found is None:
        raise ServiceError(f"{sender} ended its reply without an answer")
    return found
