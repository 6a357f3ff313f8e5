"""The generation options of transformers' generate() against transformers itself, on random GPT-2 and Llama
checkpoints: the logits processors (repetition_penalty, no_repeat_ngram_size, min_new_tokens / min_length, a list
of eos ids, max_length) greedy token for token with equal scores; the sampling filters (min_p, typical_p, with the
others) by the scores each step's token is drawn from and by the sampler's distribution (chi-square); scores,
log-probabilities, stop strings, streamers, batch streaming; one definition of the options (help, errors)."""

from __future__ import annotations

import inspect

import numpy as np
import pytest
import torch
import transformers

import kvcache
from conftest import TINY, random_ids
from llama_checkpoints import LlamaFactory, LlamaSpec
from test_sampling import N_DRAWS, assert_fits

SCORE_RTOL = 1e-4
SCORE_ATOL = 1e-4  # logits of these models are O(1-10); the engines agree to ~1e-5
LLAMA = LlamaSpec("options")


@pytest.fixture(scope="module")
def llama_ckpt(tmp_path_factory):
    return LlamaFactory(tmp_path_factory)(LLAMA)


@pytest.fixture(params=["gpt2", "llama"])
def pair(request, tiny, llama_ckpt):
    """(our model, transformers' model, vocabulary size) of one family."""
    if request.param == "gpt2":
        return tiny.model, tiny.hf, TINY.vocab_size
    return llama_ckpt.model, llama_ckpt.hf, LLAMA.vocab_size


def hf_generate(hf, prompt, **options):
    """transformers' generate on one prompt, with its scores."""
    options.setdefault("eos_token_id", None)
    with torch.no_grad():
        return hf.generate(torch.tensor([list(prompt)]), attention_mask=torch.ones(1, len(prompt), dtype=torch.long),
                           pad_token_id=0, return_dict_in_generate=True, output_scores=True, **options)


def assert_scores_equal(ours, theirs):
    """Per step (rows, V): the same tokens removed (-inf), and the rest within tolerance."""
    assert len(ours) == len(theirs)
    for step, (a, b) in enumerate(zip(ours, theirs)):
        b = b.float().numpy()
        assert a.shape == b.shape
        assert np.array_equal(np.isfinite(a), np.isfinite(b)), f"step {step}: other tokens removed"
        finite = np.isfinite(a)
        np.testing.assert_allclose(a[finite], b[finite], rtol=SCORE_RTOL, atol=SCORE_ATOL, err_msg=f"step {step}")


PROCESSORS = {
    "repetition_penalty-1.5": dict(repetition_penalty=1.5),
    "repetition_penalty-0.7": dict(repetition_penalty=0.7),
    "no_repeat_ngram_size-1": dict(no_repeat_ngram_size=1),
    "no_repeat_ngram_size-2": dict(no_repeat_ngram_size=2),
    "no_repeat_ngram_size-3-repetition_penalty-1.2": dict(no_repeat_ngram_size=3, repetition_penalty=1.2),
}


@pytest.mark.parametrize("name", PROCESSORS)
@pytest.mark.parametrize("prompt_len", [3, 17])
def test_greedy_processors_equal_transformers(pair, name, prompt_len):
    model, hf, vocab = pair
    prompt = random_ids(vocab, prompt_len, seed=prompt_len).tolist()
    options = PROCESSORS[name]
    ref = hf_generate(hf, prompt, do_sample=False, max_new_tokens=30, **options)
    out = model.generate_ids(prompt, 30, eos_token_id=None, return_dict_in_generate=True, output_scores=True,
                             **options)
    assert out.sequences[0] == ref.sequences[0].tolist()
    assert_scores_equal(out.scores, ref.scores)


def test_min_new_tokens_min_length_and_a_list_of_eos(pair):
    """EOS ids are banned until min_new_tokens / min_length; any id of the list ends the row."""
    model, hf, vocab = pair
    prompt = random_ids(vocab, 6, seed=1).tolist()
    free = model.generate_ids(prompt, 20, eos_token_id=None)[len(prompt):]
    eos = [free[2], free[5]]  # the third and sixth tokens greedy would produce
    for options in (dict(), dict(min_new_tokens=4), dict(min_length=len(prompt) + 7)):
        ref = hf_generate(hf, prompt, do_sample=False, max_new_tokens=20, eos_token_id=eos, **options)
        out = model.generate_ids(prompt, 20, eos_token_id=eos, return_dict_in_generate=True, output_scores=True,
                                 **options)
        theirs = ref.sequences[0].tolist()
        assert out.sequences[0] == theirs, options
        assert out.sequences[0][-1] in eos or len(theirs) == len(prompt) + 20
        assert len(theirs) - len(prompt) >= max(options.get("min_new_tokens", 0), 7 if "min_length" in options else 0)
        assert_scores_equal(out.scores, ref.scores)
    assert len(model.generate_ids(prompt, 20, eos_token_id=eos)) == len(prompt) + 3


def test_max_length_counts_the_longest_prompt(tiny):
    """As on transformers' padded batch: max_length is prompt + new tokens of the longest prompt; max_new_tokens,
    when given too, wins."""
    rows = [[1, 2, 3], [4, 5, 6, 7, 8]]
    out = tiny.model.generate_ids(rows, max_length=9, eos_token_id=None)
    assert [len(r) for r in out] == [3 + 4, 5 + 4]
    ref = tiny.hf.generate(torch.tensor([rows[1]]), max_length=9, do_sample=False, eos_token_id=None, pad_token_id=0)
    assert out[1] == ref[0].tolist()
    assert len(tiny.model.generate_ids(rows[0], 2, max_length=50)) == 5
    with pytest.raises(ValueError, match="max_length=5 leaves no room for new tokens after the longest prompt, of 5"):
        tiny.model.generate_ids(rows, max_length=5)


SAMPLING = {
    "min_p-0.1": dict(min_p=0.1),
    "min_p-0.3-temperature-0.7": dict(min_p=0.3, temperature=0.7),
    "typical_p-0.6": dict(typical_p=0.6),
    "typical_p-0.9-temperature-1.4": dict(typical_p=0.9, temperature=1.4),
    "top_k-20-top_p-0.9-min_p-0.05-typical_p-0.95": dict(top_k=20, top_p=0.9, min_p=0.05, typical_p=0.95),
    "repetition_penalty-1.3-top_p-0.8": dict(repetition_penalty=1.3, top_p=0.8),
}


@pytest.mark.parametrize("name", SAMPLING)
def test_sampling_filters_keep_the_tokens_transformers_keeps(pair, name):
    """The first step's scores (the same logits in both engines) are transformers' after its warpers: the same
    tokens removed, the rest equal. Later steps draw other tokens, so only the first is compared."""
    model, hf, vocab = pair
    options = {"top_k": 0, **SAMPLING[name]}  # transformers' default top_k is 50, ours 0
    for seed in range(3):
        prompt = random_ids(vocab, 5 + seed, seed=seed).tolist()
        ref = hf_generate(hf, prompt, do_sample=True, max_new_tokens=1, **options)
        out = model.generate_ids(prompt, 1, do_sample=True, seed=seed, eos_token_id=None,
                                 return_dict_in_generate=True, output_scores=True, **options)
        assert_scores_equal(out.scores, ref.scores)
        assert np.isfinite(out.scores[0][0, out.sequences[0][-1]]), "drew a removed token"


LOGITS = (np.random.default_rng(7).normal(size=24) * 1.8).astype(np.float32)
FILTER_DRAWS = {
    "min_p-0.08": dict(min_p=0.08),
    "min_p-0.2-temperature-1.5": dict(min_p=0.2, temperature=1.5),
    "typical_p-0.5": dict(typical_p=0.5),
    "typical_p-0.85-top_k-12": dict(typical_p=0.85, top_k=12),
    "top_p-0.9-min_p-0.05-typical_p-0.9": dict(top_p=0.9, min_p=0.05, typical_p=0.9),
}


def transformers_distribution(logits, options) -> np.ndarray:
    """The probabilities transformers' warpers leave, in its order (temperature, top-k, top-p, min-p, typical-p)."""
    from transformers.generation import logits_process as lp

    warpers = [lp.TemperatureLogitsWarper(options.get("temperature", 1.0))]
    if options.get("top_k"):
        warpers.append(lp.TopKLogitsWarper(options["top_k"]))
    if options.get("top_p", 1.0) < 1.0:
        warpers.append(lp.TopPLogitsWarper(options["top_p"]))
    if options.get("min_p"):
        warpers.append(lp.MinPLogitsWarper(options["min_p"]))
    if options.get("typical_p", 1.0) < 1.0:
        warpers.append(lp.TypicalLogitsWarper(options["typical_p"]))
    scores = torch.tensor(logits, dtype=torch.float32)[None]
    for w in warpers:
        scores = w(None, scores)
    return torch.softmax(scores.double(), dim=-1)[0].numpy()


@pytest.mark.parametrize("name", FILTER_DRAWS)
def test_sampler_draws_from_transformers_distribution(name):
    options = FILTER_DRAWS[name]
    probs = transformers_distribution(LOGITS, options)
    assert 2 <= (probs > 0).sum() < LOGITS.size, "the filter should remove some tokens and keep several"
    draws = kvcache.sample(np.tile(LOGITS, (N_DRAWS, 1)), seed=11, **options)
    assert_fits(draws, probs)


def test_logprobs_and_top_logprobs_are_the_log_softmax_of_the_scores(pair):
    model, hf, vocab = pair
    prompt = random_ids(vocab, 8, seed=3).tolist()
    ref = hf_generate(hf, prompt, do_sample=False, max_new_tokens=12)
    theirs = hf.compute_transition_scores(ref.sequences, ref.scores, normalize_logits=True)[0].numpy()
    out = model.generate_ids([prompt, prompt[:5]], 12, eos_token_id=None, return_dict_in_generate=True,
                             top_logprobs=4, output_logits=True)
    assert out.scores is None and len(out.logits) == 12
    np.testing.assert_allclose(out.logprobs[0], theirs, rtol=1e-4, atol=1e-4)
    for row in range(2):
        ids, values = out.top_logprobs[row]
        assert ids.shape == values.shape == (12, 4)
        assert np.all(np.diff(values, axis=1) <= 0)
        np.testing.assert_array_equal(ids[:, 0], out.sequences[row][-12:])  # greedy: the best is the one chosen
        np.testing.assert_allclose(values[:, 0], out.logprobs[row])
        logits = np.stack([step[row] for step in out.logits])
        np.testing.assert_array_equal(logits.argmax(axis=1), ids[:, 0])


def test_scores_of_a_row_that_stopped_early(tiny):
    prompt = [5, 6, 7]
    free = tiny.model.generate_ids(prompt, 6, eos_token_id=None)
    out = tiny.model.generate_ids([prompt, [9, 9]], 6, eos_token_id=free[4], return_dict_in_generate=True,
                                  output_scores=True)
    assert out.sequences[0] == free[:5]
    assert len(out.logprobs[0]) == 2
    assert len(out.scores) == len(out.sequences[1]) - 2
    assert all(np.isneginf(s[0]).all() for s in out.scores[2:])


def test_stop_strings_stop_after_the_token_that_completes_them(text_ckpt, tokenizer_dir):
    model = text_ckpt.model
    prompt = "The history of the"
    full = model.generate(prompt, 30, eos_token_id=None)
    ids = model.generate_ids(model.encode(prompt), 30, eos_token_id=None)
    cont = full[len(prompt):]
    stop = cont[8:11]  # three characters of the continuation
    out = model.generate(prompt, 30, eos_token_id=None, stop_strings=[stop, "never appears \u2603"])
    end = len(prompt) + cont.index(stop) + len(stop)
    assert out.startswith(full[:end]) and full.startswith(out) and len(out) < len(full)
    assert not out[:-1].endswith(stop) or out.endswith(stop)
    # the very token ids transformers stops at, with its tokenizer
    tok = transformers.GPT2TokenizerFast.from_pretrained(str(tokenizer_dir))
    with torch.no_grad():
        ref = text_ckpt.hf.generate(torch.tensor([ids[:len(model.encode(prompt))]]), max_new_tokens=30,
                                    do_sample=False, eos_token_id=None, pad_token_id=0, stop_strings=stop,
                                    tokenizer=tok)
    assert model.generate_ids(model.encode(prompt), 30, eos_token_id=None, stop_strings=stop) == ref[0].tolist()


def test_a_transformers_streamer_receives_the_prompt_then_each_token(text_ckpt, tokenizer_dir):
    model = text_ckpt.model
    tok = transformers.GPT2TokenizerFast.from_pretrained(str(tokenizer_dir))
    streamer = transformers.TextIteratorStreamer(tok, skip_prompt=True)
    out = model.generate("Once upon a time", 12, eos_token_id=None, streamer=streamer)
    assert "".join(streamer) == out[len("Once upon a time"):]

    class Recorder:
        def __init__(self):
            self.calls = []

        def put(self, value):
            self.calls.append(np.asarray(value).tolist())

        def end(self):
            self.calls.append("end")

    rec = Recorder()
    ids = model.generate_ids([3, 4, 5], 4, eos_token_id=None, streamer=rec)
    assert rec.calls == [[[3, 4, 5]]] + [[t] for t in ids[3:]] + ["end"]
    with pytest.raises(ValueError, match="a streamer takes one row"):
        model.generate_ids([[1, 2], [3]], 2, streamer=rec)
    with pytest.raises(TypeError, match="streamer must have put"):
        model.generate_ids([1, 2], 2, streamer=object())


def test_stream_of_a_batch_yields_row_and_piece(text_ckpt):
    model = text_ckpt.model
    prompts = ["Once upon a time", "The answer is"]
    texts = model.generate(prompts, 10, eos_token_id=None, do_sample=True, seed=4, num_return_sequences=2)
    pieces = {}
    for row, piece in model.stream(prompts, 10, eos_token_id=None, do_sample=True, seed=4, num_return_sequences=2):
        pieces[row] = pieces.get(row, "") + piece
    assert [prompts[r // 2] + pieces[r] for r in range(4)] == texts
    assert "".join(model.stream(prompts[0], 6, eos_token_id=None)) == model.generate(prompts[0], 6,
                                                                                   eos_token_id=None)[16:]


def test_session_and_prefix_cache_penalise_the_whole_history(tiny):
    """The repetition penalty and n-gram bans read the tokens a cache holds too: a session turn and a prefix-cached
    call equal one uncached call over the whole sequence."""
    model = tiny.model
    options = dict(repetition_penalty=1.8, no_repeat_ngram_size=2, eos_token_id=None)
    history = random_ids(TINY.vocab_size, 40, seed=8).tolist()
    whole = model.generate_ids(history, 12, **options)
    chat = model.session(max_seq_len=100)
    chat.append(history[:30])
    chat.generate(0)
    chat.append(history[30:])
    assert chat.generate(12, **options) == whole[40:]
    model.enable_prefix_cache(block_size=8)
    try:
        model.generate_ids(history, 1)  # fills the cache with the prompt's blocks
        assert model.generate_ids(history, 12, **options) == whole
        assert model.prefix_cache.stats["hits"] >= 1
    finally:
        model.disable_prefix_cache()


def test_help_lists_every_option_with_its_default(tiny):
    for method in (kvcache.GPT2.generate_ids, kvcache.GPT2.generate, kvcache.Llama.chat):
        params = inspect.signature(method).parameters
        assert "kwargs" not in params and "options" not in params
        assert params["repetition_penalty"].default == 1.0 and params["min_p"].default == 0.0
        assert "generation_config" in params
        assert "no_repeat_ngram_size: bans any token" in method.__doc__
    assert "eos_token_id='from the model'" in str(inspect.signature(kvcache.GPT2.generate_ids))
    assert "num_beams" not in inspect.signature(kvcache.GPT2.stream).parameters


def test_a_generation_config_gives_defaults_the_keywords_override(tiny):
    config = kvcache.GenerationConfig(max_new_tokens=5, repetition_penalty=1.5, eos_token_id=None)
    a = tiny.model.generate_ids([1, 2, 3], generation_config=config)
    assert a == tiny.model.generate_ids([1, 2, 3], 5, repetition_penalty=1.5, eos_token_id=None)
    b = tiny.model.generate_ids([1, 2, 3], 7, generation_config=config, repetition_penalty=1.0)
    assert b == tiny.model.generate_ids([1, 2, 3], 7, eos_token_id=None)
    with pytest.raises(TypeError, match="generation_config must be a kvcache.GenerationConfig"):
        tiny.model.generate_ids([1, 2], generation_config={"max_new_tokens": 2})


@pytest.mark.parametrize("kwargs, error, match", [
    (dict(repetition_penalty=0), ValueError, "repetition_penalty must be a finite number > 0, got 0.0"),
    (dict(repetition_penalty=-1.5), ValueError, "repetition_penalty must be a finite number > 0, got -1.5"),
    (dict(min_p=1.5), ValueError, r"min_p must be in \[0, 1\], got 1.5"),
    (dict(min_p=-0.1), ValueError, r"min_p must be in \[0, 1\], got -0.1"),
    (dict(typical_p=0.0), ValueError, r"typical_p must be in \(0, 1\], got 0.0"),
    (dict(no_repeat_ngram_size=-1), ValueError, "no_repeat_ngram_size must be >= 0, got -1"),
    (dict(min_new_tokens=-2), ValueError, "min_new_tokens must be >= 0, got -2"),
    (dict(stop_strings=[3]), TypeError, r"stop_strings must be a str or a list of str, got \[3\]"),
    (dict(stop_strings=[""]), ValueError, "stop_strings must be non-empty strings"),
    (dict(eos_token_id=[]), ValueError, "eos_token_id must not be an empty list"),
    (dict(eos_token_id=[1, 500]), ValueError, r"eos_token_id 500 is outside the vocabulary \[0, 101\)"),
    (dict(eos_token_id=[1, "2"]), TypeError, "eos_token_id must be an int, got str '2'"),
    (dict(max_length=0), ValueError, "max_length must be >= 1, got 0"),
    (dict(top_logprobs=-1), ValueError, "top_logprobs must be >= 0, got -1"),
    (dict(stop_strings="x"), ValueError, "stop_strings need the model's tokenizer"),
    (dict(max_new_toknes=3), TypeError, "generate_ids\\(\\) got an unexpected keyword argument 'max_new_toknes'"),
    (dict(num_beams=2, repetition_penalty=1.2), ValueError, "beam search .* does not take repetition_penalty"),
])
def test_bad_option_values_are_clear_errors(tiny, kwargs, error, match):
    with pytest.raises(error, match=match):
        tiny.model.generate_ids([1, 2, 3], 4, **kwargs)


def test_an_unknown_keyword_names_the_method_called(text_ckpt):
    with pytest.raises(TypeError, match=r"^generate\(\) got an unexpected keyword argument 'top_n'"):
        text_ckpt.model.generate("Hi", 3, top_n=2)
    with pytest.raises(TypeError, match=r"^stream\(\) got an unexpected keyword argument 'num_beams'"):
        text_ckpt.model.stream("Hi", 3, num_beams=2)
