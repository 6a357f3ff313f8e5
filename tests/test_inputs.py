"""Inputs as transformers users pass them: token ids as lists, tuples, NumPy arrays and torch tensors of any integer
dtype; padded batches with their attention_mask (left or right) giving each row's unpadded result, and transformers'
left-padded generate token for token; GPT2Config and LlamaConfig under transformers' names; checkpoints named by a
file inside them, sharded GPT-2 checkpoints, and PyTorch-only directories refused with the way to convert them."""

from __future__ import annotations

import json
import pickle
import re
import shutil
import subprocess
import sys

import numpy as np
import pytest
import torch
import transformers

import kvcache
from conftest import MEDIUM, TINY, UNTIED, copy_checkpoint, random_ids
from kvcache import GPT2, GPT2Config, Llama, LlamaConfig
from llama_checkpoints import GQA, MQA, LlamaFactory

SAMPLING = dict(do_sample=True, temperature=1.2, top_k=30, top_p=0.95)
ROW_SEED_STEP = 0x9E3779B97F4A7C15  # csrc/generate.cc: row r of a batch samples from seed + r * this (mod 2**64)


@pytest.fixture(scope="module")
def llama(tmp_path_factory) -> LlamaFactory:
    return LlamaFactory(tmp_path_factory)


@pytest.fixture(params=["gpt2", "llama"])
def ck(request, checkpoint, llama):
    """A GPT-2 and a LLaMA random checkpoint (model, transformers' reference); neither has an end-of-text id in its
    vocabulary, so nothing stops early unless a test asks."""
    return checkpoint(TINY) if request.param == "gpt2" else llama(GQA)


def prompts(n_vocab, lengths, seed=0):
    return [random_ids(n_vocab, n, seed=seed + i).tolist() for i, n in enumerate(lengths)]


def padded(rows, side, pad):
    """The batch transformers' tokenizers make: (B, T) ids with pad on one side, and the 0/1 attention_mask."""
    width = max(len(r) for r in rows)
    ids, mask = [], []
    for r in rows:
        fill = width - len(r)
        ids.append([pad] * fill + r if side == "left" else r + [pad] * fill)
        mask.append([0] * fill + [1] * len(r) if side == "left" else [1] * len(r) + [0] * fill)
    return ids, mask


# ---- token ids in every form -----------------------------------------------------------------------------------------

INT_DTYPES = [np.int8, np.int16, np.int32, np.int64, np.uint8, np.uint16, np.uint32, np.uint64]
TORCH_INT_DTYPES = [torch.int16, torch.int32, torch.int64, torch.uint8]


@pytest.mark.parametrize("dtype", INT_DTYPES, ids=lambda d: np.dtype(d).name)
def test_numpy_ids_of_any_integer_dtype_give_the_lists_tokens_in_that_dtype(tiny, dtype):
    rows = prompts(TINY.vocab_size, [6, 6], seed=1)  # TINY's 101 ids fit every dtype
    expected = tiny.model.generate_ids(rows, 7, eos_token_id=None)
    out = tiny.model.generate_ids(np.array(rows, dtype=dtype), 7, eos_token_id=None)
    assert isinstance(out, np.ndarray) and out.dtype == dtype and out.shape == (2, 13)
    assert out.tolist() == expected
    one = tiny.model.generate_ids(np.array(rows[0], dtype=dtype), 7, eos_token_id=None)
    assert isinstance(one, np.ndarray) and one.shape == (13,) and one.tolist() == expected[0]


@pytest.mark.parametrize("dtype", TORCH_INT_DTYPES, ids=str)
def test_torch_ids_give_a_tensor_of_their_dtype(tiny, dtype):
    rows = prompts(TINY.vocab_size, [5, 5, 5], seed=2)
    expected = tiny.model.generate_ids(rows, 6, eos_token_id=None)
    out = tiny.model.generate_ids(torch.tensor(rows, dtype=dtype), 6, eos_token_id=None)
    assert isinstance(out, torch.Tensor) and out.dtype == dtype and out.shape == (3, 11)
    assert out.tolist() == expected
    one = tiny.model.generate_ids(torch.tensor(rows[1], dtype=dtype), 6, eos_token_id=None)
    assert isinstance(one, torch.Tensor) and one.shape == (11,) and one.tolist() == expected[1]
    # transformers' generate takes ids: so does generate, giving ids back
    assert tiny.model.generate(torch.tensor(rows, dtype=dtype), 6, eos_token_id=None).tolist() == expected


def test_a_dtype_too_small_for_the_vocabulary_gives_int64(text_ckpt):
    """Ids of a 50257-token vocabulary do not all fit int16: the result is int64 rather than wrapped around."""
    for dtype in (np.int32, np.uint16):
        assert text_ckpt.model.generate_ids(np.array([[464, 2068]], dtype=dtype), 3).dtype == dtype
    out = text_ckpt.model.generate_ids(np.array([[46, 20]], dtype=np.int16), 3)
    assert out.dtype == np.int64 and out[0, :2].tolist() == [46, 20]
    assert text_ckpt.model.generate_ids(torch.tensor([[46, 20]], dtype=torch.uint8), 3).dtype == torch.int64


def test_tuples_and_rows_of_tensors_are_prompts(tiny):
    rows = prompts(TINY.vocab_size, [3, 8], seed=3)
    expected = tiny.model.generate_ids(rows, 5, eos_token_id=None)
    assert tiny.model.generate_ids(tuple(tuple(r) for r in rows), 5, eos_token_id=None) == expected
    assert tiny.model.generate_ids([torch.tensor(r) for r in rows], 5, eos_token_id=None) == expected
    assert tiny.model.generate_ids([np.array(r, np.uint16) for r in rows], 5, eos_token_id=None) == expected


@pytest.mark.parametrize("form", ["list", "numpy-int32", "torch-int64", "torch-int32", "torch-1d"])
def test_forward_takes_every_form(ck, form):
    ids = random_ids(ck.model.config.n_vocab, (2, 9), seed=4)
    expected = ck.model.forward(ids)
    given = {"list": ids.tolist(), "numpy-int32": ids.astype(np.int32), "torch-int64": torch.from_numpy(ids),
             "torch-int32": torch.from_numpy(ids).int(), "torch-1d": torch.from_numpy(ids[0])}[form]
    out = ck.model.forward(given)
    np.testing.assert_array_equal(out, expected[:1] if form == "torch-1d" else expected)
    # through a cache, and scoring only the last position
    cache = ck.model.new_cache(1, 16)
    last = ck.model.forward(torch.from_numpy(ids[:1]), cache=cache, logits="last")
    np.testing.assert_array_equal(last, expected[:1, -1])
    assert cache.seq_lens == [9]


def test_decode_and_sessions_take_arrays_and_tensors(text_ckpt):
    model = text_ckpt.model
    ids = model.encode("Hello world, this is a test")
    text = model.decode(ids)
    assert text == "Hello world, this is a test"
    for form in (np.array(ids, np.int32), torch.tensor(ids), torch.tensor(ids, dtype=torch.int32), tuple(ids)):
        assert model.decode(form) == text
        assert model.tokenizer.decode(form) == text
    a, b = model.session(max_seq_len=64), model.session(max_seq_len=64)
    a.append(ids)
    b.append(torch.tensor(ids))
    assert b.tokens == a.tokens == ids
    assert b.generate(5, eos_token_id=None) == a.generate(5, eos_token_id=None)


@pytest.mark.parametrize("ids, error, pattern", [
    (torch.tensor([[1.0, 2.0]]), TypeError, r"token ids must be integers, got a tensor of torch\.float32"),
    (torch.tensor([[1, 2]], dtype=torch.bfloat16), TypeError, r"got a tensor of torch\.bfloat16"),
    (torch.tensor([[True, False]]), TypeError, r"token ids must be integers, got dtype bool"),
    (np.array([True, False]), TypeError, r"token ids must be integers, got dtype bool"),
    (np.array([[1.5]]), TypeError, r"got dtype float64"),
    (torch.zeros((1, 2, 3), dtype=torch.long), ValueError, r"1-D .* or 2-D .* got 3 dimensions \(shape \(1, 2, 3\)\)"),
    (torch.tensor([[1, 101]]), ValueError, r"token id 101 in prompt 0 is outside the vocabulary \[0, 101\)"),
    (torch.tensor([[3], [-4]]), ValueError, r"token id -4 in prompt 1 is outside the vocabulary"),
    ({"input_ids": [1]}, TypeError, r"token ids must be a list .* got dict"),
], ids=["float", "bfloat16", "bool-tensor", "bool-array", "float-array", "3-D", "beyond-vocab", "negative", "dict"])
def test_bad_ids_are_named_in_generate_ids(tiny, ids, error, pattern):
    with pytest.raises(error, match=pattern):
        tiny.model.generate_ids(ids, 2)


@pytest.mark.parametrize("tokens, error, pattern", [
    (torch.tensor([[1.0, 2.0]]), TypeError, r"token ids must be integers, got a tensor of torch\.float32"),
    (torch.tensor([[True]]), TypeError, r"integer array, got dtype bool"),
    (torch.zeros((1, 2, 3), dtype=torch.long), ValueError, r"2-D array .* got 3 dimensions"),
    (torch.tensor([[1, 101]]), ValueError, r"token id 101 is outside the vocabulary \[0, 101\)"),
    ([[1, 2], [3]], ValueError, r"equal-length rows, got rows of lengths \[2, 1\]"),
], ids=["float", "bool", "3-D", "beyond-vocab", "ragged"])
def test_bad_tokens_are_named_in_forward(tiny, tokens, error, pattern):
    with pytest.raises(error, match=pattern):
        tiny.model.forward(tokens)


def test_bad_ids_are_named_in_decode_and_sessions(text_ckpt):
    model = text_ckpt.model
    with pytest.raises(TypeError, match=r"got a tensor of torch\.float32"):
        model.decode(torch.tensor([1.0]))
    with pytest.raises(ValueError, match=r"one sequence of token ids \(1-D\), got 2 dimensions"):
        model.decode(torch.tensor([[15496]]))
    with pytest.raises(ValueError, match=r"token id 60000 is outside the tokenizer's vocabulary"):
        model.decode(np.array([15496, 60000]))
    session = model.session(max_seq_len=32)
    with pytest.raises(TypeError, match=r"dtype bool"):
        session.append(np.array([True]))
    with pytest.raises(ValueError, match=r"token id 60000 is outside the vocabulary"):
        session.append(torch.tensor([1, 60000]))
    assert session.tokens == []


def test_numpy_ids_work_where_torch_cannot_be_imported(tiny):
    """torch is recognised by duck-typing, never imported: without it, arrays and lists work as before."""
    script = ("import sys; sys.modules['torch'] = None\n"
              "import numpy as np, kvcache\n"
              f"m = kvcache.GPT2.from_pretrained({str(tiny.path)!r})\n"
              "out = m.generate_ids(np.array([[1, 2, 3], [0, 4, 5]]), 3, attention_mask=[[1, 1, 1], [0, 1, 1]],\n"
              "                     eos_token_id=None)\n"
              "print(type(out).__name__, out.shape, 'torch' in sys.modules and sys.modules['torch'] is not None)\n")
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["ndarray", "(2,", "6)", "False"]


# ---- padded batches and attention_mask -----------------------------------------------------------------------------

@pytest.mark.parametrize("side", ["left", "right"])
@pytest.mark.parametrize("form", ["torch", "numpy", "lists"])
def test_a_padded_batch_equals_each_row_alone_greedy(ck, side, form):
    rows = prompts(ck.model.config.n_vocab, [3, 9, 6], seed=5)
    ids, mask = padded(rows, side, pad=0)
    if form != "lists":
        ids, mask = (torch.tensor(ids), torch.tensor(mask)) if form == "torch" else (np.array(ids), np.array(mask))
    out = ck.model.generate_ids(ids, 12, attention_mask=mask, eos_token_id=None)
    T = 9
    for i, row in enumerate(rows):
        alone = ck.model.generate_ids(row, 12, eos_token_id=None)
        got = out[i].tolist() if form != "lists" else out[i]
        assert got[:T] == (ids[i].tolist() if form != "lists" else ids[i])  # the prompt exactly as given
        assert got[T:] == alone[len(row):], f"row {i}"
    if form == "torch":
        assert isinstance(out, torch.Tensor) and out.shape == (3, T + 12) and out.dtype == torch.int64
        assert out[:, T:].tolist() == [ck.model.generate_ids(r, 12, eos_token_id=None)[len(r):] for r in rows]


@pytest.mark.parametrize("side", ["left", "right"])
def test_a_padded_batch_equals_each_row_alone_sampled(ck, side):
    """Row r of a batch samples from its own stream, seeded seed + r * ROW_SEED_STEP: alone with that seed, each
    unpadded row gives its batched tokens."""
    rows = prompts(ck.model.config.n_vocab, [7, 2, 5, 4], seed=6)
    ids, mask = padded(rows, side, pad=1)
    out = ck.model.generate_ids(torch.tensor(ids), 15, attention_mask=torch.tensor(mask), eos_token_id=None,
                                seed=11, **SAMPLING)
    alone = [ck.model.generate_ids(row, 15, eos_token_id=None, seed=(11 + r * ROW_SEED_STEP) % 2**64, **SAMPLING)
             for r, row in enumerate(rows)]
    assert out[:, 7:].tolist() == [a[len(row):] for a, row in zip(alone, rows)]
    # the same batch unpadded, as lists, draws the same tokens: padding changes nothing
    assert [o[len(r):] for o, r in zip(ck.model.generate_ids(rows, 15, eos_token_id=None, seed=11, **SAMPLING),
                                       rows)] == out[:, 7:].tolist()


def test_left_padded_batch_equals_transformers_generate(ck):
    """transformers' generate on a left-padded batch (attention_mask and pad_token_id set, greedy), token for token."""
    pad = 0
    rows = prompts(ck.model.config.n_vocab, [4, 11, 8, 1], seed=7)
    ids, mask = padded(rows, "left", pad)
    ids, mask = torch.tensor(ids), torch.tensor(mask)
    with torch.no_grad():
        expected = ck.hf.generate(ids, attention_mask=mask, pad_token_id=pad, do_sample=False, max_new_tokens=20,
                                  min_new_tokens=20, eos_token_id=None)
    out = ck.model.generate_ids(ids, 20, attention_mask=mask, pad_token_id=pad, eos_token_id=None)
    assert out.shape == expected.shape == (4, 31)
    assert out.tolist() == expected.tolist()


def test_rows_that_stop_early_are_filled_with_the_pad_id(tiny, tmp_path):
    rows = prompts(TINY.vocab_size, [5, 3], seed=8)
    free = tiny.model.generate_ids(rows, 10, eos_token_id=None)
    eos = free[0][len(rows[0]) + 2]  # row 0's third new token
    assert eos not in free[1][len(rows[1]):], "the test needs a row that does not stop"
    ids, mask = padded(rows, "left", pad=0)
    ids, mask = torch.tensor(ids), torch.tensor(mask)
    stop = free[0][len(rows[0]):].index(eos) + 1  # new tokens of row 0, the end-of-text id included
    # default: the end-of-text id, as transformers does when the config has no pad_token_id
    out = tiny.model.generate_ids(ids, 10, attention_mask=mask, eos_token_id=eos)
    assert out.shape == (2, 15)
    assert out[0, 5:].tolist() == free[0][5:5 + stop] + [eos] * (10 - stop)
    assert out[1, 5:].tolist() == free[1][3:]
    assert tiny.model.generate_ids(ids, 10, attention_mask=mask, eos_token_id=eos, pad_token_id=99)[0, 5 + stop:] \
        .tolist() == [99] * (10 - stop)
    # the config's pad_token_id comes first
    with_pad = copy_checkpoint(tiny.path, tmp_path / "with-pad")
    config = json.loads((with_pad / "config.json").read_text())
    (with_pad / "config.json").write_text(json.dumps({**config, "pad_token_id": 7}))
    model = GPT2.from_pretrained(with_pad)
    assert model.pad_token_id == 7
    assert model.generate_ids(ids, 10, attention_mask=mask, eos_token_id=eos)[0, 5 + stop:].tolist() == \
        [7] * (10 - stop)
    # lists are never filled; no pad id is needed for them, nor for rows of one length
    assert tiny.model.generate_ids(ids.tolist(), 10, attention_mask=mask.tolist(), eos_token_id=eos,
                                   pad_token_id=None)[0] == ids[0].tolist() + free[0][5:5 + stop]
    with pytest.raises(ValueError, match=r"rows ended at different lengths .* give pad_token_id="):
        tiny.model.generate_ids(ids, 10, attention_mask=mask, eos_token_id=eos, pad_token_id=None)


def test_pads_may_be_any_integer_and_come_back_as_given(tiny):
    """Pads are never read: an id outside the vocabulary (or -1) is fine there, and is returned where it was."""
    rows = prompts(TINY.vocab_size, [4, 6], seed=9)
    expected = tiny.model.generate_ids(rows, 5, eos_token_id=None)
    for pad in (-1, 10 ** 6):
        ids, mask = padded(rows, "right", pad)
        out = tiny.model.generate_ids(np.array(ids), 5, attention_mask=np.array(mask, dtype=bool), eos_token_id=None)
        assert out[0].tolist() == rows[0] + [pad, pad] + expected[0][4:]
        assert out[1].tolist() == expected[1]


def test_ones_between_pads_and_ragged_lists(tiny):
    """A row's ones are one run, with pads before, after or on both sides; lists may differ in length per row."""
    rows = prompts(TINY.vocab_size, [3, 5], seed=10)
    ids = [[0] + rows[0] + [0], rows[1]]
    out = tiny.model.generate_ids(ids, 4, attention_mask=[[0, 1, 1, 1, 0], [1] * 5], eos_token_id=None)
    alone = tiny.model.generate_ids(rows, 4, eos_token_id=None)
    assert out == [ids[0] + alone[0][3:], alone[1]]


def test_padded_batches_with_fan_out_and_beams(tiny):
    rows = prompts(TINY.vocab_size, [2, 6], seed=12)
    ids, mask = padded(rows, "left", pad=0)
    ids, mask = torch.tensor(ids), torch.tensor(mask)
    fanned = tiny.model.generate_ids(ids, 6, attention_mask=mask, num_return_sequences=2, seed=3, eos_token_id=None,
                                     **SAMPLING)
    assert fanned.shape == (4, 12)
    assert fanned[:, 6:].tolist() == [s[len(rows[i // 2]):] for i, s in enumerate(
        tiny.model.generate_ids(rows, 6, num_return_sequences=2, seed=3, eos_token_id=None, **SAMPLING))]
    beams = tiny.model.generate_ids(ids, 6, attention_mask=mask, num_beams=3, num_return_sequences=2)
    assert beams[:, 6:].tolist() == [s[len(rows[i // 2]):] for i, s in enumerate(
        tiny.model.generate_ids(rows, 6, num_beams=3, num_return_sequences=2))]


@pytest.mark.parametrize("mask, error, pattern", [
    ([[1, 0, 1], [1, 1, 1]], ValueError, r"attention_mask row 0 has a hole: 0 at position 1"),
    ([[1, 1, 1], [0, 0, 0]], ValueError, r"attention_mask row 1 is all zeros"),
    ([[1, 1, 2], [1, 1, 1]], ValueError, r"attention_mask must hold 0 and 1 only, got 2 at \[0, 2\]"),
    ([[1, 1, -1], [1, 1, 1]], ValueError, r"got -1 at \[0, 2\]"),
    (torch.ones((2, 4), dtype=torch.long), ValueError, r"attention_mask has shape \(2, 4\), the token ids \(2, 3\)"),
    (torch.ones((3, 3), dtype=torch.long), ValueError, r"attention_mask has shape \(3, 3\)"),
    ([[1, 1, 1]], ValueError, r"attention_mask has 1 rows, the token ids 2"),
    ([[1, 1], [1, 1, 1]], ValueError, r"attention_mask row 0 has 2 values, prompt 0 has 3 tokens"),
    (torch.ones((2, 3)), TypeError, r"attention_mask must be integers, got a tensor of torch\.float32"),
    (np.ones((2, 3)), TypeError, r"attention_mask must hold 0 and 1 \(integers or bools\), got dtype float64"),
    ([[1, 1, 0.5], [1, 1, 1]], TypeError, r"attention_mask must hold 0 and 1, got float 0\.5 at \[0, 2\]"),
    ("111", TypeError, r"attention_mask must be a list, a NumPy array or a torch tensor"),
], ids=["hole", "all-zero", "two", "negative", "wider", "more-rows", "fewer-rows", "row-length", "float-tensor",
        "float-array", "float-value", "str"])
def test_bad_masks_are_refused(tiny, mask, error, pattern):
    ids = torch.tensor([[5, 6, 7], [8, 9, 10]])
    with pytest.raises(error, match=pattern):
        tiny.model.generate_ids(ids if not isinstance(mask, list) else ids.tolist(), 2, attention_mask=mask)


def test_a_mask_with_text_prompts_is_refused(text_ckpt):
    with pytest.raises(ValueError, match=r"attention_mask goes with padded token ids"):
        text_ckpt.model.generate("Hello", 2, attention_mask=[1])
    with pytest.raises(TypeError, match=r"pad_token_id must be an int"):
        text_ckpt.model.generate_ids([1, 2], 2, pad_token_id="0")


# ---- configs under transformers' names ---------------------------------------------------------------------------

def test_gpt2config_takes_transformers_names():
    hf = transformers.GPT2Config(vocab_size=300, n_positions=96, n_embd=48, n_layer=3, n_head=4,
                                 layer_norm_epsilon=1e-6)
    ours = GPT2Config(n_vocab=300, n_ctx=96, n_embd=48, n_layer=3, n_head=4, eps=1e-6)
    from_hf = GPT2Config(**{k: getattr(hf, k) for k in ("vocab_size", "n_positions", "n_embd", "n_layer", "n_head",
                                                        "layer_norm_epsilon")})
    assert from_hf == ours and repr(from_hf) == repr(ours)
    assert repr(ours) == "GPT2Config(n_vocab=300, n_ctx=96, n_embd=48, n_head=4, n_layer=3, eps=1e-06)"
    # transformers' attribute_map names too
    assert GPT2Config(hidden_size=48, num_attention_heads=4, num_hidden_layers=3, max_position_embeddings=96,
                      vocab_size=300, eps=1e-6) == ours
    # one field under two names with one value is fine; it pickles as any config
    both = GPT2Config(n_ctx=96, n_positions=96, n_vocab=300, vocab_size=300, n_embd=48, n_layer=3, n_head=4, eps=1e-6)
    assert both == ours and pickle.loads(pickle.dumps(both)) == ours
    assert (both.n_vocab, both.n_ctx, both.eps) == (300, 96, np.float32(1e-6))


@pytest.mark.parametrize("kwargs, error, pattern", [
    (dict(n_ctx=64, n_positions=128), ValueError,
     r"GPT2Config\(\): n_ctx=64 and n_positions=128 name one field \(n_ctx\) with different values"),
    (dict(n_positions=64, max_position_embeddings=65), ValueError, r"n_positions=64 and max_position_embeddings=65"),
    (dict(eps=1e-5, layer_norm_epsilon=1e-6), ValueError, r"eps=1e-05 and layer_norm_epsilon=1e-06"),
    (dict(n_inner=None), TypeError,
     r"GPT2Config\(\) got an unexpected keyword argument 'n_inner'; it takes n_vocab \(or vocab_size\), n_ctx \(or "
     r"n_positions, max_position_embeddings\), .*layer_norm_epsilon\), add_cross_attention"),
    (dict(n_positions="64"), TypeError, r"n_positions must be an int, got str '64'"),
    (dict(num_attention_heads=True), TypeError, r"num_attention_heads must be an int, got bool True"),
    (dict(layer_norm_epsilon=0.0), ValueError, r"epsilon must be a positive finite float32"),
], ids=["two-names", "two-aliases", "eps", "unknown", "str", "bool", "bad-value"])
def test_gpt2config_names_its_problems(kwargs, error, pattern):
    with pytest.raises(error, match=pattern):
        GPT2Config(**kwargs)


def test_configs_take_keywords_only():
    with pytest.raises(TypeError, match=r"GPT2Config\(\) takes keyword arguments only, got 1 positional; it takes "
                                        r"n_vocab \(or vocab_size\)"):
        GPT2Config(50257)
    with pytest.raises(TypeError, match=r"LlamaConfig\(\) takes keyword arguments only, got 2 positional"):
        LlamaConfig(1, 2)


def test_llamaconfig_takes_transformers_names():
    hf = transformers.LlamaConfig(vocab_size=211, hidden_size=64, intermediate_size=96, num_hidden_layers=2,
                                  num_attention_heads=8, num_key_value_heads=2, max_position_embeddings=512,
                                  rms_norm_eps=1e-5, rope_theta=5e5)
    names = ("vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads",
             "num_key_value_heads", "max_position_embeddings", "rms_norm_eps")
    from_hf = LlamaConfig(**{k: getattr(hf, k) for k in names}, rope_theta=5e5)
    ours = LlamaConfig(n_vocab=211, n_embd=64, n_ff=96, n_layer=2, n_head=8, n_kv_head=2, n_ctx=512, eps=1e-5,
                       rope_theta=5e5)
    assert repr(from_hf) == repr(ours) == ("LlamaConfig(n_vocab=211, n_ctx=512, n_embd=64, n_head=8, n_kv_head=2, "
                                           "n_layer=2, head_dim=8, n_ff=96, eps=1e-05, rope_theta=5e+05)")
    for name in ("n_vocab", "n_ctx", "n_embd", "n_head", "n_kv_head", "n_layer", "head_dim", "n_ff", "eps",
                 "rope_theta", "rope_scaling", "attention_bias", "mlp_bias", "tie_word_embeddings"):
        assert getattr(from_hf, name) == getattr(ours, name), name
    assert LlamaConfig(hidden_size=64, num_attention_heads=8).n_kv_head == 8  # num_key_value_heads defaults as ours


def test_llamaconfig_names_its_problems_and_pickles():
    with pytest.raises(ValueError, match=r"LlamaConfig\(\): n_kv_head=2 and num_key_value_heads=4 name one field"):
        LlamaConfig(n_embd=64, n_head=8, n_kv_head=2, num_key_value_heads=4)
    with pytest.raises(TypeError, match=r"unexpected keyword argument 'hidden_act'; it takes n_vocab \(or "
                                        r"vocab_size\), .*n_kv_head \(or num_key_value_heads\)"):
        LlamaConfig(hidden_act="silu")
    with pytest.raises(TypeError, match=r"rms_norm_eps must be a number, got str"):
        LlamaConfig(rms_norm_eps="small")
    scaled = LlamaConfig(n_vocab=90, n_ctx=2048, hidden_size=32, num_attention_heads=4, num_key_value_heads=2,
                         num_hidden_layers=1, intermediate_size=40, head_dim=16, attention_bias=True,
                         tie_word_embeddings=True,
                         rope_scaling={"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0,
                                       "high_freq_factor": 4.0, "original_max_position_embeddings": 64})
    copied = pickle.loads(pickle.dumps(scaled))
    assert repr(copied) == repr(scaled)
    assert copied.rope_scaling == scaled.rope_scaling and copied.head_dim == 16
    np.testing.assert_array_equal(copied.rope_inv_freq, scaled.rope_inv_freq)


# ---- checkpoints: a file for its directory, shards, PyTorch-only weights -------------------------------------------

@pytest.mark.parametrize("spec", [UNTIED, MEDIUM], ids=str)
def test_sharded_gpt2_checkpoint_loads_bit_for_bit(checkpoint, tmp_path, spec):
    ck = checkpoint(spec)
    ck.hf.save_pretrained(tmp_path, max_shard_size="200KB")
    shards = sorted(p.name for p in tmp_path.glob("model-*.safetensors"))
    assert len(shards) >= 2 and (tmp_path / "model.safetensors.index.json").is_file()
    assert not (tmp_path / "model.safetensors").exists()
    sharded = GPT2.from_pretrained(tmp_path)
    assert sharded.config == ck.model.config and sharded._core.tied == ck.model._core.tied == spec.tie
    whole = ck.model.state_dict()
    assert sharded.state_dict().keys() == whole.keys()
    for name, value in sharded.state_dict().items():
        np.testing.assert_array_equal(value, whole[name], err_msg=name)
    ids = random_ids(spec.vocab_size, (2, 10), seed=13)
    np.testing.assert_array_equal(sharded.forward(ids), ck.model.forward(ids))
    assert sharded.generate_ids(ids.tolist(), 8, eos_token_id=None) == ck.model.generate_ids(ids.tolist(), 8,
                                                                                           eos_token_id=None)
    # a file of it names the checkpoint
    for file in ("config.json", "model.safetensors.index.json", shards[0]):
        np.testing.assert_array_equal(GPT2.from_pretrained(tmp_path / file).forward(ids[:1]), sharded.forward(ids[:1]))


def test_sharded_gpt2_checkpoint_problems_are_named(checkpoint, tmp_path):
    ck = checkpoint(UNTIED)
    ck.hf.save_pretrained(tmp_path / "ok", max_shard_size="200KB")
    index = json.loads((tmp_path / "ok" / "model.safetensors.index.json").read_text())
    listed = list(index["weight_map"].values())
    shard = next(s for s in sorted(set(listed))[1:] if listed.count(s) >= 2)  # not the first, two tensors or more
    missing = copy_checkpoint(tmp_path / "ok", tmp_path / "missing")
    (missing / shard).unlink()
    with pytest.raises(FileNotFoundError, match=rf"weights file not found: .*{shard}"):
        GPT2.from_pretrained(missing)
    moved = copy_checkpoint(tmp_path / "ok", tmp_path / "moved")
    name = next(k for k, v in index["weight_map"].items() if v == shard)
    other = sorted(set(index["weight_map"].values()))[0]
    (moved / "model.safetensors.index.json").write_text(json.dumps(
        {**index, "weight_map": {**index["weight_map"], name: other}}))
    with pytest.raises(ValueError, match=rf"tensor '{name}' is not listed for this shard"):
        GPT2.from_pretrained(moved)
    dropped = copy_checkpoint(tmp_path / "ok", tmp_path / "dropped")
    (dropped / "model.safetensors.index.json").write_text(json.dumps(
        {**index, "weight_map": {k: v for k, v in index["weight_map"].items() if v != shard}}))
    with pytest.raises(ValueError, match=r"missing tensor '.*' in the \d+ shards"):
        GPT2.from_pretrained(dropped)


def test_a_file_of_a_checkpoint_names_its_directory(tiny, llama, tmp_path):
    ids = random_ids(TINY.vocab_size, (1, 7), seed=14)
    expected = tiny.model.forward(ids)
    for file in ("config.json", "model.safetensors"):
        np.testing.assert_array_equal(GPT2.from_pretrained(tiny.path / file).forward(ids), expected)
        assert isinstance(kvcache.load(tiny.path / file), GPT2)
    other = tmp_path / "notes.txt"
    other.write_text("not a checkpoint")
    with pytest.raises(ValueError, match=r"is a file, but not one of a checkpoint"):
        GPT2.from_pretrained(other)
    lm = llama(MQA)
    ids = random_ids(MQA.vocab_size, (1, 7), seed=15)
    for file in ("config.json", "model.safetensors"):
        np.testing.assert_array_equal(Llama.from_pretrained(lm.path / file).forward(ids), lm.model.forward(ids))
        assert isinstance(kvcache.load(lm.path / file), Llama)


def test_sharded_llama_checkpoint_loads_bit_for_bit(llama, tmp_path):
    lm = llama(MQA)
    lm.hf.save_pretrained(tmp_path, max_shard_size="20KB")
    assert len(list(tmp_path.glob("model-*.safetensors"))) >= 2
    ids = random_ids(MQA.vocab_size, (2, 9), seed=16)
    np.testing.assert_array_equal(Llama.from_pretrained(tmp_path).forward(ids), lm.model.forward(ids))


def _pytorch_only(src, dst, model):
    """A directory as older transformers wrote it: config.json and pytorch_model.bin."""
    dst.mkdir()
    shutil.copyfile(src / "config.json", dst / "config.json")
    torch.save(model.state_dict(), dst / "pytorch_model.bin")
    return dst


@pytest.mark.parametrize("family", ["gpt2", "llama"])
def test_pytorch_only_weights_are_refused_with_the_conversion(tiny, llama, tmp_path, family):
    ck = tiny if family == "gpt2" else llama(GQA)
    cls, hf_cls = (GPT2, "GPT2LMHeadModel") if family == "gpt2" else (Llama, "LlamaForCausalLM")
    directory = _pytorch_only(ck.path, tmp_path / "bin", ck.hf)
    command = f"{hf_cls}.from_pretrained(dir).save_pretrained(dir, safe_serialization=True)"
    with pytest.raises(ValueError, match=r"holds PyTorch weights \(pytorch_model\.bin\) but no safetensors file.*" +
                       re.escape(command)):
        cls.from_pretrained(directory)
    with pytest.raises(ValueError, match=r"pytorch_model\.bin"):
        kvcache.load(directory)
    # the advice works: after it, the directory loads as the original
    getattr(transformers, hf_cls).from_pretrained(directory).save_pretrained(directory, safe_serialization=True)
    ids = random_ids(ck.model.config.n_vocab, (1, 6), seed=17)
    np.testing.assert_array_equal(cls.from_pretrained(directory).forward(ids), ck.model.forward(ids))


def test_gpt2_checkpoint_with_only_a_config_names_the_weights(tiny, tmp_path):
    (tmp_path / "config.json").write_text((tiny.path / "config.json").read_text())
    with pytest.raises(FileNotFoundError, match=r"weights file not found: .*model\.safetensors"):
        GPT2.from_pretrained(tmp_path)
