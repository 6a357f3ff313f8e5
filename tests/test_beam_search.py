"""Beam search against transformers' generate(num_beams=..., do_sample=False): the same tokens on the same
checkpoints, for every early_stopping mode, several length penalties, with and without an end id that finishes
beams early; and the cache rows it reorders copied, never recomputed."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from conftest import MEDIUM, ODD, TINY
from llama_checkpoints import GQA, MQA, LlamaFactory

# (num_beams, num_return_sequences, max_new_tokens, length_penalty, early_stopping)
SETTINGS = [
    (2, 1, 12, 1.0, False),
    (4, 2, 16, 1.0, True),
    (4, 4, 10, 0.0, "never"),
    (3, 1, 20, 2.0, "never"),
    (5, 3, 14, -0.5, False),
    (8, 8, 9, 1.0, True),
]


@pytest.fixture(scope="module")
def llama(tmp_path_factory) -> LlamaFactory:
    return LlamaFactory(tmp_path_factory)


def _hf_beams(hf, prompt, num_beams, n_return, max_new, length_penalty, early_stopping, eos):
    with torch.no_grad():
        out = hf.generate(torch.tensor([prompt]), attention_mask=torch.ones(1, len(prompt), dtype=torch.long),
                          do_sample=False, num_beams=num_beams, num_return_sequences=n_return,
                          max_new_tokens=max_new, length_penalty=length_penalty, early_stopping=early_stopping,
                          eos_token_id=eos, pad_token_id=0 if eos is None else eos)
    return out.tolist()


def _assert_same_beams(ours, theirs, eos):
    """Ours are unpadded; transformers pads the shorter beams with the pad id (here the end id) to one length."""
    assert len(ours) == len(theirs)
    for i, (a, b) in enumerate(zip(ours, theirs)):
        assert b[:len(a)] == a, f"beam {i}: ours {a}, transformers {b}"
        assert all(t == (0 if eos is None else eos) for t in b[len(a):]), f"beam {i}: ours {a}, transformers {b}"


def _frequent_token(model, prompt, steps=3):
    """An end id the beams meet: the greedy continuation's token a few steps in."""
    return model.generate_ids(prompt, steps, eos_token_id=None)[-1]


def _check(model, hf, vocab, seed, setting, with_eos):
    num_beams, n_return, max_new, lp, es = setting
    prompt = np.random.default_rng(seed).integers(0, vocab, size=3 + seed % 7).tolist()
    eos = _frequent_token(model, prompt) if with_eos else None
    ours = model.generate_ids(prompt, max_new, num_beams=num_beams, num_return_sequences=n_return,
                              length_penalty=lp, early_stopping=es, eos_token_id=eos)
    ours = [ours] if n_return == 1 else ours
    _assert_same_beams(ours, _hf_beams(hf, prompt, num_beams, n_return, max_new, lp, es, eos), eos)
    return ours


@pytest.mark.parametrize("spec", [TINY, ODD, MEDIUM], ids=str)
@pytest.mark.parametrize("setting", SETTINGS, ids=lambda s: f"beams{s[0]}-ret{s[1]}-lp{s[3]}-es{s[4]}")
@pytest.mark.parametrize("with_eos", [False, True], ids=["no-eos", "eos"])
def test_gpt2_beams_equal_transformers(checkpoint, spec, setting, with_eos):
    ckpt = checkpoint(spec)
    _check(ckpt.model, ckpt.hf, spec.vocab_size, spec.seed + SETTINGS.index(setting), setting, with_eos)


@pytest.mark.parametrize("spec", [GQA, MQA], ids=str)
@pytest.mark.parametrize("setting", SETTINGS[:4], ids=lambda s: f"beams{s[0]}-ret{s[1]}-lp{s[3]}-es{s[4]}")
@pytest.mark.parametrize("with_eos", [False, True], ids=["no-eos", "eos"])
def test_llama_beams_equal_transformers(llama, spec, setting, with_eos):
    ckpt = llama(spec)
    _check(ckpt.model, ckpt.hf, spec.vocab_size, spec.seed + SETTINGS.index(setting), setting, with_eos)


def test_early_end_is_exercised(checkpoint):
    """The end-id cases above finish beams before max_new_tokens (else they would test nothing more)."""
    ckpt = checkpoint(TINY)
    prompt = [5, 6, 7]
    eos = _frequent_token(ckpt.model, prompt)
    beams = ckpt.model.generate_ids(prompt, 20, num_beams=4, num_return_sequences=4, eos_token_id=eos)
    assert any(len(b) < len(prompt) + 20 and b[-1] == eos for b in beams)


def test_batch_of_prompts_is_each_prompt_alone(checkpoint):
    model = checkpoint(ODD).model
    prompts = [[1, 2, 3], [9, 8, 7, 6, 5], [40]]
    batch = model.generate_ids(prompts, 10, num_beams=3, num_return_sequences=2)
    alone = [b for p in prompts for b in model.generate_ids(p, 10, num_beams=3, num_return_sequences=2)]
    assert batch == alone


def test_one_beam_is_greedy_and_16_bit_caches_run(checkpoint):
    model = checkpoint(TINY).model
    assert model.generate_ids([3, 4], 10, num_beams=1) == model.generate_ids([3, 4], 10)
    for dtype in ("float16", "bfloat16"):
        out = model.generate_ids([3, 4], 10, num_beams=3, cache_dtype=dtype)
        assert len(out) == 12


def test_reordering_copies_rows_instead_of_recomputing(checkpoint, monkeypatch):
    """Every step forwards one token per beam (no history recomputed); reorders copy rows."""
    from kvcache import beam_search

    model = checkpoint(TINY).model
    widths, copies = [], []
    real_forward, real_reorder = model.forward, beam_search._reorder

    def counting_forward(tokens, cache=None, **kw):
        widths.append(np.asarray(tokens).shape)
        return real_forward(tokens, cache, **kw)

    def counting_reorder(cache, rows, parents):
        copies.append(len(parents) - len(set(parents.tolist())))
        return real_reorder(cache, rows, parents)

    monkeypatch.setattr(model, "forward", counting_forward)
    monkeypatch.setattr(beam_search, "_reorder", counting_reorder)
    model.generate_ids([1, 2, 3, 4], 8, num_beams=4)
    assert widths[0] == (1, 4)  # the prompt, once
    assert all(w == (4, 1) for w in widths[1:]) and len(widths) == 8
    assert copies[0] == 3  # after the first step the 4 beams descend from the one prompt row


@pytest.mark.parametrize("kwargs, error, match", [
    ({"num_beams": 2, "do_sample": True}, ValueError, "do_sample must be False"),
    ({"num_beams": 2, "num_return_sequences": 3}, ValueError, "num_return_sequences=3 must be <= num_beams=2"),
    ({"num_beams": 0}, ValueError, "num_beams must be >= 1"),
    ({"num_beams": 2, "early_stopping": "sometimes"}, ValueError, "early_stopping must be True, False or 'never'"),
    ({"num_beams": 2, "length_penalty": "long"}, TypeError, "length_penalty must be a number"),
    ({"num_beams": 2, "use_cache": False}, ValueError, "beam search runs on a cache of its own"),
    ({"num_beams": 2, "max_new_tokens": 200}, ValueError, "beyond n_ctx=160"),
])
def test_bad_beam_arguments(tiny, kwargs, error, match):
    kwargs = dict(kwargs)
    max_new = kwargs.pop("max_new_tokens", 5)
    with pytest.raises(error, match=match):
        tiny.model.generate_ids([1, 2], max_new, **kwargs)
