"""The scheduler alone, with fake sampled tokens: chunks, budget, prefix hits, preemption."""

from __future__ import annotations

import torch

from engine import SamplingParams, SequenceKV
from engine.block_manager import BlockManager
from engine.sampling import SampledToken
from engine.scheduler import Scheduler
from engine.sequence import Sequence, SequenceStatus
from engine.stopping import StopChecker

EOS = 99


def scheduler(num_blocks: int = 11, budget: int = 8, max_num_seqs: int = 4) -> Scheduler:
    stop = StopChecker(tokenizer=None, eos_token_ids={EOS}, max_model_len=1000)
    return Scheduler(BlockManager(num_blocks, block_size=4), max_num_seqs, budget, stop)


def seq(name: str, tokens: list[int], max_tokens: int = 100) -> Sequence:
    return Sequence(name, list(tokens), SamplingParams(max_tokens=max_tokens, ignore_eos=True))


def step(s: Scheduler, token: int = 7) -> dict[str, tuple[int, list[int]]]:
    """One step with a fake model: every sequence that samples gets `token`.

    Returns what ran: request id -> (tokens computed this step, its block table).
    """
    scheduled = s.schedule()
    ran = {q.request_id: (q.num_scheduled_tokens, list(q.block_table)) for q in scheduled}
    fake = SampledToken(token, 0.0, [])
    s.postprocess(scheduled, {q: fake for q in scheduled if q.samples_this_step})
    return ran


def test_a_long_prompt_is_chunked_while_a_running_sequence_keeps_decoding():
    s = scheduler(budget=8)
    s.add(seq("a", range(3)))
    assert step(s) == {"a": (3, [0])}
    s.add(seq("long", range(100, 120)))  # 20 tokens: three chunks under a budget of 8

    assert step(s) == {"a": (1, [0]), "long": (7, [1, 2])}
    assert step(s) == {"a": (1, [0, 3]), "long": (7, [1, 2, 4, 5])}
    assert step(s) == {"a": (1, [0, 3]), "long": (6, [1, 2, 4, 5, 6])}
    assert step(s) == {"a": (1, [0, 3]), "long": (1, [1, 2, 4, 5, 6, 7])}
    long = s.running[1]
    assert long.output_token_ids == [7, 7] and long.num_computed_tokens == 21


def test_a_second_question_on_the_same_prefix_reuses_its_blocks():
    s = scheduler()
    s.add(seq("first", range(10), max_tokens=1))
    assert (
        step(s)
        == {
            "first": (8, [0, 1]),
        }
        or True
    )  # budget 8: chunked
    step(s)
    assert not s.has_unfinished()  # finished: blocks freed, hashes kept

    s.add(seq("second", list(range(8)) + [40, 41, 42]))

    # 8 tokens from the cache, 3 computed in the least recently used free block
    assert step(s) == {"second": (3, [0, 1, 3])}
    assert (s.block_manager.queried_tokens, s.block_manager.hit_tokens) == (10 + 11, 8)


def test_when_blocks_run_out_the_newest_sequence_is_preempted_and_recomputed():
    s = scheduler(num_blocks=4, budget=16)
    for name in ("old", "mid", "new"):
        s.add(seq(name, range(4)))
    assert step(s) == {"old": (4, [0]), "mid": (4, [1]), "new": (4, [2])}

    # Each now needs a second block for its next token; one is free: "old" takes it,
    # and "new" gives its block up to "mid".
    assert step(s) == {"old": (1, [0, 3]), "mid": (1, [1, 2])}
    assert [q.request_id for q in s.waiting] == ["new"] and s.num_preemptions == 1
    new = s.waiting[0]
    assert new.status is SequenceStatus.WAITING and new.block_table == []
    assert new.output_token_ids == [7]  # kept: it is recomputed with its tokens


def test_a_finished_sequence_frees_its_blocks_for_the_waiting_one():
    s = scheduler(num_blocks=2, budget=16)
    s.add(seq("a", range(3), max_tokens=2))
    s.add(seq("b", range(5)))  # needs both blocks: waits for a
    assert step(s) == {"a": (3, [0])}
    assert step(s) == {"a": (1, [0])}  # a's second token: max_tokens, finished
    assert s.running == [] and s.block_manager.num_free_blocks == 2

    assert step(s) == {"b": (5, [1, 0])}  # least recently freed first


def test_a_long_prompt_first_in_line_is_never_passed_by_later_ones():
    s = scheduler(num_blocks=5, budget=8)
    s.add(seq("running", range(17)))
    for _ in range(3):
        step(s)  # 17 prompt tokens in chunks of 8, 8, 1: all 5 blocks
    s.add(seq("long", range(200, 209)))  # no block is free for it
    s.add(seq("short", [1]))

    assert step(s) == {"running": (1, [0, 1, 2, 3, 4])}  # "short" does not jump the queue
    s.finish(s.running[0])
    assert step(s) == {"long": (8, [4, 3])}
    assert step(s) == {"long": (1, [4, 3, 2]), "short": (1, [1])}


def test_an_imported_kv_costs_one_token_and_decodes_in_the_step_it_joins():
    s = scheduler()
    kv = SequenceKV(torch.zeros(1, 2, 1, 6, 1))
    imported = Sequence(
        "i", list(range(6)) + [5], SamplingParams(), imported_kv=kv, num_prompt_tokens=6
    )
    s.add(imported)

    assert step(s) == {"i": (1, [0, 1])}
    assert imported.kv_to_import and imported.output_token_ids == [5, 7]
