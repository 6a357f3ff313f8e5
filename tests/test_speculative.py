"""Speculative decoding: greedy gives plain greedy's tokens (an assistant model or prompt lookup, several draft
lengths, GPT-2 and Llama); sampled tokens are distributed as the model's own (chi-square on the first two tokens,
whose exact marginals a tiny vocabulary lets us compute); prompt lookup drafts what transformers' drafts; bad
arguments are clear errors."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
import torch

import kvcache
from conftest import TINY, random_ids
from llama_checkpoints import LlamaFactory, LlamaSpec
from kvcache.speculative import lookup_draft
from test_sampling import assert_fits

LLAMA = LlamaSpec("speculative")
LLAMA_DRAFT = LlamaSpec("speculative-draft", n_layer=1, seed=5)


@pytest.fixture(scope="module")
def llamas(tmp_path_factory):
    factory = LlamaFactory(tmp_path_factory)
    return factory(LLAMA).model, factory(LLAMA_DRAFT).model


@pytest.fixture(scope="module")
def gpt2_draft(tiny):
    """A drafter of the same vocabulary: the same model with bfloat16 weights (close, not equal)."""
    return kvcache.GPT2.from_pretrained(tiny.path, weights_dtype="bfloat16")


@pytest.mark.parametrize("k", [1, 3, 8])
def test_greedy_with_an_assistant_is_plain_greedy(tiny, gpt2_draft, llamas, k):
    for model, draft, vocab in ((tiny.model, gpt2_draft, TINY.vocab_size), (llamas[0], llamas[1], LLAMA.vocab_size)):
        for seed, new in ((0, 120), (1, 37)):
            prompt = random_ids(vocab, 9 + seed, seed=seed).tolist()
            plain = model.generate_ids(prompt, new, eos_token_id=None)
            out = model.generate_ids(prompt, new, eos_token_id=None, assistant_model=draft, num_assistant_tokens=k,
                                     return_dict_in_generate=True)
            assert out.sequences[0] == plain
            s = out.speculation
            assert s.drafted > 0 and 0 <= s.accepted <= s.drafted and s.rounds + s.accepted == new


def test_greedy_with_prompt_lookup_is_plain_greedy(tiny, llamas):
    for model, vocab in ((tiny.model, TINY.vocab_size), (llamas[0], LLAMA.vocab_size)):
        base = random_ids(vocab, 12, seed=4).tolist()
        prompt = base + base[:6] + base  # repeats, for lookup to find
        plain = model.generate_ids(prompt, 60, eos_token_id=None)
        for k in (2, 10):
            out = model.generate_ids(prompt, 60, eos_token_id=None, prompt_lookup_num_tokens=k,
                                     return_dict_in_generate=True)
            assert out.sequences[0] == plain
            assert out.speculation.drafted > 0


def test_an_eos_among_the_accepted_drafts_ends_the_sequence(tiny, gpt2_draft):
    prompt = [3, 1, 4, 1, 5]
    plain = tiny.model.generate_ids(prompt, 30, eos_token_id=None)
    eos = plain[len(prompt) + 7]
    expected = tiny.model.generate_ids(prompt, 30, eos_token_id=eos)
    assert tiny.model.generate_ids(prompt, 30, eos_token_id=eos, assistant_model=gpt2_draft,
                                   num_assistant_tokens=4) == expected
    assert tiny.model.generate_ids(prompt, 30, eos_token_id=eos, prompt_lookup_num_tokens=3) == expected


@pytest.mark.parametrize("sequence, k, ngram", [
    ([1, 2, 3, 4, 1, 2], 3, 2),
    ([1, 2, 3, 4, 5, 9, 2], 2, 2),       # no 2-gram match: the 1-gram [2] matches
    ([5, 6, 7, 5, 6, 8, 5, 6], 4, 2),    # two matches: the first is taken
    ([1, 2, 3, 4], 3, 3),                # none
    ([7, 7, 7, 7], 5, 3),
])
def test_prompt_lookup_drafts_as_transformers(sequence, k, ngram):
    from transformers.generation.candidate_generator import PromptLookupCandidateGenerator

    reference = PromptLookupCandidateGenerator(num_output_tokens=k, max_matching_ngram_size=ngram, max_length=1000)
    ids = torch.tensor([sequence])
    theirs = reference.get_candidates(ids)[0][0, len(sequence):].tolist()
    assert lookup_draft(sequence, k, ngram) == theirs


def exact_marginals(model, prompt, options):
    """The model's own distributions of the first new token and of the second (summed over the first), by the
    sampler's filters on its logits."""
    from kvcache.speculative import _probabilities

    config = SimpleNamespace(temperature=options.get("temperature", 1.0), top_k=options.get("top_k", 0), top_p=1.0,
                             min_p=0.0, typical_p=1.0)
    first = _probabilities(model.forward([prompt], logits="last"), config)[0]
    second = np.zeros_like(first)
    for x in np.flatnonzero(first):
        second += first[x] * _probabilities(model.forward([prompt + [int(x)]], logits="last"), config)[0]
    return first, second


@pytest.mark.parametrize("drafter", ["assistant", "lookup"])
@pytest.mark.parametrize("options", [dict(), dict(temperature=0.7, top_k=12)], ids=["plain", "filtered"])
def test_sampled_tokens_are_distributed_as_the_model_samples_them(tiny, gpt2_draft, drafter, options):
    prompt = [4, 9, 4, 9, 4]  # repeats: lookup drafts [9, 4] after it
    spec = dict(assistant_model=gpt2_draft, num_assistant_tokens=2) if drafter == "assistant" else \
        dict(prompt_lookup_num_tokens=2)
    first, second = exact_marginals(tiny.model, prompt, options)
    draws = np.array([tiny.model.generate_ids(prompt, 2, do_sample=True, seed=seed, eos_token_id=None, **spec,
                                              **options)[-2:] for seed in range(3000)])
    assert_fits(draws[:, 0], first)
    assert_fits(draws[:, 1], second)


def test_speculative_sampling_reproduces_with_a_seed(tiny, gpt2_draft):
    options = dict(do_sample=True, eos_token_id=None, assistant_model=gpt2_draft, num_assistant_tokens=3)
    a = tiny.model.generate_ids([1, 2, 3], 40, seed=7, **options)
    assert a == tiny.model.generate_ids([1, 2, 3], 40, seed=7, **options)
    assert a != tiny.model.generate_ids([1, 2, 3], 40, seed=8, **options)


def test_bad_speculative_arguments(tiny, gpt2_draft, llamas):
    model = tiny.model
    with pytest.raises(ValueError, match="assistant_model has a vocabulary of 131 tokens, this model 101"):
        model.generate_ids([1, 2], 4, assistant_model=llamas[1])
    with pytest.raises(TypeError, match="assistant_model must be a kvcache model, got str"):
        model.generate_ids([1, 2], 4, assistant_model="gpt2")
    with pytest.raises(ValueError, match="num_assistant_tokens must be >= 1, got 0"):
        model.generate_ids([1, 2], 4, assistant_model=gpt2_draft, num_assistant_tokens=0)
    with pytest.raises(ValueError, match="prompt_lookup_num_tokens must be >= 1, got 0"):
        model.generate_ids([1, 2], 4, prompt_lookup_num_tokens=0)
    with pytest.raises(ValueError, match="assistant_model= or prompt_lookup_num_tokens=, not both"):
        model.generate_ids([1, 2], 4, assistant_model=gpt2_draft, prompt_lookup_num_tokens=3)
    with pytest.raises(ValueError, match="one prompt and one sequence .* got 2 prompts"):
        model.generate_ids([[1, 2], [3]], 4, assistant_model=gpt2_draft)
    with pytest.raises(ValueError, match="does not take repetition_penalty"):
        model.generate_ids([1, 2], 4, prompt_lookup_num_tokens=2, repetition_penalty=1.2)
    with pytest.raises(ValueError, match="beyond n_ctx=160"):
        model.generate_ids([1, 2], 159, prompt_lookup_num_tokens=2)
    with pytest.raises(TypeError, match=r"stream\(\) got an unexpected keyword argument 'assistant_model'"):
        model.stream("x", 2, assistant_model=gpt2_draft)
