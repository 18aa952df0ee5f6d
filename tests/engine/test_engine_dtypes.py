"""Half-precision engines run the whole path (encode, prefill, batched decode, export) on CPU."""

from __future__ import annotations

import pytest
import torch

from engine import Engine, SamplingParams


@pytest.mark.parametrize("dtype", ["bfloat16", "float16"])
def test_half_precision_engine_runs_a_video_batch(dtype, tiny_model_dir, videos, prompt):
    half = Engine.load(tiny_model_dir, device="cpu", dtype=dtype, max_num_seqs=2, max_model_len=512)
    embeddings = half.encode_video(videos[0])
    ids = prompt("USER: <video>\nWhat happens? ASSISTANT:")
    sampling = SamplingParams(temperature=0.7, seed=1, max_tokens=5, ignore_eos=True)

    half.add_request("a", ids, [embeddings], sampling)
    half.add_request("b", ids[:4], None, sampling)
    outputs = []
    while half.has_unfinished():
        outputs += half.step()
    _, kv = half.prefill_export("c", ids, [embeddings], sampling)

    assert embeddings.dtype == kv.data.dtype == getattr(torch, dtype)
    assert sorted(o.completion_tokens for o in outputs if o.finished) == [5, 5]
    assert all(torch.isfinite(torch.tensor(o.logprob)) for o in outputs)


def test_unknown_dtype_is_refused_with_the_choices(tiny_model_dir):
    with pytest.raises(ValueError, match="bfloat16"):
        Engine.load(tiny_model_dir, dtype="float64")
