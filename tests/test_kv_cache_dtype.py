"""The 16-bit KV cache (new_cache(dtype="float16" | "bfloat16"), generate(cache_dtype=...)).

The reference is transformers' float32 GPT2LMHeadModel with each layer's new keys and values rounded to the cache's
type as they leave c_attn (a forward hook): the same computation as ours, where only the storage of K and V is
16-bit. Its conversions are checked bit for bit against NumPy's float16 and torch's bfloat16, and its attention
kernels against the float64 twin on the rounded values.
"""

from __future__ import annotations

import contextlib

import numpy as np
import pytest
import torch

from conftest import (BF16, GPT2_124M, LONG, MEDIUM, ODD, SHORT, TINY, TORCH_DTYPES, hf_greedy,
                      hf_logits, max_abs_diff, random_ids)
from test_equivalence import decode_through_cache
from test_kernels import KERNEL_RTOL, attend_reference, rand, rel_err

import kvcache_kernels as kernels
from kvcache import _core

HALF_DTYPES = ["float16", "bfloat16"]
FLOAT16_MAX = 65504.0

# Our float32 keys differ from transformers' in the last bits (summation order, ~1e-6 relative). Where such a key
# sits next to a rounding boundary of the 16-bit type, the two round it to neighbouring values one 16-bit step apart
# (2^-11 of the value in float16, 2^-8 in bfloat16), and later layers carry that on. Measured on these checkpoints
# (max over all logits): 3e-6 to 2.8e-3 (float16) and 3e-6 to 2.3e-2 (bfloat16) from the rounded reference,
# against 8e-4 to 2.3e-2 and 6e-3 to 2.0e-1 from the float32 one. So the tolerances below leave about 2x of room,
# and every test also demands what tells the two apart: our logits are at least 2x nearer the rounded reference
# than the float32 one (5x to 400x measured; 2.4x on the 124M shape, whose small activations round finely).
ROUNDED_ATOL = {"float16": 1e-2, "bfloat16": 5e-2}


def rounded(x: np.ndarray, dtype: str) -> np.ndarray:
    """x as a cache of dtype stores it, by NumPy / torch: float16 saturating at +-65504, bfloat16 as torch rounds."""
    x = np.asarray(x, dtype=np.float32)
    if dtype == "float16":
        with np.errstate(over="ignore"):
            return np.clip(x, -FLOAT16_MAX, FLOAT16_MAX).astype(np.float16).astype(np.float32)
    return torch.from_numpy(x.copy()).to(torch.bfloat16).to(torch.float32).numpy()


@contextlib.contextmanager
def hf_kv_rounded(hf, dtype: str):
    """transformers' model with every layer's keys and values rounded to dtype as c_attn produces them."""
    C = hf.config.n_embd

    def round_kv(module, inputs, output):
        out = output.clone()
        kv = out[..., C:]
        if dtype == "float16":
            kv = kv.clamp(-FLOAT16_MAX, FLOAT16_MAX)
        out[..., C:] = kv.to(TORCH_DTYPES[dtype]).to(torch.float32)
        return out

    handles = [block.attn.c_attn.register_forward_hook(round_kv) for block in hf.transformer.h]
    try:
        yield hf
    finally:
        for h in handles:
            h.remove()


# ---- conversions ----------------------------------------------------------------------------------------------------

def bits_equal(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return (a.view(np.uint32) == b.view(np.uint32)) | (np.isnan(a) & np.isnan(b))


@pytest.mark.parametrize("vector", [True, False], ids=["vector", "scalar"])
def test_every_finite_float16_round_trips_exactly(vector):
    every = np.arange(2**16, dtype=np.uint16).view(np.float16).astype(np.float32)
    finite = every[np.isfinite(every)]  # 63488 values: subnormals, both zeros, up to +-65504
    got = kernels.stored_kv(finite, "float16", vector=vector)
    assert bits_equal(got, finite).all()


def conversion_inputs() -> np.ndarray:
    rng = np.random.default_rng(0)
    spread = rng.standard_normal(100_000) * 10.0 ** rng.integers(-9, 6, 100_000)  # subnormal halves to overflow
    ties = np.arange(2**16, dtype=np.uint16).view(np.float16).astype(np.float32)
    ties = ties[np.isfinite(ties)]
    midpoints = np.nextafter(ties, np.inf, dtype=np.float32)  # just above a half: rounds down unless at a tie
    edges = [0.0, -0.0, FLOAT16_MAX, 65519.0, 65520.0, 1e6, -1e6, np.inf, -np.inf, np.nan, 6e-8, 3e-8, 2.98e-8,
             1e-45, -1e-45, 3.4e38]
    both = np.concatenate([spread, ties, midpoints, (ties[:-1] + ties[1:]) / 2, edges])
    return both.astype(np.float32)


@pytest.mark.parametrize("dtype", HALF_DTYPES)
@pytest.mark.parametrize("vector", [True, False], ids=["vector", "scalar"])
def test_conversion_rounds_to_nearest_even_like_numpy_and_torch(dtype, vector):
    x = conversion_inputs()
    got = kernels.stored_kv(x, dtype, vector=vector)
    expected = rounded(x, dtype)
    bad = ~bits_equal(got, expected)
    assert not bad.any(), (x[bad][:5], got[bad][:5], expected[bad][:5])


def test_float16_saturates_instead_of_overflowing():
    got = kernels.stored_kv(np.array([1e6, -1e6, np.inf, -np.inf, 65520.0, np.nan], np.float32), "float16")
    np.testing.assert_array_equal(got[:5], [FLOAT16_MAX, -FLOAT16_MAX, FLOAT16_MAX, -FLOAT16_MAX, FLOAT16_MAX])
    assert np.isnan(got[5])


@pytest.mark.parametrize("n", [1, 7, 8, 9, 63, 64, 100])
def test_conversion_of_any_length_and_tail(n):
    x = np.random.default_rng(n).standard_normal(n).astype(np.float32)
    for dtype in HALF_DTYPES:
        np.testing.assert_array_equal(kernels.stored_kv(x, dtype), rounded(x, dtype))


# ---- attention kernels over 16-bit keys and values -----------------------------------------------------------------

@pytest.mark.parametrize("isa", ["best", "portable"])
@pytest.mark.parametrize("dtype", HALF_DTYPES)
@pytest.mark.parametrize("length, HS", [(1, 64), (2, 16), (17, 64), (1024, 64), (300, 128), (5, 12), (9, 3)])
def test_attend_over_16_bit_cache_matches_float64_on_rounded_values(dtype, length, HS, isa):
    rng = np.random.default_rng(length * HS)
    q, keys, values = rand(rng, HS) * 4, rand(rng, length, HS), rand(rng, length, HS)
    fast = kernels.attend(q, keys, values, cache_dtype=dtype, isa=isa)
    assert rel_err(fast, attend_reference(q, rounded(keys, dtype), rounded(values, dtype))) < KERNEL_RTOL
    # the rounding really happened: the result is not the float32 one
    assert rel_err(fast, attend_reference(q, keys, values)) > KERNEL_RTOL


@pytest.mark.parametrize("dtype", HALF_DTYPES)
@pytest.mark.parametrize("start, T, HS", [(0, 16, 64), (7, 20, 64), (300, 200, 64), (0, 33, 24)])
def test_attend_block_over_16_bit_cache_matches_query_by_query(dtype, start, T, HS):
    rng = np.random.default_rng(start + T)
    q, keys, values = rand(rng, T, HS), rand(rng, start + T, HS), rand(rng, start + T, HS)
    block = kernels.attend_block(q, keys, values, start, cache_dtype=dtype)
    keys16, values16 = rounded(keys, dtype), rounded(values, dtype)
    for t in range(T):
        n = start + t + 1
        assert rel_err(block[t], attend_reference(q[t], keys16[:n], values16[:n])) < KERNEL_RTOL, t


@pytest.mark.parametrize("dtype", ["float32"] + HALF_DTYPES)
@pytest.mark.parametrize("length", [1, 7, 8, 9, 16, 1000])
def test_attend_portable_and_avx2_builds_agree(dtype, length):
    """The two builds widen 16-bit values differently (arithmetic, or vcvtph2ps: both exact) and differ only in
    float32 rounding (the portable build has no FMA)."""
    rng = np.random.default_rng(length)
    q, keys, values = rand(rng, 64), rand(rng, length, 64), rand(rng, length, 64)
    fast = kernels.attend(q, keys, values, cache_dtype=dtype)
    portable = kernels.attend(q, keys, values, cache_dtype=dtype, isa="portable")
    assert rel_err(fast, portable) < KERNEL_RTOL


# ---- the model over a 16-bit cache ----------------------------------------------------------------------------------

@pytest.mark.parametrize("dtype", HALF_DTYPES)
@pytest.mark.parametrize("spec, batch, length", [(TINY, 1, 5), (MEDIUM, 3, 40), (ODD, 2, None), (SHORT, 2, None),
                                                 (BF16, 1, 33)], ids=str)
def test_prefill_over_16_bit_cache_matches_transformers_with_rounded_kv(checkpoint, dtype, spec, batch, length):
    ck = checkpoint(spec)
    length = length or spec.n_positions
    ids = random_ids(spec.vocab_size, (batch, length), seed=length)
    cache = ck.model.new_cache(batch, length, dtype=dtype)
    ours = ck.model.forward(ids, cache=cache)
    with hf_kv_rounded(ck.hf, dtype):
        reference = hf_logits(ck.hf, ids)
    from_rounded, from_float32 = max_abs_diff(ours, reference), max_abs_diff(ours, hf_logits(ck.hf, ids))
    assert from_rounded < ROUNDED_ATOL[dtype]
    assert from_rounded < from_float32 / 2  # the keys and values really are stored in 16 bits, and as transformers
                                            # rounds them


@pytest.mark.parametrize("dtype", HALF_DTYPES)
@pytest.mark.parametrize("spec, batch, prefill, chunk", [(SHORT, 2, 1, 1), (MEDIUM, 2, 20, 3), (LONG, 1, 900, 1)],
                         ids=str)
def test_cached_decode_over_16_bit_cache_matches_transformers_to_n_ctx(checkpoint, dtype, spec, batch, prefill, chunk):
    ck = checkpoint(spec)
    ids = random_ids(spec.vocab_size, (batch, spec.n_positions), seed=prefill)
    model = ck.model
    cache = model.new_cache(batch, dtype=dtype)
    pieces = [model.forward(ids[:, :prefill], cache=cache)]
    pieces += [model.forward(ids[:, t:t + chunk], cache=cache) for t in range(prefill, spec.n_positions, chunk)]
    ours = np.concatenate(pieces, axis=1)
    with hf_kv_rounded(ck.hf, dtype):
        reference = hf_logits(ck.hf, ids)
    from_rounded, from_float32 = max_abs_diff(ours, reference), max_abs_diff(ours, hf_logits(ck.hf, ids))
    assert from_rounded < ROUNDED_ATOL[dtype]
    assert from_rounded < from_float32 / 2


def test_gpt2_124m_shape_over_float16_cache(checkpoint):
    ck = checkpoint(GPT2_124M)
    ids = random_ids(GPT2_124M.vocab_size, (2, 40), seed=124)
    cache = ck.model.new_cache(2, 40, dtype="float16")
    got = np.concatenate([ck.model.forward(ids[:, :24], cache=cache)] +
                         [ck.model.forward(ids[:, t:t + 1], cache=cache) for t in range(24, 40)], axis=1)
    with hf_kv_rounded(ck.hf, "float16"):
        from_rounded = max_abs_diff(got, hf_logits(ck.hf, ids))
    assert from_rounded < ROUNDED_ATOL["float16"]
    assert from_rounded < max_abs_diff(got, hf_logits(ck.hf, ids)) / 2


@pytest.mark.parametrize("dtype", HALF_DTYPES)
def test_rows_alone_or_batched_give_the_same_bits(checkpoint, dtype):
    ck = checkpoint(MEDIUM)
    ids = random_ids(MEDIUM.vocab_size, (3, 30), seed=4)
    batched = decode_cached(ck.model, ids, dtype)
    for r in range(3):
        np.testing.assert_array_equal(decode_cached(ck.model, ids[r:r + 1], dtype)[0], batched[r])


def decode_cached(model, ids, dtype, prefill=20):
    cache = model.new_cache(ids.shape[0], ids.shape[1], dtype=dtype)
    pieces = [model.forward(ids[:, :prefill], cache=cache)]
    pieces += [model.forward(ids[:, t:t + 1], cache=cache) for t in range(prefill, ids.shape[1])]
    return np.concatenate(pieces, axis=1)


@pytest.mark.parametrize("dtype", HALF_DTYPES)
def test_greedy_generation_over_16_bit_cache_matches_transformers(checkpoint, dtype):
    ck = checkpoint(TINY)
    prompts = [random_ids(TINY.vocab_size, n, seed=n).tolist() for n in (5, 2)]
    new = 100
    ours = ck.model.generate_ids(prompts, max_new_tokens=new, eos_token_id=None, cache_dtype=dtype)
    with hf_kv_rounded(ck.hf, dtype):
        for prompt, row in zip(prompts, ours):
            assert row == hf_greedy(ck.hf, prompt, new)
    # the uncached baseline stores its keys and values alike, so it gives the same tokens
    assert ck.model.generate_ids(prompts, max_new_tokens=new, eos_token_id=None, cache_dtype=dtype,
                                 use_cache=False) == ours


# ---- size, type and arguments ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("dtype, itemsize", [("float32", 4), ("float16", 2), ("bfloat16", 2)])
def test_cache_nbytes_is_the_formula(tiny, dtype, itemsize):
    cfg = tiny.model.config
    cache = tiny.model.new_cache(3, 50, dtype=dtype)
    assert cache.dtype == dtype
    assert cache.nbytes == 2 * cfg.n_layer * 3 * cfg.n_head * 50 * cfg.head_dim * itemsize
    assert f"dtype='{dtype}'" in repr(cache)
    generator = _core.Generator(tiny.model._core, [[1, 2]], max_new_tokens=3, cache_dtype=dtype)
    assert generator.cache_nbytes == 2 * cfg.n_layer * 1 * cfg.n_embd * 5 * itemsize


def test_numpy_dtypes_are_accepted(tiny):
    assert tiny.model.new_cache(1, 8, dtype=np.float16).dtype == "float16"
    assert tiny.model.new_cache(1, 8, dtype=np.dtype("float32")).dtype == "float32"


@pytest.mark.parametrize("bad, error", [("float64", ValueError), ("fp16", ValueError), ("int8", ValueError),
                                        (np.float64, ValueError), (16, TypeError), (None, TypeError)])
def test_bad_cache_dtype_is_rejected(tiny, bad, error):
    with pytest.raises(error, match="dtype"):
        tiny.model.new_cache(1, 8, dtype=bad)
    if bad is None:  # generate's cache_dtype=None is its default: float32, or the dtype of a cache it continues
        assert tiny.model.generate_ids([1, 2], max_new_tokens=2, cache_dtype=None) == tiny.model.generate_ids([1, 2], 2)
        return
    with pytest.raises(error, match="dtype"):
        tiny.model.generate_ids([1, 2], max_new_tokens=2, cache_dtype=bad)


def test_cache_overflow_is_an_error_in_16_bits_too(tiny):
    cache = tiny.model.new_cache(1, 4, dtype="float16")
    tiny.model.forward([[1, 2, 3]], cache=cache)
    with pytest.raises(ValueError, match="overflow"):
        tiny.model.forward([[1, 2]], cache=cache)
    assert cache.seq_lens == [3]
