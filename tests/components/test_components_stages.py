"""Reading stage reports ahead of one answer, as the encode and prefill workers send them."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest

from components.stages import answer_after, reporting
from protocol.errors import ServiceError
from protocol.messages import PrefillResponse, StageUpdate, TokenLogprobs

ANSWER = PrefillResponse(
    first_token=7, first_logprobs=TokenLogprobs(logprob=-0.5), prompt_tokens=12
).model_dump()


async def replies(*items: dict[str, Any]) -> AsyncIterator[dict[str, Any]]:
    for item in items:
        yield item


async def test_the_reports_go_to_report_in_order_and_the_answer_is_returned_typed() -> None:
    reported: list[StageUpdate] = []
    stream = replies(
        StageUpdate(stage="fetching").model_dump(),
        StageUpdate(stage="encoding").model_dump(),
        StageUpdate(stage="generating").model_dump(),
        ANSWER,
    )

    answer = await answer_after(stream, PrefillResponse, reported.append, "the prefill worker")

    assert [r.stage for r in reported] == ["fetching", "encoding", "generating"]
    assert answer == PrefillResponse.model_validate(ANSWER)


@pytest.mark.parametrize(
    "items, problem",
    [
        ([StageUpdate(stage="fetching").model_dump()], "without an answer"),
        ([ANSWER, StageUpdate(stage="generating").model_dump()], "more after its answer"),
        ([ANSWER, ANSWER], "more after its answer"),
    ],
    ids=["no answer", "a report after it", "two answers"],
)
async def test_a_stream_that_is_not_reports_then_one_answer_is_the_senders_error(
    items: list[dict[str, Any]], problem: str
) -> None:
    with pytest.raises(ServiceError, match=problem):
        await answer_after(replies(*items), PrefillResponse, lambda _: None, "the prefill worker")


async def test_relayed_through_reporting_the_reports_come_before_the_answer() -> None:
    """What a decode worker does with a prefill worker's stream: yield each report, then use
    the answer."""
    stream = replies(StageUpdate(stage="fetching").model_dump(), ANSWER)

    seen = [
        item
        async for item in reporting(
            lambda report: answer_after(stream, PrefillResponse, report, "the prefill worker")
        )
    ]

    assert seen == [StageUpdate(stage="fetching"), PrefillResponse.model_validate(ANSWER)]
