"""Generation behaviour: cache on/off, batching, EOS, edge cases, text in/out and streaming."""

from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

from kvcache import GPT2
from conftest import MEDIUM, TINY, copy_checkpoint, random_ids

SAMPLING = dict(do_sample=True, temperature=0.9, top_k=40, top_p=0.95, seed=1234)
MODES = {"greedy": dict(do_sample=False), "sampled": SAMPLING}


def prompts_of(spec, lengths, seed=0):
    return [random_ids(spec.vocab_size, n, seed=seed + i).tolist() for i, n in enumerate(lengths)]


# ---- cache on / off ----------------------------------------------------------------------------------------------

@pytest.mark.parametrize("mode", MODES, ids=str)
@pytest.mark.parametrize("lengths", [[7], [4, 4], [2, 9, 5]], ids=["single", "equal-batch", "ragged-batch"])
def test_use_cache_false_gives_the_same_tokens(checkpoint, mode, lengths):
    model = checkpoint(MEDIUM).model
    prompts = prompts_of(MEDIUM, lengths)
    cached = model.generate_ids(prompts, max_new_tokens=40, eos_token_id=None, use_cache=True, **MODES[mode])
    uncached = model.generate_ids(prompts, max_new_tokens=40, eos_token_id=None, use_cache=False, **MODES[mode])
    assert cached == uncached
    assert all(len(row) == n + 40 for row, n in zip(cached, lengths))


# ---- batching ----------------------------------------------------------------------------------------------------

# 3, 4 and 10 rows: decode steps on different tiles of the float32 kernel (panel_tiles.h), ragged prompts on top
@pytest.mark.parametrize("lengths", [[6, 6, 6], [1, 12, 5, 30], [4] * 10, [2, 9, 4, 1, 7, 3, 11, 5, 6, 8]],
                         ids=["equal", "ragged", "equal-10", "ragged-10"])
def test_batch_rows_match_prompts_generated_alone(tiny, lengths):
    prompts = prompts_of(TINY, lengths, seed=10)
    batch = tiny.model.generate_ids(prompts, max_new_tokens=50, eos_token_id=None)
    assert batch == [tiny.model.generate_ids(p, max_new_tokens=50, eos_token_id=None) for p in prompts]


def test_sampled_row_does_not_depend_on_the_rest_of_the_batch(tiny):
    """Row r draws from its own stream seeded by (seed, r): changing row 1 leaves row 0 untouched, and row 0 of a
    batch equals the same prompt generated alone."""
    a, b, c = prompts_of(TINY, [5, 8, 3], seed=20)
    kw = dict(max_new_tokens=60, eos_token_id=None, do_sample=True, temperature=1.3, seed=99)
    with_b = tiny.model.generate_ids([a, b], **kw)
    with_c = tiny.model.generate_ids([a, c], **kw)
    alone = tiny.model.generate_ids(a, **kw)
    assert with_b[0] == with_c[0] == alone
    assert with_b[1] != with_c[1]


def test_concurrent_generation_from_python_threads(checkpoint):
    """The engine releases the GIL: generations running in several threads at once on one model give the tokens
    they give one after another."""
    model = checkpoint(MEDIUM).model
    prompts = prompts_of(MEDIUM, [5, 9, 2, 7], seed=40)
    kw = dict(max_new_tokens=30, eos_token_id=None, do_sample=True, temperature=0.8, seed=6)
    expected = [model.generate_ids(p, **kw) for p in prompts]
    with ThreadPoolExecutor(max_workers=4) as pool:
        assert list(pool.map(lambda p: model.generate_ids(p, **kw), prompts)) == expected


def test_repeated_calls_are_bitwise_identical(checkpoint):
    """Nothing carries over from one call to the next: the same forward, cached decode and seeded sampling give the
    same bits again, with fresh caches and with a reused one."""
    model = checkpoint(MEDIUM).model
    tokens = np.array(prompts_of(MEDIUM, [12, 12], seed=3))
    first = model.forward(tokens)
    np.testing.assert_array_equal(model.forward(tokens), first)
    cache = model.new_cache(batch_size=2, max_seq_len=16)
    passes = []
    for _ in range(2):
        cache.reset()
        steps = [model.forward(tokens[:, :8], cache=cache)] + [
            model.forward(tokens[:, t:t + 1], cache=cache) for t in range(8, 12)]
        passes.append(np.concatenate(steps, axis=1))
    np.testing.assert_array_equal(passes[1], passes[0])
    prompts = prompts_of(MEDIUM, [3, 8])
    assert model.generate_ids(prompts, 25, eos_token_id=None, **SAMPLING) == \
        model.generate_ids(prompts, 25, eos_token_id=None, **SAMPLING)


def test_numpy_2d_prompt_is_a_batch(tiny):
    """An array in gives an array out (as transformers' generate), rows as the lists' (tests/test_inputs.py)."""
    ids = random_ids(TINY.vocab_size, (2, 6), seed=4)
    out = tiny.model.generate_ids(ids, max_new_tokens=5, eos_token_id=None)
    assert isinstance(out, np.ndarray) and out.shape == (2, 11) and out.dtype == ids.dtype
    assert out.tolist() == tiny.model.generate_ids(ids.tolist(), max_new_tokens=5, eos_token_id=None)
    np.testing.assert_array_equal(tiny.model.generate_ids(ids[0], max_new_tokens=5, eos_token_id=None), out[0])


# ---- stopping ----------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("use_cache", [True, False])
def test_eos_stops_only_its_row(tiny, use_cache):
    a, b = prompts_of(TINY, [4, 7], seed=30)
    n = 40
    free_a, free_b = tiny.model.generate_ids([a, b], max_new_tokens=n, eos_token_id=None)
    new_a, new_b = free_a[len(a):], free_b[len(b):]
    # a token row a produces that row b never produces: as EOS it must stop a, and leave b alone
    eos = next(t for t in new_a[3:] if t not in new_b)
    stop = new_a.index(eos)
    out_a, out_b = tiny.model.generate_ids([a, b], max_new_tokens=n, eos_token_id=eos, use_cache=use_cache)
    assert out_a == free_a[:len(a) + stop + 1]
    assert out_a[-1] == eos and len(out_a) < len(free_a)
    assert out_b == free_b


def test_eos_from_config(tiny, text_ckpt, tmp_path):
    """The default eos_token_id is config.json's: 50256 outside a small vocabulary never stops; an id inside it
    stops the row right after that token; null means never stop."""
    assert tiny.model.eos_token_id is None
    assert text_ckpt.model.eos_token_id == 50256
    prompt = [464, 2068]
    free = text_ckpt.model.generate_ids(prompt, max_new_tokens=30, eos_token_id=None)
    assert len(free) == 32
    first = free[2]
    for eos, expected in ((first, prompt + [first]), (None, free)):
        path = copy_checkpoint(text_ckpt.path, tmp_path / f"eos-{eos}")
        cfg = json.loads((path / "config.json").read_text())
        cfg["eos_token_id"] = eos
        (path / "config.json").write_text(json.dumps(cfg))
        model = GPT2.from_pretrained(path)
        assert model.eos_token_id == eos
        assert model.generate_ids(prompt, max_new_tokens=30) == expected
    # an explicit eos_token_id overrides the config's
    assert text_ckpt.model.generate_ids(prompt, max_new_tokens=30, eos_token_id=first) == prompt + [first]


def test_max_new_tokens_zero_returns_the_prompt(tiny, text_ckpt):
    prompts = prompts_of(TINY, [3, 6])
    assert tiny.model.generate_ids(prompts, max_new_tokens=0) == prompts
    assert tiny.model.generate_ids(prompts[0], max_new_tokens=0) == prompts[0]
    assert text_ckpt.model.generate("Hello there", max_new_tokens=0) == "Hello there"


def test_max_new_tokens_is_reached_exactly(tiny):
    out = tiny.model.generate_ids(prompts_of(TINY, [2, 5]), max_new_tokens=17, eos_token_id=None)
    assert [len(r) for r in out] == [19, 22]


# ---- text in / out -----------------------------------------------------------------------------------------------

def test_generate_text_is_decoded_generate_ids(text_ckpt):
    model = text_ckpt.model
    prompt = "The quick brown fox"
    text = model.generate(prompt, max_new_tokens=12)
    assert isinstance(text, str) and text.startswith(prompt)
    assert text == model.tokenizer.decode(model.generate_ids(model.tokenizer.encode(prompt), max_new_tokens=12))


def test_generate_list_of_prompts(text_ckpt):
    model = text_ckpt.model
    prompts = ["Once upon a time", "Hi", "A much longer prompt, with punctuation and numbers 123."]
    out = model.generate(prompts, max_new_tokens=8, eos_token_id=None)
    assert isinstance(out, list) and len(out) == 3
    assert out == [model.generate(p, max_new_tokens=8, eos_token_id=None) for p in prompts]
    assert model.generate([], max_new_tokens=8) == []


# ---- streaming ---------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("prompt", ["Once upon a time", "def main():\n    ", "Zürich — 東京"])
def test_stream_joins_to_the_generated_continuation(text_ckpt, prompt):
    model = text_ckpt.model
    pieces = list(model.stream(prompt, max_new_tokens=25, eos_token_id=None))
    assert len(pieces) > 1
    assert all(isinstance(p, str) and p for p in pieces)
    full = model.generate(prompt, max_new_tokens=25, eos_token_id=None)
    assert "".join(pieces) == full[len(prompt):]


def test_stream_sampled_matches_generate_with_the_same_seed(text_ckpt):
    model = text_ckpt.model
    kw = dict(max_new_tokens=20, eos_token_id=None, do_sample=True, temperature=1.0, seed=5)
    assert "".join(model.stream("Hello", **kw)) == model.generate("Hello", **kw)[len("Hello"):]
