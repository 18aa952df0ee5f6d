"""Continuous batching: sequences join and leave every step and still get their own tokens."""

from __future__ import annotations

import pytest
from engine_variants import VARIANTS

from engine import SamplingParams, StepOutput

QUESTIONS = [
    "What happens?",
    "Describe the video in detail, please.",
    "How many people are there in the room?",
    "Is it raining?",
    "What color is the car that drives down the street at night?",
    "Summarize.",
    "What is the man doing on the bicycle in the park this afternoon?",
    "Who opens the door?",
]


@pytest.mark.parametrize("engine", VARIANTS, indirect=True)
def test_eight_sequences_joining_at_different_steps_match_running_alone(
    engine, videos, prompt, generate
):
    embeddings = [engine.encode_video(clip) for clip in videos]
    requests = []
    for i, question in enumerate(QUESTIONS):
        with_video = i % 2 == 0
        text = f"USER: {'<video>' if with_video else ''}\n{question} ASSISTANT:"
        clips = [embeddings[i % len(embeddings)]] if with_video else []
        sampling = SamplingParams(temperature=0, max_tokens=6 + 3 * i, ignore_eos=True)
        requests.append((f"r{i}", prompt(text), clips, sampling))
    alone = {
        rid: [o.token_id for o in generate(ids, clips, sampling)]
        for rid, ids, clips, sampling in requests
    }

    preemptions = engine.scheduler.num_preemptions
    batched: dict[str, list[int]] = {rid: [] for rid, *_ in requests}
    largest_batch = 0
    step = 0
    while step < 3 * len(requests) or engine.has_unfinished():
        if step % 3 == 0 and step // 3 < len(requests):
            engine.add_request(*requests[step // 3])  # a newcomer every third step
        outputs = engine.step()
        largest_batch = max(largest_batch, len(outputs))
        for out in outputs:
            batched[out.request_id].append(out.token_id)
        step += 1

    assert batched == alone
    if engine.block_manager.num_blocks == 80:  # the small KV: they must have preempted
        assert engine.scheduler.num_preemptions > preemptions and largest_batch >= 2
    else:
        assert largest_batch >= 5  # they really ran together


def test_requests_beyond_max_num_seqs_wait_for_a_free_slot(engine, prompt):
    sampling = SamplingParams(temperature=0, max_tokens=4, ignore_eos=True)
    for i in range(engine.scheduler.max_num_seqs + 2):
        engine.add_request(f"q{i}", prompt(f"USER: question {i} ASSISTANT:"), None, sampling)

    first = engine.step()
    finished: list[StepOutput] = []
    while engine.has_unfinished():
        finished += [out for out in engine.step() if out.finished]

    assert len(first) == engine.scheduler.max_num_seqs
    assert len(finished) == engine.scheduler.max_num_seqs + 2


def test_abort_frees_the_slot_and_the_others_carry_on(engine, prompt, generate):
    sampling = SamplingParams(temperature=0, max_tokens=8, ignore_eos=True)
    ids = [prompt(f"USER: {q} ASSISTANT:") for q in QUESTIONS[:3]]
    expected = [o.token_id for o in generate(ids[2], None, sampling)]
    for i, prompt_ids in enumerate(ids):
        engine.add_request(f"a{i}", prompt_ids, None, sampling)
    tokens = [out.token_id for out in engine.step() if out.request_id == "a2"]

    held = len(engine.block_manager.used_block_ids)

    engine.abort("a0")

    assert "a0" not in [seq.request_id for seq in engine.scheduler.running]
    assert len(engine.block_manager.used_block_ids) < held
    while engine.has_unfinished():
        tokens += [out.token_id for out in engine.step() if out.request_id == "a2"]
    assert tokens == expected
    assert engine.block_manager.used_block_ids == set()
