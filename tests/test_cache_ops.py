"""The KV cache as an object a user handles: NumPy views of its keys and values (equal to transformers'
past_key_values), per-row copy, crop and reset, whole copies, reading and appending positions, and the errors of
each misuse."""

from __future__ import annotations

import copy
import pickle

import numpy as np
import pytest
import torch

import kvcache
from conftest import ODD
from llama_checkpoints import GQA, LlamaFactory

CACHE_ATOL = 1e-5  # our K/V against transformers': the same float32 products, summed in another order


@pytest.fixture(scope="module")
def llama(tmp_path_factory) -> LlamaFactory:
    return LlamaFactory(tmp_path_factory)


def _hf_past(hf, ids):
    with torch.no_grad():
        return hf(torch.tensor(ids), use_cache=True).past_key_values


@pytest.mark.parametrize("family", ["gpt2", "llama"])
def test_views_equal_transformers_past_key_values(checkpoint, llama, family):
    ckpt = checkpoint(ODD) if family == "gpt2" else llama(GQA)
    ids = np.random.default_rng(0).integers(0, ckpt.spec.vocab_size, size=(2, 9)).tolist()
    cache = ckpt.model.new_cache(2, 32)
    ckpt.model.forward(ids, cache)
    past = _hf_past(ckpt.hf, ids)
    for layer in range(cache.n_layer):
        k, v = past.layers[layer].keys.numpy(), past.layers[layer].values.numpy()  # (B, NKV, T, HS)
        assert cache.keys(layer).shape == k.shape == (2, cache.n_kv_head, 9, cache.head_dim)
        np.testing.assert_allclose(cache.keys(layer), k, atol=CACHE_ATOL, rtol=0)
        np.testing.assert_allclose(cache.values(layer), v, atol=CACHE_ATOL, rtol=0)
        np.testing.assert_array_equal(cache.keys(layer, row=1), cache.keys(layer)[1])
    whole = np.asarray(cache)
    assert whole.shape == cache.shape and whole.dtype == np.float32
    np.testing.assert_array_equal(whole[1, 0, :, :, :9], cache.keys(1))
    snapshot = np.array(cache)  # copy=True: not the live buffer
    ckpt.model.forward([[1], [2]], cache)
    assert not snapshot[:, :, :, :, 9].any() and whole[:, :, :, :, 9].any()


def test_views_are_live_read_only_and_keep_the_cache_alive(tiny):
    cache = tiny.model.new_cache(1, 16)
    tiny.model.forward([[1, 2, 3]], cache)
    view = cache.keys(0)
    assert not view.flags.writeable
    with pytest.raises(ValueError):
        view[0, 0, 0, 0] = 1.0
    row_view = cache.keys(0, row=0)
    del cache
    assert np.isfinite(row_view).all()  # the view holds the cache


@pytest.mark.parametrize("dtype, np_dtype", [("float16", np.float16), ("bfloat16", np.float32)])
def test_16_bit_views(tiny, dtype, np_dtype):
    ref, cache = tiny.model.new_cache(1, 16), tiny.model.new_cache(1, 16, dtype)
    tiny.model.forward([[4, 5, 6, 7]], ref)
    tiny.model.forward([[4, 5, 6, 7]], cache)
    keys = cache.keys(0)  # layer 0's keys come from the embeddings alone: the float32 ones, rounded once
    assert keys.dtype == np_dtype
    np.testing.assert_allclose(keys.astype(np.float32), ref.keys(0), rtol=2 ** -8 if dtype == "bfloat16" else 2 ** -11,
                               atol=1e-7)
    raw = cache.read(0, 0, 4)
    assert raw.dtype == (np.float16 if dtype == "float16" else np.uint16)
    if dtype == "bfloat16":  # the stored bits, widened, are the view
        widened = (raw.astype(np.uint32) << 16).view(np.float32)
        np.testing.assert_array_equal(widened[0, 0], keys[0])


def test_copy_row_crop_row_and_reset_row(tiny):
    model = tiny.model
    cache = model.new_cache(3, 32)
    model.forward([[1, 2, 3, 4, 5], [6, 7, 8, 9, 10], [11, 12, 13, 14, 15]], cache)
    cache.copy_row(0, 2)
    assert cache.seq_lens == [5, 5, 5]
    for layer in range(cache.n_layer):
        np.testing.assert_array_equal(cache.keys(layer, row=2), cache.keys(layer, row=0))
        np.testing.assert_array_equal(cache.values(layer, row=2), cache.values(layer, row=0))
    cache.crop(2, row=1)
    assert cache.seq_lens == [5, 2, 5]
    cache.crop(7, row=1)  # longer than the row: nothing changes
    assert cache.seq_lens == [5, 2, 5]
    cache.reset(row=0)
    assert cache.seq_lens == [0, 2, 5]
    # the copied row continues exactly as its source would: same logits for the same next token
    other = model.new_cache(1, 32)
    model.forward([[1, 2, 3, 4, 5]], other)
    a = model.forward([[9]], cache, rows=[2], logits="last")
    b = model.forward([[9]], other, logits="last")
    np.testing.assert_array_equal(a, b)


def test_copy_row_into_another_cache_and_whole_copies(tiny):
    model = tiny.model
    src, dst = model.new_cache(2, 16), model.new_cache(4, 24)
    model.forward([[1, 2, 3], [4, 5, 6]], src)
    src.copy_row(1, 3, dst=dst)
    assert dst.seq_lens == [0, 0, 0, 3]
    np.testing.assert_array_equal(dst.keys(1, row=3), src.keys(1, row=1))
    for clone in (src.copy(), copy.copy(src), copy.deepcopy(src)):
        assert clone.seq_lens == src.seq_lens and clone.shape == src.shape and clone.dtype == src.dtype
        np.testing.assert_array_equal(np.asarray(clone), np.asarray(src))
        model.forward([[7], [8]], clone)  # a copy diverges alone
        assert src.seq_lens == [3, 3]


def test_read_and_append_round_trip(tiny):
    model = tiny.model
    cache = model.new_cache(2, 16)
    model.forward([[1, 2, 3, 4, 5, 6], [7, 8, 9, 10, 11, 12]], cache)
    middle = cache.read(0, 2, 3)
    assert middle.shape == (cache.n_layer, 2, cache.n_kv_head, 3, cache.head_dim)
    np.testing.assert_array_equal(middle[1, 0], cache.keys(1, row=0)[:, 2:5])
    cache.crop(2, row=1)
    cache.append(1, middle)
    np.testing.assert_array_equal(cache.keys(0, row=1)[:, 2:], middle[0, 0])
    assert cache.seq_lens == [6, 5]


def test_pickle_is_refused_with_the_way_to_save(tiny):
    with pytest.raises(TypeError, match="session.save"):
        pickle.dumps(tiny.model.new_cache(1, 8))


def test_misuse_is_a_clear_error(checkpoint, tiny):
    model = tiny.model
    cache = model.new_cache(2, 8)
    model.forward([[1, 2, 3], [4, 5, 6]], cache)
    other_model = checkpoint(ODD).model
    with pytest.raises(IndexError, match="row 2 out of range for a cache of batch_size 2"):
        cache.crop(1, row=2)
    with pytest.raises(IndexError, match="src -1 out of range"):
        cache.copy_row(-1, 0)
    with pytest.raises(IndexError, match="layer 5 out of range for a cache of 2 layers"):
        cache.keys(5)
    with pytest.raises(ValueError, match="crop length must be >= 0, got -1"):
        cache.crop(-1, row=0)
    with pytest.raises(ValueError, match="between the caches of two models"):
        cache.copy_row(0, 0, dst=other_model.new_cache(1, 8))
    with pytest.raises(ValueError, match="float32 cache row into a float16 cache"):
        cache.copy_row(0, 0, dst=model.new_cache(1, 8, "float16"))
    with pytest.raises(ValueError, match="holds 3 positions, more than the destination's max_seq_len=2"):
        cache.copy_row(0, 0, dst=model.new_cache(1, 2))
    with pytest.raises(ValueError, match=r"positions \[2, 5\) are outside the 3 that row 0 holds"):
        cache.read(0, 2, 3)
    with pytest.raises(TypeError, match="a float32 cache takes float32 positions, got float16"):
        cache.append(0, cache.read(0, 0, 1).astype(np.float16))
    with pytest.raises(ValueError, match="positions must be"):
        cache.append(0, np.zeros((2, 2, 2, 1, 3), np.float32))
    with pytest.raises(ValueError, match="KV cache overflow"):
        cache.append(0, np.concatenate([cache.read(0, 0, 3)] * 2, axis=3))
    with pytest.raises(ValueError, match="cache rows must be distinct"):
        model.forward([[1], [2]], cache, rows=[1, 1])
    with pytest.raises(ValueError, match="rows are cache rows"):
        model.forward([[1]], rows=[0])
    assert cache.seq_lens == [3, 3]  # nothing above changed it
    with pytest.raises(TypeError, match="cannot be created directly"):
        kvcache.KVCache()
