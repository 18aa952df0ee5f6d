"""KV exported after prefill and imported into another engine continues with identical tokens."""

from __future__ import annotations

import pytest

from engine import KV_LAYOUT, Engine, SamplingParams, SequenceKV, StepOutput


@pytest.fixture(scope="module")
def decode_engine(tiny_model_dir) -> Engine:
    """A second engine instance, as a decode worker in another process would hold."""
    return Engine.load(tiny_model_dir, device="cpu", dtype="float32", max_num_seqs=4)


def decode_all(engine: Engine) -> list[StepOutput]:
    outputs: list[StepOutput] = []
    while engine.has_unfinished():
        outputs += engine.step()
    return outputs


@pytest.mark.parametrize(
    "sampling",
    [
        SamplingParams(temperature=0, max_tokens=20, ignore_eos=True),
        SamplingParams(temperature=1.0, top_p=0.9, seed=7, max_tokens=20, ignore_eos=True),
    ],
    ids=["greedy", "seeded"],
)
def test_imported_kv_continues_with_the_same_tokens(
    sampling, engine, decode_engine, videos, prompt, generate
):
    ids = prompt("USER: <video>\nWhat happens in this video? ASSISTANT:")
    embeddings = [engine.encode_video(videos[0])]
    expected = generate(ids, embeddings, sampling)

    first, kv = engine.prefill_export("x", ids, embeddings, sampling)
    # What crosses the process boundary: plain tensor bytes and a few ints.
    shipped = SequenceKV(kv.data.clone())
    decode_engine.add_prefilled("x", ids, first.token_id, shipped, sampling)
    rest = decode_all(decode_engine)

    assert not engine.has_unfinished()  # prefill_export keeps nothing
    assert [first.token_id] + [o.token_id for o in rest] == [o.token_id for o in expected]
    assert rest[-1].prompt_tokens == expected[-1].prompt_tokens
    assert rest[-1].completion_tokens == sampling.max_tokens


def test_exported_kv_has_the_documented_layout(engine, prompt):
    ids = prompt("USER: Is it raining? ASSISTANT:")
    _, kv = engine.prefill_export("layout", ids, None, SamplingParams(temperature=0))

    decoder = engine.model.decoder
    assert "[num_layers, 2" in KV_LAYOUT
    assert kv.data.is_contiguous()
    assert kv.data.shape == (len(decoder.layers), 2, decoder.num_kv_heads, len(ids), 32)
    assert kv.num_tokens == len(ids)


def test_imported_kv_of_another_shape_is_refused(decode_engine):
    kv = SequenceKV(decode_engine.model.decoder.embed_tokens.weight.new_zeros(2, 2, 4, 5, 32))
    with pytest.raises(ValueError, match="does not fit this model"):
        decode_engine.add_prefilled("bad", [1, 2, 3, 4, 5], 7, kv)
    assert not decode_engine.has_unfinished()


def test_a_prefill_only_engine_holds_kv_for_one_prompt_only(tiny_model_dir, engine, prompt):
    prefill_only = Engine.load(tiny_model_dir, max_num_seqs=0, max_model_len=512)
    ids = prompt("USER: Why? ASSISTANT:")
    sampling = SamplingParams(temperature=0)

    first, kv = prefill_only.prefill_export("p", ids, None, sampling)

    assert prefill_only.block_manager.num_blocks * 16 == 512
    reference, _ = engine.prefill_export("p", ids, None, sampling)
    assert (first.token_id, kv.num_tokens) == (reference.token_id, len(ids))
    with pytest.raises(ValueError, match="max_num_seqs=0"):
        prefill_only.add_request("r", ids)
