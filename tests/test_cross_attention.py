"""GPT-2 with cross-attention (add_cross_attention=True, the decoders of VisionEncoderDecoder) against transformers'
GPT2LMHeadModel: full-sequence logits, prefill + cached decode over the cross cache, greedy tokens, 16/8-bit
weights, saving, and the errors of every way the encoder states or the checkpoint can be wrong."""

from __future__ import annotations

import copy
import json
import math
import pickle
import re
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Dict

import numpy as np
import pytest
import torch
import transformers

from kvcache import GPT2, GPT2Config
from conftest import LOGITS_ATOL, max_abs_diff, perturb_, random_ids


@dataclass(frozen=True)
class CrossSpec:
    """A random GPT-2 checkpoint with cross-attention, saved by transformers' save_pretrained."""

    name: str
    n_layer: int
    n_head: int
    n_embd: int
    n_positions: int
    vocab_size: int
    seed: int
    init_range: float = 0.3  # as conftest's: greedy text that does not collapse, margins far above float32 noise

    def __str__(self) -> str:
        return self.name


TINY = CrossSpec("cross-tiny", n_layer=2, n_head=2, n_embd=32, n_positions=64, vocab_size=101, seed=20)
ODD = CrossSpec("cross-odd", n_layer=3, n_head=3, n_embd=48, n_positions=96, vocab_size=211, seed=21)  # HS 16
MEDIUM = CrossSpec("cross-medium", n_layer=4, n_head=4, n_embd=128, n_positions=128, vocab_size=500, seed=22,
                   init_range=0.2)  # HS 32
SCALAR = CrossSpec("cross-hs10", n_layer=1, n_head=4, n_embd=40, n_positions=48, vocab_size=64, seed=23)  # HS 10:
# the attention kernels' scalar path (head sizes not a multiple of 8)
SPECS = [TINY, ODD, MEDIUM, SCALAR]


@dataclass
class CrossCheckpoint:
    spec: CrossSpec
    path: Path
    hf: transformers.GPT2LMHeadModel
    model: GPT2


def make_cross_checkpoint(directory: Path, spec: CrossSpec) -> transformers.GPT2LMHeadModel:
    torch.manual_seed(spec.seed)
    config = transformers.GPT2Config(vocab_size=spec.vocab_size, n_positions=spec.n_positions, n_embd=spec.n_embd,
                                     n_head=spec.n_head, n_layer=spec.n_layer, add_cross_attention=True,
                                     initializer_range=spec.init_range)
    hf = transformers.GPT2LMHeadModel(config).eval()
    perturb_(hf, spec.seed)  # ln_cross_attn and the cross biases get their own random values too
    hf.save_pretrained(directory)
    return hf


@pytest.fixture(scope="module")
def cross(tmp_path_factory):
    built: Dict[CrossSpec, CrossCheckpoint] = {}

    def get(spec: CrossSpec) -> CrossCheckpoint:
        if spec not in built:
            path = tmp_path_factory.mktemp(spec.name)
            hf = make_cross_checkpoint(path, spec)
            built[spec] = CrossCheckpoint(spec, path, hf, GPT2.from_pretrained(path))
        return built[spec]

    return get


def encoder_states(spec, batch: int, S: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed + 1000).standard_normal((batch, S, spec.n_embd)).astype(np.float32)


def hf_cross_logits(hf, ids, states) -> np.ndarray:
    with torch.no_grad():
        return hf(torch.as_tensor(ids), encoder_hidden_states=torch.as_tensor(states)).logits.numpy()


def report(test: str, spec, diff: float) -> None:
    print(f"\n[cross] {test} {spec}: max |ours - transformers| = {diff:.3g}")


# ---- 1. full-sequence logits ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("spec", SPECS, ids=str)
@pytest.mark.parametrize("batch, length, S", [(1, 1, 1), (1, 7, 5), (3, 12, 40), (3, 20, 17), (1, 20, 1)],
                         ids=["1x1-S1", "1x7-S5", "3x12-S40", "3x20-S17", "1x20-S1"])
def test_full_logits_match_transformers(cross, spec, batch, length, S):
    ck = cross(spec)
    ids = random_ids(spec.vocab_size, (batch, length), seed=batch * 100 + length)
    states = encoder_states(spec, batch, S, seed=S)
    ours = ck.model.forward(ids, encoder_hidden_states=states)
    assert ours.shape == (batch, length, spec.vocab_size) and ours.dtype == np.float32
    diff = max_abs_diff(ours, hf_cross_logits(ck.hf, ids, states))
    report("full", spec, diff)
    assert diff < LOGITS_ATOL


def test_cross_attention_changes_the_logits(cross):
    """Different encoder states give different logits: the cross blocks are really computed."""
    ck = cross(TINY)
    ids = random_ids(TINY.vocab_size, (1, 6), seed=1)
    a = ck.model.forward(ids, encoder_hidden_states=encoder_states(TINY, 1, 4, seed=1))
    b = ck.model.forward(ids, encoder_hidden_states=encoder_states(TINY, 1, 4, seed=2))
    assert max_abs_diff(a, b) > 1e-2


# ---- 2. prefill + decode through the cache ---------------------------------------------------------------------------

def hf_cached(hf, ids, states, prefill: int) -> np.ndarray:
    """transformers' logits of a prefill, then one token at a time over its EncoderDecoderCache."""
    enc = torch.as_tensor(states)
    with torch.no_grad():
        out = hf(torch.as_tensor(ids[:, :prefill]), encoder_hidden_states=enc, use_cache=True)
        pieces, past = [out.logits.numpy()], out.past_key_values
        for t in range(prefill, ids.shape[1]):
            out = hf(torch.as_tensor(ids[:, t:t + 1]), encoder_hidden_states=enc, cache=past, use_cache=True)
            pieces.append(out.logits.numpy())
            past = out.past_key_values
    return np.concatenate(pieces, axis=1)


@pytest.mark.parametrize("spec, batch, prefill, total, S", [
    (TINY, 1, 1, 30, 3),       # token by token from the first position
    (ODD, 3, 9, 40, 40),
    (MEDIUM, 3, 20, 45, 23),   # a prefill of 20 tokens: the block attention path for the self-attention
    (SCALAR, 1, 4, 48, 1),     # to n_ctx, over one encoder position
], ids=lambda v: str(v))
def test_cached_decode_matches_transformers(cross, spec, batch, prefill, total, S):
    ck = cross(spec)
    ids = random_ids(spec.vocab_size, (batch, total), seed=prefill)
    states = encoder_states(spec, batch, S, seed=prefill)
    cache = ck.model.new_cache(batch_size=batch)
    # the states once, with the prefill; the decode steps reuse the cache's cross keys and values
    pieces = [ck.model.forward(ids[:, :prefill], cache=cache, encoder_hidden_states=states)]
    pieces += [ck.model.forward(ids[:, t:t + 1], cache=cache) for t in range(prefill, total)]
    ours = np.concatenate(pieces, axis=1)
    assert cache.seq_lens == [total] * batch and cache.cross_len == S
    diff = max_abs_diff(ours, hf_cached(ck.hf, ids, states, prefill))
    report("cached", spec, diff)
    assert diff < LOGITS_ATOL
    assert max_abs_diff(ours, hf_cross_logits(ck.hf, ids, states)) < LOGITS_ATOL


def test_chunks_after_a_prefill_and_states_passed_every_step(cross):
    """Several tokens per call, and the same states given again at every call (recomputed, same values)."""
    ck = cross(ODD)
    ids = random_ids(ODD.vocab_size, (2, 30), seed=4)
    states = encoder_states(ODD, 2, 11, seed=4)
    cache = ck.model.new_cache(batch_size=2, max_seq_len=30)
    pieces = [ck.model.forward(ids[:, t:t + 6], cache=cache, encoder_hidden_states=states) for t in range(0, 30, 6)]
    assert max_abs_diff(np.concatenate(pieces, axis=1), hf_cross_logits(ck.hf, ids, states)) < LOGITS_ATOL


def test_reset_keeps_the_cross_cache_and_new_states_replace_it(cross):
    ck = cross(TINY)
    ids = random_ids(TINY.vocab_size, (1, 10), seed=5)
    first, second = encoder_states(TINY, 1, 7, seed=5), encoder_states(TINY, 1, 2, seed=6)
    cache = ck.model.new_cache(batch_size=1, max_seq_len=10)
    a = ck.model.forward(ids, cache=cache, encoder_hidden_states=first)
    cache.reset()  # the positions go; the encoder's keys and values stay (they depend on no position)
    assert cache.seq_lens == [0] and cache.cross_len == 7
    assert max_abs_diff(ck.model.forward(ids, cache=cache), a) == 0.0
    cache.reset()
    b = ck.model.forward(ids, cache=cache, encoder_hidden_states=second)
    assert cache.cross_len == 2
    assert max_abs_diff(b, hf_cross_logits(ck.hf, ids, second)) < LOGITS_ATOL


# ---- 3. greedy tokens == transformers' generate ----------------------------------------------------------------------

def greedy_through_cache(model, prompt: np.ndarray, states: np.ndarray, new: int) -> np.ndarray:
    cache = model.new_cache(batch_size=prompt.shape[0], max_seq_len=prompt.shape[1] + new)
    logits = model.forward(prompt, cache=cache, encoder_hidden_states=states)
    out = [prompt]
    for _ in range(new):
        nxt = logits[:, -1].argmax(axis=-1)[:, None]
        out.append(nxt)
        logits = model.forward(nxt, cache=cache)
    return np.concatenate(out, axis=1)


@pytest.mark.parametrize("spec, batch, prompt_len, S, new", [
    (TINY, 1, 5, 6, 40),
    (ODD, 3, 4, 40, 30),
    (MEDIUM, 1, 20, 12, 24),
    (SCALAR, 3, 1, 1, 24),
], ids=lambda v: str(v))
def test_greedy_matches_transformers_generate(cross, spec, batch, prompt_len, S, new):
    ck = cross(spec)
    prompt = random_ids(spec.vocab_size, (batch, prompt_len), seed=prompt_len)
    states = encoder_states(spec, batch, S, seed=S)
    ours = greedy_through_cache(ck.model, prompt, states, new)
    with torch.no_grad():
        theirs = ck.hf.generate(torch.as_tensor(prompt), attention_mask=torch.ones(prompt.shape, dtype=torch.long),
                                encoder_hidden_states=torch.as_tensor(states), do_sample=False, max_new_tokens=new,
                                min_new_tokens=new, eos_token_id=None, pad_token_id=0).numpy()
    np.testing.assert_array_equal(ours, theirs)
    assert len(set(ours[0, prompt_len:].tolist())) > 1  # not one token repeated: the comparison means something
    generated = ck.model.generate_ids(prompt.tolist(), new, encoder_hidden_states=states, eos_token_id=None)
    assert generated == theirs.tolist()
    uncached = ck.model.generate_ids(prompt.tolist(), new, encoder_hidden_states=torch.as_tensor(states),
                                     eos_token_id=None, use_cache=False)
    assert uncached == theirs.tolist()


def test_generation_fans_out_encoder_states_and_bypasses_the_prefix_cache(cross):
    """num_return_sequences repeats each prompt's encoder states to its rows; the prefix cache, whose blocks are
    keyed by tokens alone, is not used: with other encoder states the same tokens have other keys and values."""
    ck = cross(TINY)
    prompt = random_ids(TINY.vocab_size, (2, 40), seed=3).tolist()
    states = [encoder_states(TINY, 2, 5, seed=s) for s in (1, 2)]
    plain = [ck.model.generate_ids(prompt, 6, encoder_hidden_states=st, eos_token_id=None) for st in states]
    fanned = ck.model.generate_ids(prompt, 6, encoder_hidden_states=states[0], eos_token_id=None,
                                   num_return_sequences=2)
    assert fanned == [plain[0][0], plain[0][0], plain[0][1], plain[0][1]]
    prefix = ck.model.enable_prefix_cache(block_size=8)
    try:
        assert [ck.model.generate_ids(prompt, 6, encoder_hidden_states=st, eos_token_id=None)
                for st in states] == plain
        assert prefix.stats["lookups"] == 0
    finally:
        ck.model.disable_prefix_cache()
    with pytest.raises(ValueError, match="encoder_hidden_states has batch 2, but 1 prompts are given"):
        ck.model.generate_ids(prompt[0], 3, encoder_hidden_states=states[0])
    with pytest.raises(ValueError, match="beam search runs on a cache of its own.*encoder_hidden_states"):
        ck.model.generate_ids(prompt[0], 3, encoder_hidden_states=states[0][:1], num_beams=2)


# ---- 4. 16/8-bit weights ---------------------------------------------------------------------------------------------

# Every Conv1D the engine stores in weights_dtype, cross-attention's included.
CONV1D = ("attn.c_attn", "attn.c_proj", "mlp.c_fc", "mlp.c_proj", "crossattention.c_attn", "crossattention.q_attn",
          "crossattention.c_proj")


def bf16(w: torch.Tensor) -> torch.Tensor:
    return w.to(torch.bfloat16).to(torch.float32)


def f16(w: torch.Tensor) -> torch.Tensor:
    return w.to(torch.float16).to(torch.float32)


ROUNDING = {"bfloat16": bf16, "float16": f16}


def int8(w: torch.Tensor, dim: int) -> torch.Tensor:
    """Symmetric int8, one scale per output channel, as the engine (and test_reduced_precision.py) rounds."""
    scale = w.abs().amax(dim=dim, keepdim=True) / 127.0
    scale[scale == 0] = 1.0
    return torch.round(w / scale).clamp(-127, 127) * scale


def rounded_reference(hf, ids, states, dtype: str) -> np.ndarray:
    """transformers' float32 forward on the matrices rounded as the engine stores them (embeddings stay float32)."""
    hf = copy.deepcopy(hf)
    with torch.no_grad():
        for block in hf.transformer.h:
            for name in CONV1D:
                module = block.get_submodule(name)
                module.weight.copy_(ROUNDING[dtype](module.weight) if dtype in ROUNDING else int8(module.weight, dim=0))
        hidden = hf.transformer(torch.as_tensor(ids), encoder_hidden_states=torch.as_tensor(states)).last_hidden_state
        head = hf.lm_head.weight
        head = ROUNDING[dtype](head) if dtype in ROUNDING else int8(head, dim=1)
        return (hidden @ head.T).numpy()


@pytest.mark.parametrize("dtype", ["bfloat16", "float16", "int8"])
@pytest.mark.parametrize("spec", [ODD, MEDIUM], ids=str)
def test_reduced_precision_weights(cross, spec, dtype):
    """Exact float32 math on the stored weights (1e-4 of the rounded reference, full and cached); against the
    float32 model, the storage format's own error: within 5% (bfloat16 and float16) or 15% (int8) of the largest
    |logit| on these random weights (measured: 3-4% and 9-11%)."""
    ck = cross(spec)
    model = GPT2.from_pretrained(ck.path, weights_dtype=dtype)
    ids = random_ids(spec.vocab_size, (3, 24), seed=7)
    states = encoder_states(spec, 3, 13, seed=7)
    reference = rounded_reference(ck.hf, ids, states, dtype)
    full = model.forward(ids, encoder_hidden_states=states)
    diff = max_abs_diff(full, reference)
    report(f"{dtype}-rounded", spec, diff)
    assert diff < LOGITS_ATOL
    cache = model.new_cache(batch_size=3)
    steps = [model.forward(ids[:, :17], cache=cache, encoder_hidden_states=states)]
    steps += [model.forward(ids[:, t:t + 1], cache=cache) for t in range(17, 24)]
    assert max_abs_diff(np.concatenate(steps, axis=1), reference) < LOGITS_ATOL
    exact = hf_cross_logits(ck.hf, ids, states)
    loose = max_abs_diff(full, exact)
    report(f"{dtype}-vs-float32 (largest |logit| {np.abs(exact).max():.3g})", spec, loose)
    assert loose < (0.15 if dtype == "int8" else 0.05) * np.abs(exact).max()


# ---- 5. weights: saving, random init, state_dict ---------------------------------------------------------------------

def test_save_pretrained_round_trips_through_transformers(cross, tmp_path):
    ck = cross(ODD)
    ck.model.save_pretrained(tmp_path)
    assert json.loads((tmp_path / "config.json").read_text())["add_cross_attention"] is True
    back = transformers.GPT2LMHeadModel.from_pretrained(tmp_path).eval()
    assert back.config.add_cross_attention
    theirs, ours = back.state_dict(), ck.hf.state_dict()
    assert theirs.keys() == ours.keys()
    for name in ours:
        torch.testing.assert_close(theirs[name], ours[name], rtol=0, atol=0, msg=name)
    ids, states = random_ids(ODD.vocab_size, (2, 9), seed=8), encoder_states(ODD, 2, 5, seed=8)
    assert max_abs_diff(hf_cross_logits(back, ids, states), ck.model.forward(ids, encoder_hidden_states=states)) \
        < LOGITS_ATOL
    again = GPT2.from_pretrained(tmp_path)  # and we read our own save back
    assert again.config == ck.model.config and again.config.add_cross_attention


def test_state_dict_has_every_cross_tensor(cross):
    ck = cross(TINY)
    ours = ck.model.state_dict()
    theirs = {k.removeprefix("transformer."): v for k, v in ck.hf.state_dict().items() if k != "lm_head.weight"}
    assert ours.keys() == theirs.keys()
    assert ours["h.1.crossattention.c_attn.weight"].shape == (TINY.n_embd, 2 * TINY.n_embd)
    for name in theirs:
        np.testing.assert_array_equal(ours[name], theirs[name].numpy(), err_msg=name)


def test_random_init_is_gpt2s_and_transformers_reads_it(tmp_path):
    """normal(0, 0.02) for q_attn and c_attn, 0.02 / sqrt(2 n_layer) for crossattention.c_proj (transformers scales
    every GPT2Attention's c_proj, the cross one included), LayerNorm 1 / 0, biases 0."""
    L, C = 8, 256
    model = GPT2.from_config(GPT2Config(n_vocab=100, n_ctx=32, n_embd=C, n_head=4, n_layer=L,
                                        add_cross_attention=True), seed=3)
    state = model.state_dict()
    for l in (0, L - 1):
        p = f"h.{l}."
        assert state[p + "crossattention.q_attn.weight"].std() == pytest.approx(0.02, rel=0.02)
        assert state[p + "crossattention.c_attn.weight"].std() == pytest.approx(0.02, rel=0.02)
        assert state[p + "crossattention.c_proj.weight"].std() == pytest.approx(0.02 / math.sqrt(2 * L), rel=0.02)
        for bias in ("q_attn", "c_attn", "c_proj"):
            assert not state[p + f"crossattention.{bias}.bias"].any()
        assert (state[p + "ln_cross_attn.weight"] == 1).all() and not state[p + "ln_cross_attn.bias"].any()
    model.save_pretrained(tmp_path)
    hf = transformers.GPT2LMHeadModel.from_pretrained(tmp_path).eval()
    ids, states = random_ids(100, (1, 8), seed=9), np.random.default_rng(9).standard_normal((1, 3, C), np.float32)
    assert max_abs_diff(hf_cross_logits(hf, ids, states), model.forward(ids, encoder_hidden_states=states)) \
        < LOGITS_ATOL


def test_weights_nbytes_counts_the_cross_block_a_step_reads():
    """A decode step reads q_attn and c_proj (C x C each), their biases and ln_cross_attn; crossattention.c_attn
    is read once per call, by the encoder states' projection."""
    L, C = 3, 64
    shape = dict(n_vocab=100, n_ctx=32, n_embd=C, n_head=4, n_layer=L)
    plain = GPT2.from_config(GPT2Config(**shape)).weights_nbytes
    with_cross = GPT2.from_config(GPT2Config(**shape, add_cross_attention=True)).weights_nbytes
    assert with_cross - plain == L * (2 * C * C + 4 * C) * 4


def test_config_field():
    a = GPT2Config(n_embd=64, n_head=4, add_cross_attention=True)
    assert a.add_cross_attention and not GPT2Config(n_embd=64, n_head=4).add_cross_attention
    assert a != GPT2Config(n_embd=64, n_head=4) and hash(a) == hash(GPT2Config(n_embd=64, n_head=4,
                                                                               add_cross_attention=True))
    assert pickle.loads(pickle.dumps(a)) == a
    assert repr(a).endswith("add_cross_attention=True)") and "cross" not in repr(GPT2Config())
    with pytest.raises(TypeError, match=r"add_cross_attention must be a bool, got int 1"):
        GPT2Config(add_cross_attention=1)


# ---- 6. the cross cache ----------------------------------------------------------------------------------------------

@pytest.mark.parametrize("spec, batch, S", [(TINY, 1, 1), (ODD, 3, 40), (MEDIUM, 2, 17)], ids=lambda v: str(v))
def test_cross_nbytes_is_the_formula(cross, spec, batch, S):
    ck = cross(spec)
    cache = ck.model.new_cache(batch_size=batch, max_seq_len=8)
    assert cache.cross_nbytes == 0 and cache.cross_len == 0
    ck.model._set_encoder_states(cache, encoder_states(spec, batch, S))
    head_dim = spec.n_embd // spec.n_head
    assert cache.cross_nbytes == 2 * spec.n_layer * batch * spec.n_head * S * head_dim * 4
    assert cache.cross_len == S
    assert cache.nbytes == 2 * spec.n_layer * batch * spec.n_head * 8 * head_dim * 4  # the self cache unchanged


def test_encoder_states_of_any_float_array_or_tensor(cross):
    """float64 and float16 arrays, non-contiguous ones and torch tensors (bfloat16, needing grad) all work, as
    float32."""
    ck = cross(TINY)
    ids = random_ids(TINY.vocab_size, (2, 5), seed=10)
    states = encoder_states(TINY, 2, 6, seed=10)
    expected = ck.model.forward(ids, encoder_hidden_states=states)
    wide = np.repeat(states, 2, axis=1)[:, ::2]  # a strided view of the same values
    tensor = torch.from_numpy(states)
    for variant in (states.astype(np.float64), wide, tensor, tensor.clone().requires_grad_()):
        np.testing.assert_array_equal(ck.model.forward(ids, encoder_hidden_states=variant), expected)
    half = states.astype(np.float16)
    np.testing.assert_array_equal(ck.model.forward(ids, encoder_hidden_states=half),
                                  ck.model.forward(ids, encoder_hidden_states=half.astype(np.float32)))
    as_bf16 = torch.from_numpy(states).to(torch.bfloat16)
    np.testing.assert_array_equal(ck.model.forward(ids, encoder_hidden_states=as_bf16),
                                  ck.model.forward(ids, encoder_hidden_states=as_bf16.float().numpy()))
    np.testing.assert_array_equal(ck.model.forward(ids[0], encoder_hidden_states=states[:1]), expected[:1])  # 1-D
    np.testing.assert_array_equal(ck.model(ids, encoder_hidden_states=states), expected)  # __call__ is forward


# ---- 7. errors -------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("make_states, error, pattern", [
    (lambda C: np.zeros((2, 4, C + 1), np.float32), ValueError, r"width 33, the model's n_embd is 32"),
    (lambda C: np.zeros((3, 4, C), np.float32), ValueError, r"batch 3, the tokens 2"),
    (lambda C: np.zeros((4, C), np.float32), ValueError, r"must be 3-D .*got 2 dimensions"),
    (lambda C: np.zeros((2, 1, 4, C), np.float32), ValueError, r"must be 3-D .*got 4 dimensions"),
    (lambda C: np.zeros((2, 0, C), np.float32), ValueError, r"no encoder position"),
    (lambda C: np.full((2, 4, C), np.nan, np.float32), ValueError,
     r"must be finite: 256 values .* first at \[0, 0, 0\]"),
    (lambda C: np.where(np.arange(2 * 4 * C).reshape(2, 4, C) == 77, np.inf, 0.0), ValueError,
     r"must be finite: 1 values .* first at \[0, 2, 13\]"),
    (lambda C: np.full((2, 4, C), 1e300), ValueError, r"must be finite"),  # beyond float32's range
    (lambda C: np.zeros((2, 4, C), np.int64), TypeError, r"must hold floats, got dtype int64"),
    (lambda C: torch.zeros((2, 4, C), dtype=torch.int32), TypeError, r"must hold floats, got a tensor of torch.int32"),
    (lambda C: [[[0.0] * C] * 4] * 2, TypeError, r"must be a NumPy array or a torch tensor, got list"),
], ids=["width", "batch", "2-D", "4-D", "no-position", "nan", "inf", "overflow", "ints", "int-tensor", "list"])
def test_bad_encoder_states(cross, make_states, error, pattern):
    ck = cross(TINY)
    ids = random_ids(TINY.vocab_size, (2, 3), seed=11)
    cache = ck.model.new_cache(batch_size=2, max_seq_len=8)
    with pytest.raises(error, match=pattern):
        ck.model.forward(ids, encoder_hidden_states=make_states(TINY.n_embd))
    with pytest.raises(error, match=pattern):
        ck.model.forward(ids, cache=cache, encoder_hidden_states=make_states(TINY.n_embd))
    assert cache.seq_lens == [0, 0] and cache.cross_len == 0  # nothing half done


def test_states_of_another_batch_than_the_cache(cross):
    ck = cross(TINY)
    cache = ck.model.new_cache(batch_size=2, max_seq_len=8)
    with pytest.raises(ValueError, match=r"batch 1, the cache's batch_size is 2"):
        ck.model._set_encoder_states(cache, encoder_states(TINY, 1, 3))
    with pytest.raises(TypeError, match=r"cache must be a KVCache, got str"):
        ck.model._set_encoder_states("cache", encoder_states(TINY, 2, 3))


def test_cross_model_without_encoder_states(cross):
    ck = cross(TINY)
    ids = random_ids(TINY.vocab_size, (1, 4), seed=12)
    message = r"has cross-attention \(add_cross_attention=True\): pass encoder_hidden_states"
    with pytest.raises(ValueError, match=message):
        ck.model.forward(ids)
    cache = ck.model.new_cache(batch_size=1, max_seq_len=8)
    with pytest.raises(ValueError, match=message):
        ck.model.forward(ids, cache=cache)
    with pytest.raises(ValueError, match=message):  # the engine's own check, under the Python one
        ck.model._core.forward(ids, cache)
    assert cache.seq_lens == [0]
    with pytest.raises(ValueError, match=message):  # generation without states: refused, not computed without
        ck.model.generate_ids([1, 2, 3], max_new_tokens=2)


def test_plain_model_given_encoder_states(tiny):
    """tiny: conftest's plain GPT-2 (no cross-attention)."""
    ids = random_ids(tiny.spec.vocab_size, (1, 4), seed=13)
    states = np.zeros((1, 3, tiny.spec.n_embd), np.float32)
    message = r"has no cross-attention \(add_cross_attention=False\)"
    with pytest.raises(ValueError, match=message):
        tiny.model.forward(ids, encoder_hidden_states=states)
    cache = tiny.model.new_cache(batch_size=1, max_seq_len=8)
    with pytest.raises(ValueError, match=message):
        tiny.model._set_encoder_states(cache, states)
    with pytest.raises(ValueError, match=message):  # the engine refuses too: no cache of a plain model gets cross K/V
        tiny.model._core.set_encoder_states(cache, states)
    assert cache.cross_len == 0


def test_engine_binding_checks_its_array(cross):
    ck = cross(TINY)
    cache = ck.model.new_cache(batch_size=2, max_seq_len=8)
    states = encoder_states(TINY, 2, 3)
    with pytest.raises(TypeError, match=r"C-contiguous float32 array, got dtype float64"):
        ck.model._core.set_encoder_states(cache, states.astype(np.float64))
    with pytest.raises(TypeError, match=r"C-contiguous float32"):
        ck.model._core.set_encoder_states(cache, np.asfortranarray(states))
    with pytest.raises(ValueError, match=r"width 16, the model's n_embd is 32"):
        ck.model._core.set_encoder_states(cache, np.zeros((2, 3, 16), np.float32))
    with pytest.raises(ValueError, match=r"batch 1 for a cache of batch_size 2"):
        ck.model._core.set_encoder_states(cache, states[:1].copy())
    with pytest.raises(ValueError, match=r"non-finite value \(nan\) at batch row 1, position 2"):
        bad = states.copy()
        bad[1, 2, 5] = np.nan
        ck.model._core.set_encoder_states(cache, bad)
    other = cross(ODD).model.new_cache(batch_size=2, max_seq_len=8)
    with pytest.raises(ValueError, match=r"created by another model"):
        ck.model._core.set_encoder_states(other, states)
    assert cache.cross_len == 0 and other.cross_len == 0


def rewrite_config(directory: Path, **fields) -> None:
    path = directory / "config.json"
    config = json.loads(path.read_text())
    for name, value in fields.items():
        if value is None:
            config.pop(name, None)
        else:
            config[name] = value
    path.write_text(json.dumps(config))


@pytest.mark.parametrize("value", [False, None], ids=["false", "absent"])
def test_file_with_cross_tensors_but_config_without(cross, tmp_path, value):
    directory = Path(shutil.copytree(cross(TINY).path, tmp_path / "ckpt"))
    rewrite_config(directory, add_cross_attention=value)
    with pytest.raises(ValueError, match=r"holds cross-attention tensor 'transformer\.h\.0\.(crossattention|"
                                         r"ln_cross_attn)\..*add_cross_attention false"):
        GPT2.from_pretrained(directory)


def test_config_with_cross_attention_but_file_without(tiny, tmp_path):
    directory = Path(shutil.copytree(tiny.path, tmp_path / "ckpt"))
    rewrite_config(directory, add_cross_attention=True)
    with pytest.raises(ValueError, match=r"missing tensor 'h\.0\.crossattention\.c_attn\.weight'.*"
                                         r"add_cross_attention true"):
        GPT2.from_pretrained(directory)


def edit_weights(directory: Path, edit) -> None:
    from safetensors.numpy import load_file, save_file

    path = directory / "model.safetensors"
    tensors = load_file(str(path))
    edit(tensors)
    save_file(tensors, str(path), metadata={"format": "pt"})


@pytest.mark.parametrize("edit, pattern", [
    (lambda t: t.pop("transformer.h.1.ln_cross_attn.weight"), r"missing tensor 'h\.1\.ln_cross_attn\.weight'"),
    (lambda t: t.pop("transformer.h.0.crossattention.q_attn.bias"), r"missing tensor 'h\.0\.crossattention\.q_attn"),
    (lambda t: t.update({"transformer.h.0.crossattention.q_attn.weight": np.zeros((32, 64), np.float32)}),
     r"'h\.0\.crossattention\.q_attn\.weight' has shape \[32, 64\], expected \[32, 32\]"),
    (lambda t: t.update({"transformer.h.1.crossattention.c_attn.bias": np.zeros(64, np.int32)}),
     r"'h\.1\.crossattention\.c_attn\.bias' has unsupported dtype I32"),
    (lambda t: t.update({"transformer.h.2.crossattention.c_proj.bias": np.zeros(32, np.float32)}),
     r"tensor 'transformer\.h\.2\.crossattention\.c_proj\.bias' of layer 2, but config\.json has n_layer=2"),
], ids=["no-ln", "no-q-bias", "shape", "dtype", "extra-layer"])
def test_bad_cross_tensors(cross, tmp_path, edit, pattern):
    directory = Path(shutil.copytree(cross(TINY).path, tmp_path / "ckpt"))
    edit_weights(directory, edit)
    with pytest.raises(ValueError, match=pattern):
        GPT2.from_pretrained(directory)


def test_old_checkpoints_mask_buffers_are_ignored(cross, tmp_path):
    """crossattention.bias / masked_bias: the causal-mask buffers older transformers saved, which it ignores on
    load; they are no reason to refuse a plain config either."""
    directory = Path(shutil.copytree(cross(TINY).path, tmp_path / "ckpt"))
    buffers = {"transformer.h.0.crossattention.bias": np.ones((1, 1, 4, 4), np.float32),
               "transformer.h.0.crossattention.masked_bias": np.full((), -1e4, np.float32)}
    edit_weights(directory, lambda t: t.update(buffers))
    model = GPT2.from_pretrained(directory)
    ids, states = random_ids(TINY.vocab_size, (1, 5), seed=14), encoder_states(TINY, 1, 2, seed=14)
    assert max_abs_diff(model.forward(ids, encoder_hidden_states=states),
                        cross(TINY).model.forward(ids, encoder_hidden_states=states)) == 0.0


@pytest.mark.parametrize("value", ["yes", 1, None], ids=["str", "int", "null"])
def test_config_add_cross_attention_must_be_a_bool(cross, tmp_path, value):
    directory = Path(shutil.copytree(cross(TINY).path, tmp_path / "ckpt"))
    config = json.loads((directory / "config.json").read_text())
    config["add_cross_attention"] = value
    (directory / "config.json").write_text(json.dumps(config))
    with pytest.raises(ValueError, match=re.escape(f"{directory / 'config.json'}: add_cross_attention must be true or "
                                                   f"false, got {value!r}")):
        GPT2.from_pretrained(directory)


@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
def test_16_bit_self_cache_with_a_float32_cross_cache(cross, dtype):
    """The self-attention positions in 16 bits, the cross keys and values float32 (the only cross type): the logits
    move by the 16-bit cache's own rounding only (test_kv_cache_dtype.py's bounds are 1e-2 and 5e-2 of a reference
    on rounded keys; here, against the plain float32 reference on logits up to ~12, looser bounds: 0.05 and 0.3,
    measured 0.016 and 0.15)."""
    ck = cross(ODD)
    ids = random_ids(ODD.vocab_size, (2, 30), seed=15)
    states = encoder_states(ODD, 2, 9, seed=15)
    cache = ck.model.new_cache(batch_size=2, dtype=dtype)
    steps = [ck.model.forward(ids[:, :10], cache=cache, encoder_hidden_states=states)]
    steps += [ck.model.forward(ids[:, t:t + 1], cache=cache) for t in range(10, 30)]
    assert cache.cross_nbytes == 2 * ODD.n_layer * 2 * ODD.n_embd * 9 * 4  # float32 whatever the cache's dtype
    diff = max_abs_diff(np.concatenate(steps, axis=1), hf_cross_logits(ck.hf, ids, states))
    report(f"{dtype}-cache", ODD, diff)
    assert diff < {"float16": 0.05, "bfloat16": 0.3}[dtype]


def test_thread_count_does_not_change_the_logits(cross):
    import kvcache

    ck = cross(MEDIUM)
    ids = random_ids(MEDIUM.vocab_size, (3, 9), seed=16)
    states = encoder_states(MEDIUM, 3, 21, seed=16)
    before = kvcache.get_num_threads()
    try:
        kvcache.set_num_threads(1)
        one = ck.model.forward(ids, encoder_hidden_states=states)
        kvcache.set_num_threads(2)
        two = ck.model.forward(ids, encoder_hidden_states=states)
    finally:
        kvcache.set_num_threads(before)
    assert max_abs_diff(one, two) == 0.0
