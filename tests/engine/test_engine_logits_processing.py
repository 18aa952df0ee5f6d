"""Penalties, biases, masks and min-p, checked against transformers' logits processors."""

from __future__ import annotations

import json
from collections import Counter

import pytest
import torch
from transformers import (
    MinNewTokensLengthLogitsProcessor,
    MinPLogitsWarper,
    RepetitionPenaltyLogitsProcessor,
    SequenceBiasLogitsProcessor,
    TemperatureLogitsWarper,
)

from engine import SamplingParams
from engine.sampling import Sampler, SamplingRequest

VOCAB = 40
PROMPT = [3, 5, 5, 7]
OUTPUT = [9, 9, 9, 11, 3]


def logits() -> torch.Tensor:
    return torch.randn(1, VOCAB, generator=torch.Generator().manual_seed(7)) * 3


def processed(params: SamplingParams, output: list[int] = OUTPUT, sampler: Sampler | None = None):
    row = SamplingRequest(params, 0, len(output), PROMPT, output)
    return (sampler or Sampler()).process(logits(), [row])


def test_repetition_penalty_matches_transformers() -> None:
    ids = torch.tensor([PROMPT + OUTPUT])
    expected = RepetitionPenaltyLogitsProcessor(1.7)(ids, logits())
    assert torch.allclose(processed(SamplingParams(repetition_penalty=1.7)), expected)


def test_frequency_and_presence_penalties_count_output_tokens_only() -> None:
    got = processed(SamplingParams(frequency_penalty=0.5, presence_penalty=0.25))
    expected = logits()
    for token, count in Counter(OUTPUT).items():
        expected[0, token] -= 0.5 * count + 0.25
    assert torch.allclose(got, expected)
    assert got[0, 5] == logits()[0, 5]  # in the prompt only: untouched


def test_logit_bias_matches_a_one_token_sequence_bias() -> None:
    bias = {4: 5.0, 12: -100.0}
    expected = SequenceBiasLogitsProcessor({(t,): b for t, b in bias.items()})(
        torch.tensor([PROMPT + OUTPUT]), logits()
    )
    assert torch.allclose(processed(SamplingParams(logit_bias=bias)), expected)


def test_min_tokens_holds_back_eos_and_stop_tokens_until_reached() -> None:
    sampler = Sampler(eos_token_ids={2})
    params = SamplingParams(min_tokens=8, stop_token_ids=[6])
    prompt = torch.tensor([PROMPT + OUTPUT])
    for eos in (2, 6):
        hf = MinNewTokensLengthLogitsProcessor(len(PROMPT), 8, eos_token_id=eos)(prompt, logits())
        assert processed(params, sampler=sampler)[0, eos] == hf[0, eos] == float("-inf")
    assert torch.equal(processed(params, OUTPUT * 2, sampler), logits())  # 10 >= 8: no mask
    ignoring = SamplingParams(min_tokens=8, ignore_eos=True)
    assert processed(ignoring, sampler=sampler)[0, 2] == logits()[0, 2]


def test_allowed_token_ids_mask_everything_else() -> None:
    got = processed(SamplingParams(allowed_token_ids=[1, 30]))
    assert torch.isfinite(got[0]).nonzero().flatten().tolist() == [1, 30]


def test_min_p_draws_from_the_tokens_transformers_keeps() -> None:
    params = SamplingParams(temperature=0.7, min_p=0.1)
    warped = MinPLogitsWarper(0.1)(None, TemperatureLogitsWarper(0.7)(None, logits()))
    kept = set(torch.isfinite(warped[0]).nonzero().flatten().tolist())
    rows = [SamplingRequest(params, seed=3, index=i) for i in range(2000)]
    drawn = Counter(t.token_id for t in Sampler()(logits().expand(2000, -1), rows))
    assert set(drawn) <= kept
    probs = warped.softmax(-1)[0]
    for token in kept:
        assert drawn[token] / 2000 == pytest.approx(probs[token].item(), abs=0.04)


def test_greedy_takes_the_argmax_after_penalties_but_reports_raw_logprobs() -> None:
    raw = logits()
    best = int(raw.argmax())
    params = SamplingParams(temperature=0, logit_bias={best: -100.0})
    [token] = Sampler()(raw, [SamplingRequest(params, 0, 0)])
    assert token.token_id != best
    biased = raw[0].clone()
    biased[best] -= 100
    assert token.token_id == int(biased.argmax())
    assert token.logprob == pytest.approx(raw.log_softmax(-1)[0, token.token_id].item())


def test_unknown_structured_kinds_and_bad_ranges_are_refused() -> None:
    for bad in (
        {"structured": {"xml": "x"}},
        {"min_p": 1.5},
        {"presence_penalty": 3},
        {"repetition_penalty": 0},
        {"min_tokens": 20, "max_tokens": 10},
    ):
        with pytest.raises(ValueError):
            SamplingParams(**bad)


def test_a_json_schema_guides_greedy_decoding_to_valid_json(engine, prompt, generate) -> None:
    schema = {"type": "object", "properties": {"a": {"type": "integer"}}, "required": ["a"]}
    params = SamplingParams(temperature=0, max_tokens=60, structured={"json": schema})
    outputs = generate(prompt("USER: hi ASSISTANT:"), None, params)
    assert outputs[-1].finish_reason == "stop"
    text = engine.tokenizer.decode([o.token_id for o in outputs], skip_special_tokens=True)
    assert isinstance(json.loads(text)["a"], int), text


def test_a_choice_guides_sampling_to_one_of_the_strings(engine, prompt, generate) -> None:
    params = SamplingParams(
        temperature=1.0, seed=5, max_tokens=20, structured={"choice": ["yes", "no"]}
    )
    outputs = generate(prompt("USER: hi ASSISTANT:"), None, params)
    text = engine.tokenizer.decode([o.token_id for o in outputs], skip_special_tokens=True)
    assert text in ("yes", "no")
