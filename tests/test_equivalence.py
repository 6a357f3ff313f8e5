"""Numerical equivalence with transformers: full-sequence logits, cached decoding, greedy generation."""

from __future__ import annotations

import numpy as np
import pytest

from conftest import (BF16, BODY, FP16, GPT2_124M, LOGITS_ATOL, LONG, MEDIUM, ODD, SHORT, STRIPPED_UNTIED, TINY,
                      UNTIED, hf_greedy, hf_logits, max_abs_diff, random_ids, read_safetensors_raw)

LOGIT_SPECS = [TINY, MEDIUM, ODD, UNTIED, FP16, BF16, BODY, STRIPPED_UNTIED]


# ---- 1. full-sequence logits ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("spec", LOGIT_SPECS, ids=str)
# 1x1, 1x5 and 2x4 take the streaming small-row kernels (<= 8 rows); the others BLAS.
@pytest.mark.parametrize("batch, length", [(1, 1), (1, 5), (2, 4), (1, 13), (3, 8), (9, 1), (2, None)],
                         ids=["1x1", "1x5", "2x4", "1x13", "3x8", "9x1", "2xctx"])
def test_full_logits_match_transformers(checkpoint, spec, batch, length):
    ck = checkpoint(spec)
    length = length or spec.n_positions  # None: the whole context
    ids = random_ids(spec.vocab_size, (batch, length), seed=batch * 1000 + length)
    ours = ck.model.forward(ids)
    assert ours.shape == (batch, length, spec.vocab_size) and ours.dtype == np.float32
    assert max_abs_diff(ours, hf_logits(ck.hf, ids)) < LOGITS_ATOL


def test_forward_accepts_any_integer_array(tiny):
    """int32 / uint16 / non-contiguous token arrays and nested lists give the int64 logits."""
    ids = random_ids(TINY.vocab_size, (2, 10), seed=9)
    expected = tiny.model.forward(ids)
    for variant in (ids.astype(np.int32), ids.astype(np.uint16), np.asfortranarray(ids), ids.tolist()):
        np.testing.assert_array_equal(tiny.model.forward(variant), expected)
    wide = random_ids(TINY.vocab_size, (2, 20), seed=9)
    np.testing.assert_array_equal(tiny.model.forward(wide[:, ::2]), tiny.model.forward(wide[:, ::2].copy()))
    np.testing.assert_array_equal(tiny.model.forward(ids[0]), tiny.model.forward(ids[:1]))  # 1-D: one row


def test_rows_of_a_batch_are_independent(checkpoint):
    """A row's logits do not depend on the other rows of the batch."""
    ck = checkpoint(MEDIUM)
    ids = random_ids(MEDIUM.vocab_size, (3, 20), seed=5)
    batched = ck.model.forward(ids)
    for r in range(3):
        assert max_abs_diff(batched[r], ck.model.forward(ids[r:r + 1])[0]) < LOGITS_ATOL


def test_untied_head_is_really_used(checkpoint):
    """The untied checkpoint's lm_head differs from wte, so the equivalence above exercises the separate head."""
    ck = checkpoint(UNTIED)
    state = ck.model.state_dict()
    assert "lm_head.weight" in state
    assert not np.allclose(state["lm_head.weight"], state["wte.weight"])
    np.testing.assert_array_equal(state["lm_head.weight"], ck.hf.lm_head.weight.detach().numpy())


@pytest.mark.parametrize("spec", [FP16, BF16], ids=str)
def test_half_precision_weights_are_widened_exactly(checkpoint, spec):
    """16-bit tensors become float32 exactly as torch widens them."""
    ck = checkpoint(spec)
    header, _ = read_safetensors_raw(ck.path / "model.safetensors")
    assert {v["dtype"] for k, v in header.items() if k != "__metadata__"} == {"F16" if spec is FP16 else "BF16"}
    ours = ck.model.state_dict()
    for name, p in ck.hf.transformer.state_dict().items():
        if name in ours:
            np.testing.assert_array_equal(ours[name], p.numpy(), err_msg=name)


def test_gpt2_124m_shape_logits(checkpoint):
    """The real GPT-2 small shape (12 layers, 12 heads, C=768, V=50257, n_ctx=1024): batched full logits, then
    the same sequence through prefill + cached decode steps."""
    ck = checkpoint(GPT2_124M)
    ids = random_ids(GPT2_124M.vocab_size, (2, 24), seed=124)
    ref = hf_logits(ck.hf, ids)
    assert max_abs_diff(ck.model.forward(ids), ref) < LOGITS_ATOL
    assert max_abs_diff(ck.model.forward(ids[1:, :1]), ref[1:, :1]) < LOGITS_ATOL

    cache = ck.model.new_cache(batch_size=2)
    steps = [ck.model.forward(ids[:, :16], cache=cache)]
    steps += [ck.model.forward(ids[:, t:t + 1], cache=cache) for t in range(16, 24)]
    assert cache.seq_lens == [24, 24]
    assert max_abs_diff(np.concatenate(steps, axis=1), ref) < LOGITS_ATOL


# ---- 2. prefill + decode through the cache == full forward -----------------------------------------------------------

def decode_through_cache(model, ids: np.ndarray, prefill: int, chunk: int = 1) -> np.ndarray:
    """Logits of ids computed as a prefill of `prefill` tokens, then `chunk` tokens at a time through one cache."""
    cache = model.new_cache(batch_size=ids.shape[0])
    pieces = [model.forward(ids[:, :prefill], cache=cache)]
    for t in range(prefill, ids.shape[1], chunk):
        pieces.append(model.forward(ids[:, t:t + chunk], cache=cache))
    assert cache.seq_lens == [ids.shape[1]] * ids.shape[0]
    return np.concatenate(pieces, axis=1)


@pytest.mark.parametrize("spec, batch, prefill, chunk", [
    (SHORT, 1, 1, 1),      # token by token from the first position to n_ctx = 64
    (SHORT, 3, 17, 1),     # batched prefill, then single steps to n_ctx
    (MEDIUM, 2, 5, 7),     # multi-token chunks appended at an offset
    (ODD, 2, 30, 4),       # 2 rows x 4 tokens: the small-row kernels at an offset
    (TINY, 10, 3, 1),      # 10-row decode steps: the streaming kernels' 4-row blocks and a remainder
    (TINY, 17, 3, 1),      # 17-row decode steps: past the streaming kernels (16 rows), BLAS
    (UNTIED, 1, 3, 1),
    (FP16, 2, 10, 1),
    (LONG, 1, 1, 1),       # one token at a time all the way to n_ctx = 1024
    (LONG, 2, 700, 1),
], ids=lambda v: str(v))
def test_cached_decode_matches_full_forward(checkpoint, spec, batch, prefill, chunk):
    ck = checkpoint(spec)
    ids = random_ids(spec.vocab_size, (batch, spec.n_positions), seed=prefill)
    ref = hf_logits(ck.hf, ids)
    got = decode_through_cache(ck.model, ids, prefill, chunk)
    assert got.shape == ref.shape
    assert max_abs_diff(got, ref) < LOGITS_ATOL


def test_cache_reset_and_crop_reuse_the_buffer(checkpoint):
    """reset() forgets every position; crop(n) rewinds to n so that re-decoding gives the original logits."""
    ck = checkpoint(SHORT)
    ids = random_ids(SHORT.vocab_size, (2, 30), seed=3)
    ref = hf_logits(ck.hf, ids)
    cache = ck.model.new_cache(batch_size=2, max_seq_len=30)
    first = ck.model.forward(ids, cache=cache)
    assert cache.seq_lens == [30, 30] and cache.get_seq_length(1) == 30
    cache.crop(12)
    assert cache.seq_lens == [12, 12]
    assert max_abs_diff(ck.model.forward(ids[:, 12:20], cache=cache), ref[:, 12:20]) < LOGITS_ATOL
    cache.reset()
    assert cache.seq_lens == [0, 0]
    again = ck.model.forward(ids, cache=cache)
    assert max_abs_diff(again, first) == 0.0
    assert max_abs_diff(again, ref) < LOGITS_ATOL


# ---- 3. greedy generation == transformers' generate ------------------------------------------------------------------

@pytest.mark.parametrize("spec, prompt_len, new", [
    (TINY, 5, 120),
    (MEDIUM, 9, 110),
    (UNTIED, 3, 100),
    (FP16, 4, 100),
    (BODY, 6, 100),
], ids=lambda v: str(v))
def test_greedy_matches_transformers_generate(checkpoint, spec, prompt_len, new):
    ck = checkpoint(spec)
    prompt = random_ids(spec.vocab_size, prompt_len, seed=prompt_len).tolist()
    ours = ck.model.generate_ids(prompt, max_new_tokens=new, eos_token_id=None)
    assert ours == hf_greedy(ck.hf, prompt, new)


def test_greedy_ragged_batch_matches_transformers_per_row(checkpoint):
    """Prompts of different lengths share one cache (ragged per-row lengths); the longest row runs to n_ctx."""
    ck = checkpoint(TINY)
    lengths = [3, 11, 1]
    new = TINY.n_positions - max(lengths)
    prompts = [random_ids(TINY.vocab_size, n, seed=n).tolist() for n in lengths]
    ours = ck.model.generate_ids(prompts, max_new_tokens=new, eos_token_id=None)
    assert [len(row) for row in ours] == [n + new for n in lengths]
    for prompt, row in zip(prompts, ours):
        assert row == hf_greedy(ck.hf, prompt, new)


def test_gpt2_124m_shape_greedy(checkpoint):
    ck = checkpoint(GPT2_124M)
    prompt = random_ids(GPT2_124M.vocab_size, 8, seed=7).tolist()
    assert ck.model.generate_ids(prompt, max_new_tokens=32, eos_token_id=None) == hf_greedy(ck.hf, prompt, 32)
