"""Generation that reuses computed keys and values: continuing a cache (cache= and transformers' past_key_values=),
fan-out (num_return_sequences: one prefill copied to n rows) and the prefix cache. Each is checked against the
generation that recomputes everything: the same tokens, greedy and seeded sampling."""

from __future__ import annotations

import numpy as np
import pytest

from conftest import MEDIUM, ODD
from llama_checkpoints import GQA, LlamaFactory

SAMPLING = dict(do_sample=True, temperature=1.3, top_k=20, top_p=0.95)


@pytest.fixture(scope="module")
def llama(tmp_path_factory) -> LlamaFactory:
    return LlamaFactory(tmp_path_factory)


@pytest.fixture(params=["gpt2-odd", "gpt2-medium", "llama-gqa"])
def model(request, checkpoint, llama):
    return {"gpt2-odd": lambda: checkpoint(ODD), "gpt2-medium": lambda: checkpoint(MEDIUM),
            "llama-gqa": lambda: llama(GQA)}[request.param]().model


def _ids(model, n, seed):
    return np.random.default_rng(seed).integers(0, model.config.n_vocab, size=n).tolist()


# ---- continuing a cache ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("options", [{}, dict(SAMPLING, seed=7)], ids=["greedy", "sampled"])
def test_cache_continues_exactly_where_it_stands(model, options):
    first, second = _ids(model, 11, 0), _ids(model, 20, 1)
    cache = model.new_cache(1, 90)
    a = model.generate_ids(first, 9, cache=cache)
    assert a[:11] == first and len(a) == 20
    assert cache.seq_lens == [19]  # every returned token but the last
    b = model.generate_ids([a[-1]] + second, 15, cache=cache, **options)
    history = a + second
    uncached = model.generate_ids(history, 15, use_cache=False, **options)
    assert b[1:] == uncached[len(a):]


@pytest.mark.parametrize("prefill_lengths", [(3, 30), (17, 2), (20, 20)])
def test_rows_of_different_lengths_continue_together(model, prefill_lengths):
    rows = [_ids(model, n, i) for i, n in enumerate(prefill_lengths)]
    cache = model.new_cache(2, 80)
    firsts = model.generate_ids(rows, 6, cache=cache)
    more = [_ids(model, 4, 10), _ids(model, 4, 11)]
    seconds = model.generate_ids([[f[-1]] + m for f, m in zip(firsts, more)], 8, cache=cache)
    for f, m, s in zip(firsts, more, seconds):
        assert s[1:] == model.generate_ids(f + m, 8, use_cache=False)[len(f):]


def test_past_key_values_takes_whole_sequences_as_transformers(model):
    history = _ids(model, 25, 3)
    cache = model.new_cache(1, 80)
    model.forward([history[:14]], cache)
    out = model.generate_ids(history, 10, past_key_values=cache)
    assert out == model.generate_ids(history, 10, use_cache=False)
    # a cache holding every token: its last one is fed again
    assert cache.get_seq_length() == 34
    again = model.generate_ids(out, 5, past_key_values=cache)
    assert again == model.generate_ids(out, 5, use_cache=False)


def test_continuing_a_cache_is_checked_before_anything_runs(tiny):
    model = tiny.model
    cache = model.new_cache(1, 20)
    model.forward([[1, 2, 3, 4, 5]], cache)
    with pytest.raises(ValueError, match=r"cache row 0 holds 5 positions; its 3 new tokens plus max_new_tokens=13 "
                                         r"would make 21, beyond the cache's max_seq_len=20"):
        model.generate_ids([6, 7, 8], 13, cache=cache)
    with pytest.raises(ValueError, match="the cache has batch_size 1, but 2 prompts x num_return_sequences=1"):
        model.generate_ids([[1], [2]], 3, cache=cache)
    with pytest.raises(ValueError, match="cannot continue a cache"):
        model.generate_ids([6], 3, cache=cache, use_cache=False)
    with pytest.raises(ValueError, match="cache_dtype='float16' differs from the given cache's dtype 'float32'"):
        model.generate_ids([6], 3, cache=cache, cache_dtype="float16")
    with pytest.raises(ValueError, match="holds 5 positions, more than the 2 tokens of prompt 0"):
        model.generate_ids([1, 2], 3, past_key_values=cache)
    with pytest.raises(ValueError, match="not both"):
        model.generate_ids([1], 3, cache=cache, past_key_values=cache)
    with pytest.raises(TypeError, match="cache must be a KVCache, got dict"):
        model.generate_ids([1], 3, cache={})
    other = model.new_cache(1, 20)
    with pytest.raises(ValueError, match="created by another model"):
        tiny_other = type(model).from_config(model.config, seed=1)
        tiny_other.generate_ids([1], 3, cache=other)
    assert cache.seq_lens == [5]


def test_16_bit_cache_continues(tiny):
    model = tiny.model
    for dtype in ("float16", "bfloat16"):
        cache = model.new_cache(1, 64, dtype)
        a = model.generate_ids([1, 2, 3], 10, cache=cache)
        b = model.generate_ids([a[-1], 4, 5], 10, cache=cache)
        ref = model.generate_ids(a + [4, 5], 10, cache_dtype=dtype)
        assert b[1:] == ref[len(a):]


# ---- fan-out ----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("n", [1, 2, 5])
def test_fan_out_equals_a_batch_of_copies(model, n):
    prompts = [_ids(model, 13, 4), _ids(model, 5, 5)]
    fanned = model.generate_ids(prompts, 12, num_return_sequences=n, seed=11, **SAMPLING)
    copies = model.generate_ids([p for p in prompts for _ in range(n)], 12, seed=11, **SAMPLING)
    assert fanned == copies
    assert len(fanned) == 2 * n and all(f[:len(prompts[i // n])] == prompts[i // n] for i, f in enumerate(fanned))
    if n > 1:
        assert len({tuple(f) for f in fanned[:n]}) > 1  # the rows sample on their own


def test_fan_out_prefills_each_prompt_once(tiny):
    from kvcache import _core

    model = tiny.model
    prompts = [[1, 2, 3, 4, 5, 6, 7, 8], [9, 10, 11]]
    generator = _core.Generator(model._core, prompts, max_new_tokens=6, num_return_sequences=4, do_sample=True,
                                seed=3)
    generator.run()
    assert generator.prefilled_tokens == 8 + 3  # not 4 x (8 + 3)
    assert [len(s) for s in generator.sequences] == [14] * 4 + [9] * 4
    greedy = model.generate_ids(prompts[0], 6, num_return_sequences=3)
    assert greedy[0] == greedy[1] == greedy[2] == model.generate_ids(prompts[0], 6)


def test_fan_out_text(text_ckpt):
    out = text_ckpt.model.generate("Hello", 5, num_return_sequences=3, do_sample=True, seed=0)
    assert isinstance(out, list) and len(out) == 3 and all(o.startswith("Hello") for o in out)
    with pytest.raises(ValueError, match="num_return_sequences must be >= 1, got 0"):
        text_ckpt.model.generate("Hello", 5, num_return_sequences=0)


# ---- prefix cache -------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("options", [{}, dict(SAMPLING, seed=5)], ids=["greedy", "sampled"])
def test_prefix_cache_gives_identical_results(model, options):
    system = _ids(model, 70, 6)
    questions = [_ids(model, 3 + i, 20 + i) for i in range(5)]
    model.disable_prefix_cache()
    plain = [model.generate_ids(system + q, 8, **options) for q in questions]
    prefix = model.enable_prefix_cache(block_size=16)
    try:
        cached = [model.generate_ids(system + q, 8, **options) for q in questions]
        batched = model.generate_ids([system + q for q in questions], 8, **options)
    finally:
        model.disable_prefix_cache()
    assert cached == plain
    assert batched == model.generate_ids([system + q for q in questions], 8, **options)
    stats = prefix.stats
    assert stats["hits"] == 4 + 5 and stats["tokens_reused"] == 9 * 64  # 4 full blocks of the 70-token prompt
    assert stats["blocks"] == 4 and stats["bytes"] == 4 * prefix._blocks[next(iter(prefix._blocks))].positions.nbytes


def test_prefix_cache_skips_the_reused_tokens(tiny, monkeypatch):
    from kvcache import _core

    model = tiny.model
    model.enable_prefix_cache(block_size=8)
    fed = []
    real = _core.Generator

    def spy(core, prompts, **kw):
        fed.append([len(p) for p in prompts])
        return real(core, prompts, **kw)

    monkeypatch.setattr("kvcache.generation._core.Generator", spy)
    try:
        model.generate_ids(list(range(1, 41)), 3)
        model.generate_ids(list(range(1, 41)) + [50, 51], 3)
        model.generate_ids(list(range(1, 33)), 3)  # 32 tokens: 3 blocks reused, the last token computed
    finally:
        model.disable_prefix_cache()
    assert fed == [[40], [42 - 40], [32 - 24]]


def test_prefix_cache_evicts_least_recently_used_and_keeps_dtypes_apart(tiny):
    model = tiny.model
    block_bytes = model.config.n_layer * 2 * model.config.n_head * 8 * (model.config.n_embd // model.config.n_head) * 4
    prefix = model.enable_prefix_cache(max_bytes=3 * block_bytes, block_size=8)
    try:
        a, b = list(range(1, 26)), list(range(30, 55))  # 3 blocks each
        model.generate_ids(a, 2)
        assert prefix.stats["blocks"] == 3
        model.generate_ids(b, 2)
        assert prefix.stats["blocks"] == 3 and prefix.stats["evictions"] == 3
        assert prefix.nbytes <= prefix.max_bytes
        before = prefix.stats["tokens_reused"]
        model.generate_ids(b, 2)
        assert prefix.stats["tokens_reused"] == before + 24
        model.generate_ids(b, 2, cache_dtype="float16")  # another dtype: no float32 block is handed out
        assert prefix.stats["tokens_reused"] == before + 24
        assert model.generate_ids(b, 2, cache_dtype="float16") == model.generate_ids(b, 2, cache_dtype="float16")
    finally:
        model.disable_prefix_cache()


def test_prefix_cache_arguments(tiny):
    with pytest.raises(ValueError, match="block_size must be >= 1, got 0"):
        tiny.model.enable_prefix_cache(block_size=0)
    with pytest.raises(TypeError, match="max_bytes must be an int"):
        tiny.model.enable_prefix_cache(max_bytes="1G")
    assert tiny.model.prefix_cache is None
