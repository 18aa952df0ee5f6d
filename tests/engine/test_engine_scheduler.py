"""The scheduler alone, without a model: admission by free slots and prefill budget, FIFO."""

from __future__ import annotations

import torch

from engine import SamplingParams, SequenceKV
from engine.scheduler import Scheduler
from engine.sequence import Sequence, SequenceStatus


def seq(name: str, prompt_len: int, imported: bool = False) -> Sequence:
    kv = SequenceKV(torch.zeros(1, 2, 1, prompt_len, 1)) if imported else None
    return Sequence(name, [0] * prompt_len, prompt_len, SamplingParams(), imported_kv=kv)


def names(seqs: list[Sequence]) -> list[str]:
    return [s.request_id for s in seqs]


def test_admits_in_arrival_order_up_to_max_num_seqs():
    scheduler = Scheduler(max_num_seqs=2, max_prefill_tokens=1000)
    for name in "abc":
        scheduler.add(seq(name, 10))

    first = scheduler.schedule()
    second = scheduler.schedule()

    assert names(first.prefill) == ["a", "b"] and first.decode == []
    assert names(second.decode) == ["a", "b"] and second.prefill == []
    assert [s.status for s in first.prefill] == [SequenceStatus.RUNNING] * 2


def test_a_finished_sequence_frees_its_place_for_the_next():
    scheduler = Scheduler(max_num_seqs=2, max_prefill_tokens=1000)
    a, b, c = seq("a", 10), seq("b", 10), seq("c", 10)
    for s in (a, b, c):
        scheduler.add(s)
    scheduler.schedule()

    scheduler.finish(a)
    plan = scheduler.schedule()

    assert names(plan.decode) == ["b"] and names(plan.prefill) == ["c"]
    assert a.status is SequenceStatus.FINISHED


def test_prefill_budget_spreads_long_prompts_over_steps_but_never_starves_one():
    scheduler = Scheduler(max_num_seqs=8, max_prefill_tokens=100)
    for name, length in [("long", 500), ("a", 60), ("b", 60), ("c", 30)]:
        scheduler.add(seq(name, length))

    assert names(scheduler.schedule().prefill) == ["long"]  # over budget, but first in line
    assert names(scheduler.schedule().prefill) == ["a"]
    assert names(scheduler.schedule().prefill) == ["b", "c"]


def test_imported_kv_costs_no_prefill_budget():
    scheduler = Scheduler(max_num_seqs=8, max_prefill_tokens=100)
    for s in (seq("p", 90), seq("i1", 400, imported=True), seq("i2", 400, imported=True)):
        scheduler.add(s)
    assert names(scheduler.schedule().prefill) == ["p", "i1", "i2"]


def test_finish_drops_a_waiting_sequence_too():
    scheduler = Scheduler(max_num_seqs=1, max_prefill_tokens=100)
    a, b = seq("a", 5), seq("b", 5)
    scheduler.add(a)
    scheduler.add(b)
    scheduler.schedule()

    scheduler.finish(b)
    scheduler.finish(a)

    assert not scheduler.has_unfinished()
