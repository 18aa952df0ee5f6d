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


@pytest.mark.parametrize("engine", VARIANTS, indirect=True)
@pytest.mark.parametrize(
    "sampling",
    [
        SamplingParams(temperature=0, max_tokens=14, ignore_eos=True),
        SamplingParams(
            temperature=1.0, seed=7, max_tokens=14, ignore_eos=True, repetition_penalty=1.3
        ),
    ],
    ids=["greedy", "seeded-penalized"],
)
def test_a_resumed_request_continues_as_if_it_had_run_here(
    engine, videos, prompt, generate, sampling
):
    """A migrated request: its generated tokens come with the prompt, the rest follow as before.

    One generated id is the video placeholder: it stays a text token (a second
    placeholder would ask for a second video) and the continuation still matches.
    """
    clips = [engine.encode_video(videos[0])]
    ids = prompt("USER: <video>\nWhat happens? ASSISTANT:")
    alone = generate(ids, clips, sampling)
    whole = [o.token_id for o in alone]
    placeholder = engine.video_token_id
    for cut, so_far in [(5, whole[:5]), (4, [*whole[:3], placeholder])]:
        engine.add_request("resumed", ids, clips, sampling, generated_token_ids=so_far)
        rest: list[StepOutput] = []
        while engine.has_unfinished():
            rest += engine.step()
        if so_far == whole[:cut]:
            assert [o.token_id for o in rest] == whole[cut:]
        assert len(rest) == sampling.max_tokens - cut
        assert rest[0].prompt_tokens == alone[0].prompt_tokens  # usage: the prompt alone
