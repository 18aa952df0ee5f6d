"""Why a sequence ends: eos, stop token ids, stop strings, max_tokens, the model's length."""

from __future__ import annotations

import pytest

from engine import SamplingParams
from engine.sequence import Sequence
from engine.stopping import StopChecker


@pytest.fixture
def checker(engine) -> StopChecker:
    return StopChecker(engine.tokenizer, engine.eos_token_ids, max_model_len=20)


def seq(prompt_len: int = 5, outputs: list[int] | None = None, **sampling) -> Sequence:
    params = SamplingParams(**{"max_tokens": 100, **sampling})
    tokens = [0] * prompt_len + (outputs or [])
    return Sequence("s", tokens, params, num_prompt_tokens=prompt_len)


def test_eos_stops_unless_ignored(engine, checker):
    eos = engine.tokenizer.eos_token_id
    assert checker(seq(), eos) == "stop"
    assert checker(seq(ignore_eos=True), eos) is None


def test_stop_token_ids_stop(checker):
    assert checker(seq(stop_token_ids=[42]), 42) == "stop"
    assert checker(seq(stop_token_ids=[42]), 43) is None


def test_a_stop_string_spread_over_tokens_stops(engine, checker):
    ids = engine.tokenizer("the sun is shining", add_special_tokens=False).input_ids
    assert len(ids) > 3
    s = seq(outputs=ids[:-1], stop=["is shin"])
    assert checker(s, ids[-1]) == "stop"
    assert checker(seq(outputs=ids[:-1], stop=["rain"]), ids[-1]) is None


def test_max_tokens_and_max_model_len_end_with_length(checker):
    assert checker(seq(outputs=[7, 7], max_tokens=3), 7) == "length"
    assert checker(seq(outputs=[7], max_tokens=3), 7) is None
    assert checker(seq(prompt_len=18, outputs=[7]), 7) == "length"  # 20 tokens: full


def test_engine_ends_a_request_at_its_stop_string(engine, prompt, generate):
    ids = prompt("USER: What happens? ASSISTANT:")
    free = generate(ids, None, SamplingParams(temperature=0, max_tokens=16, ignore_eos=True))
    tokens = [out.token_id for out in free]
    stop = engine.tokenizer.decode(tokens[5:7])

    stopped = generate(ids, None, SamplingParams(temperature=0, max_tokens=16, stop=[stop]))

    assert stopped[-1].finish_reason == "stop"
    assert len(stopped) <= 7
    assert stop in engine.tokenizer.decode([out.token_id for out in stopped])


def test_step_output_counts_tokens_for_usage(generate, prompt):
    ids = prompt("USER: Hi ASSISTANT:")
    outputs = generate(ids, None, SamplingParams(temperature=0, max_tokens=3, ignore_eos=True))
    assert [o.completion_tokens for o in outputs] == [1, 2, 3]
    assert [o.finish_reason for o in outputs] == [None, None, "length"]
    assert all(o.prompt_tokens == len(ids) for o in outputs)


def test_logprobs_come_with_every_token(generate, prompt):
    outputs = generate(
        prompt("USER: Hi ASSISTANT:"), None, SamplingParams(temperature=0, logprobs=3)
    )
    for out in outputs:
        assert len(out.top_logprobs) == 3
        assert out.top_logprobs[0] == (out.token_id, pytest.approx(out.logprob))
