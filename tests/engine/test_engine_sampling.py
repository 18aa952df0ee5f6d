"""The sampler: greedy, temperature, top-k, top-p, logprobs; seeded draws are reproducible."""

from __future__ import annotations

import math
from collections import Counter

import pytest
import torch

from engine import SamplingParams
from engine.sampling import Sampler, SamplingRequest

PROBS = torch.tensor([0.5, 0.3, 0.2])
LOGITS = PROBS.log()


def draw(params: SamplingParams, n: int = 3000) -> Counter[int]:
    sampler = Sampler()
    rows = [SamplingRequest(params, seed=1, index=i) for i in range(n)]
    return Counter(token.token_id for token in sampler(LOGITS.expand(n, -1), rows))


def test_temperature_one_samples_the_model_distribution():
    counts = draw(SamplingParams(temperature=1.0))
    for token, p in enumerate(PROBS.tolist()):
        assert counts[token] / 3000 == pytest.approx(p, abs=0.03)


def test_top_k_and_top_p_cut_the_tail():
    assert set(draw(SamplingParams(top_k=2))) == {0, 1}
    assert set(draw(SamplingParams(top_p=0.6))) == {0, 1}  # 0.5 alone is short of 0.6
    assert set(draw(SamplingParams(top_p=0.4))) == {0}


def test_low_temperature_concentrates_on_the_most_likely_token():
    counts = draw(SamplingParams(temperature=0.1), n=500)
    assert counts[0] > 495


def test_greedy_takes_the_argmax_and_reports_logprobs():
    [token] = Sampler()(
        LOGITS[None], [SamplingRequest(SamplingParams(temperature=0, logprobs=2), 0, 0)]
    )
    assert token.token_id == 0
    assert token.logprob == pytest.approx(math.log(0.5))
    assert [t for t, _ in token.top_logprobs] == [0, 1]
    assert token.top_logprobs[1][1] == pytest.approx(math.log(0.3))


def test_a_draw_depends_only_on_seed_and_index_not_on_the_batch():
    logits = torch.randn(4, 50, generator=torch.Generator().manual_seed(0))
    params = SamplingParams(temperature=1.0, top_k=20, top_p=0.9)
    rows = [SamplingRequest(params, seed=s, index=i) for s, i in [(1, 0), (2, 5), (1, 0), (3, 9)]]
    batched = [t.token_id for t in Sampler()(logits, rows)]
    alone = [Sampler()(logits[i : i + 1], [rows[i]])[0].token_id for i in range(4)]
    assert batched == alone


def test_seeded_requests_repeat_and_other_seeds_differ(engine, prompt, generate):
    ids = prompt("USER: Describe the video in detail. ASSISTANT:")

    def tokens(seed: int) -> list[int]:
        sampling = SamplingParams(temperature=1.0, seed=seed, max_tokens=16, ignore_eos=True)
        return [out.token_id for out in generate(ids, None, sampling)]

    assert tokens(5) == tokens(5)
    assert tokens(5) != tokens(6)


def test_a_seeded_request_samples_the_same_in_a_batch(engine, prompt, generate):
    sampling = SamplingParams(temperature=1.0, seed=11, max_tokens=12, ignore_eos=True)
    ids = prompt("USER: What color is the car? ASSISTANT:")
    alone = [out.token_id for out in generate(ids, None, sampling)]

    others = SamplingParams(temperature=0.8, max_tokens=12, ignore_eos=True)
    engine.add_request("other-1", prompt("USER: Is it raining? ASSISTANT:"), None, others)
    engine.add_request("seeded", ids, None, sampling)
    engine.add_request("other-2", prompt("USER: Who? ASSISTANT:"), None, others)
    batched: list[int] = []
    while engine.has_unfinished():
        batched += [out.token_id for out in engine.step() if out.request_id == "seeded"]

    assert batched == alone


@pytest.mark.parametrize(
    "bad", [{"temperature": -1}, {"top_p": 0}, {"top_k": -2}, {"max_tokens": 0}, {"logprobs": -1}]
)
def test_invalid_params_are_refused_with_the_rule(bad):
    with pytest.raises(ValueError, match=next(iter(bad))):
        SamplingParams(**bad)
