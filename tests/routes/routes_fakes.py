"""A stand-in for the Processor's client, for route tests that need no graph."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

from protocol.messages import ProcessorOutput


class StandInProcessor:
    """Answers one token, "ok", once `before_answer` returns (subclasses make it wait)."""

    async def before_answer(self, deadline_s: float | None) -> None:
        """Runs when a request arrives, with the deadline it came with."""

    async def stream(
        self, endpoint: str, request: Any, *, deadline_s: float | None = None
    ) -> AsyncIterator[Any]:
        await self.before_answer(deadline_s)
        yield ProcessorOutput(
            text="ok",
            token_ids=[5],
            finish_reason="stop",
            usage_prompt_tokens=3,
            usage_completion_tokens=1,
        ).model_dump()

    def instances(self) -> list[Any]:
        return []

    async def collect_stats(self) -> dict[str, dict[str, float]]:
        return {}
