"""The LLaMA family against transformers' LlamaForCausalLM in float32 (eager attention), on random-init checkpoints
of several shapes: grouped-query (ratio 3), multi-query, multi-head, explicit head_dim, rope_theta 1e4 / 5e5, Llama 3
rope scaling, biases, tied and untied heads."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch

from conftest import LOGITS_ATOL, max_abs_diff, random_ids
from kvcache import Llama
from llama_checkpoints import BIAS, LLAMA3, LONG, ODD_HEAD, SPECS, LlamaFactory, hf_greedy, hf_logits
from test_reduced_precision import bf16, int8


@pytest.fixture(scope="session")
def llama(tmp_path_factory) -> LlamaFactory:
    return LlamaFactory(tmp_path_factory)


@pytest.mark.parametrize("spec", SPECS, ids=str)
@pytest.mark.parametrize("B,T", [(1, 1), (1, 7), (2, 17), (3, 40)])
def test_full_forward_logits(llama, spec, B, T):
    """T >= 16 takes the block (prefill) attention, shorter the per-query one."""
    ck = llama(spec)
    ids = random_ids(spec.vocab_size, (B, T), seed=B * 100 + T)
    ours = ck.model.forward(ids)
    assert max_abs_diff(ours, hf_logits(ck.hf, ids)) < LOGITS_ATOL


@pytest.mark.parametrize("spec", SPECS, ids=str)
def test_config_read_from_checkpoint(llama, spec):
    c = llama(spec).model.config
    assert (c.n_layer, c.n_embd, c.n_head, c.n_kv_head, c.n_ff, c.n_vocab, c.n_ctx) == (
        spec.n_layer, spec.n_embd, spec.n_head, spec.n_kv_head, spec.n_ff, spec.vocab_size, spec.n_ctx)
    assert c.head_dim == (spec.head_dim or spec.n_embd // spec.n_head)
    assert c.rope_theta == pytest.approx(spec.rope_theta)
    assert c.tie_word_embeddings == spec.tie and c.attention_bias == spec.bias and c.mlp_bias == spec.bias
    assert (c.rope_scaling is None) == (spec.rope_scaling is None)


@pytest.mark.parametrize("spec", SPECS, ids=str)
def test_rope_inv_freq_is_transformers(llama, spec):
    ck = llama(spec)
    ours = np.array(ck.model.config.rope_inv_freq, dtype=np.float32)
    theirs = ck.hf.model.rotary_emb.inv_freq.numpy()
    np.testing.assert_allclose(ours, theirs, rtol=2e-7, atol=0)


@pytest.mark.parametrize("spec", SPECS, ids=str)
def test_prefill_then_decode_equals_full_forward(llama, spec):
    ck = llama(spec)
    ids = random_ids(spec.vocab_size, (2, 60), seed=7)
    full = hf_logits(ck.hf, ids)
    cache = ck.model.new_cache(2, 60)
    steps = [ck.model.forward(ids[:, :20], cache=cache)]
    steps += [ck.model.forward(ids[:, t:t + 1], cache=cache) for t in range(20, 60)]
    assert cache.seq_lens == [60, 60]
    assert max_abs_diff(np.concatenate(steps, axis=1), full) < LOGITS_ATOL


@pytest.mark.parametrize("spec", [LONG, LLAMA3, ODD_HEAD], ids=str)
def test_decode_to_beyond_2048_positions(llama, spec):
    """One token at a time to position 2099 (LLaMA 3's rope scaling matters past its 64-position original
    context): every step's logits equal transformers' full forward at that position."""
    ck = llama(spec)
    n = 2100
    ids = random_ids(spec.vocab_size, (1, n), seed=11)
    full = hf_logits(ck.hf, ids)[0]
    cache = ck.model.new_cache(1, n)
    ours = [ck.model.forward(ids[:, :1], cache=cache)[0, 0]]
    ours += [ck.model.forward(ids[:, t:t + 1], cache=cache)[0, 0] for t in range(1, n)]
    err = np.abs(np.stack(ours) - full).max(axis=1)
    assert err.max() < LOGITS_ATOL, f"worst position {int(err.argmax())}: {err.max():.3g}"


@pytest.mark.parametrize("spec", SPECS, ids=str)
def test_greedy_tokens_identical_to_transformers(llama, spec):
    ck = llama(spec)
    prompt = random_ids(spec.vocab_size, (9,), seed=3).tolist()
    expected = hf_greedy(ck.hf, prompt, 120)
    assert ck.model.generate_ids(prompt, 120, eos_token_id=None) == expected
    assert ck.model.generate_ids(prompt, 120, eos_token_id=None, use_cache=False) == expected


@pytest.mark.parametrize("spec", SPECS[:3], ids=str)
def test_ragged_batch_equals_each_prompt_alone(llama, spec):
    ck = llama(spec)
    prompts = [random_ids(spec.vocab_size, (n,), seed=n).tolist() for n in (3, 18, 1, 9)]
    batched = ck.model.generate_ids(prompts, 30, eos_token_id=None)
    assert batched == [ck.model.generate_ids(p, 30, eos_token_id=None) for p in prompts]


@pytest.mark.parametrize("spec", SPECS, ids=str)
@pytest.mark.parametrize("dtype,bytes_", [("float32", 4), ("float16", 2), ("bfloat16", 2)])
def test_cache_nbytes_is_the_formula_with_n_kv_head(llama, spec, dtype, bytes_):
    ck = llama(spec)
    c = ck.model.config
    cache = ck.model.new_cache(3, 50, dtype=dtype)
    assert cache.nbytes == 2 * c.n_layer * 3 * c.n_kv_head * 50 * c.head_dim * bytes_
    assert cache.shape == (c.n_layer, 2, 3, c.n_kv_head, 50, c.head_dim)
    assert (cache.n_kv_head, cache.head_dim, cache.get_max_cache_shape()) == (c.n_kv_head, c.head_dim, 50)


@pytest.mark.parametrize("spec", SPECS[:2], ids=str)
@pytest.mark.parametrize("cache_dtype,tol", [("float16", 1e-2), ("bfloat16", 4e-2)])  # of the largest logit
def test_16bit_cache_close_to_float32(llama, spec, cache_dtype, tol):
    """bfloat16 keeps 8 bits of each key and value, float16 11: the logits move by about that, relative."""
    ck = llama(spec)
    ids = random_ids(spec.vocab_size, (2, 30), seed=5)
    ref = hf_logits(ck.hf, ids)
    cache = ck.model.new_cache(2, 30, dtype=cache_dtype)
    ours = ck.model.forward(ids, cache=cache)
    scale = np.abs(ref).max()
    assert max_abs_diff(ours, ref) < tol * scale


def reference_on_stored_weights(hf, ids, dtype: str) -> np.ndarray:
    """transformers' float32 forward with every matrix rounded as the engine stores it (bf16, or int8 with a scale
    per output channel: a row of nn.Linear's (out, in) weight), the embedding lookup kept float32."""
    hf = copy.deepcopy(hf)
    rounding = bf16 if dtype == "bfloat16" else (lambda w: int8(w, dim=1))
    with torch.no_grad():
        for module in hf.model.modules():
            if isinstance(module, torch.nn.Linear):
                module.weight.copy_(rounding(module.weight))
        hidden = hf.model(torch.as_tensor(ids)).last_hidden_state
        return (hidden @ rounding(hf.lm_head.weight).T).numpy()


@pytest.mark.parametrize("spec", SPECS[:2] + [BIAS], ids=str)
@pytest.mark.parametrize("weights_dtype", ["bfloat16", "int8"])
@pytest.mark.parametrize("B,T", [(1, 1), (2, 7), (1, 40)])
def test_reduced_precision_weights_are_float32_math_on_the_stored_values(llama, spec, weights_dtype, B, T):
    ck = llama(spec)
    model = Llama.from_pretrained(ck.path, weights_dtype=weights_dtype)
    assert model.weights_dtype == weights_dtype
    ids = random_ids(spec.vocab_size, (B, T), seed=B + T)
    assert max_abs_diff(model.forward(ids), reference_on_stored_weights(ck.hf, ids, weights_dtype)) < LOGITS_ATOL


def test_weights_nbytes_shrink_with_the_storage_type(llama):
    path = llama(SPECS[0]).path
    sizes = {d: Llama.from_pretrained(path, weights_dtype=d).weights_nbytes for d in ("float32", "bfloat16", "int8")}
    assert sizes["float32"] / 2.1 < sizes["bfloat16"] < sizes["float32"] / 1.6
    assert sizes["float32"] / 4.2 < sizes["int8"] < sizes["float32"] / 2.5


def test_seeded_sampling_reproduces(llama):
    ck = llama(SPECS[0])
    kw = dict(do_sample=True, temperature=0.9, top_k=20, top_p=0.9, seed=5, eos_token_id=None)
    a = ck.model.generate_ids([[1, 2, 3], [4, 5]], 25, **kw)
    assert a == ck.model.generate_ids([[1, 2, 3], [4, 5]], 25, **kw)
    assert a != ck.model.generate_ids([[1, 2, 3], [4, 5]], 25, **{**kw, "seed": 6})
