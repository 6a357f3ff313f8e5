"""The sampler: determinism, greedy limits, support of top-k / top-p, and its distribution (chi-square)."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.stats import chisquare

import kvcache
from conftest import TINY, random_ids

# A chi-square p-value below this fails. Draws use fixed seeds, so each test is deterministic; with a correct sampler
# a given seed fails with probability 1e-3, and each seed here was run once to confirm it passes.
P_VALUE_MIN = 1e-3
N_DRAWS = 20000
# A top_p closer than this to a cumulative probability would make the nucleus depend on float32 rounding.
NUCLEUS_MARGIN = 1e-4

# 16 non-trivial logits (float32, as the engine sees them).
LOGITS = (np.random.default_rng(42).normal(size=16) * 1.5).astype(np.float32)


def reference_distribution(logits, temperature=1.0, top_k=0, top_p=1.0) -> np.ndarray:
    """The distribution the sampler must draw from, in float64, by the documented semantics: temperature, then
    top-k (every logit >= the k-th largest survives, ties kept), then top-p (the smallest prefix of tokens sorted by
    descending probability whose cumulative probability reaches top_p, at least one), then renormalisation."""
    z = np.asarray(logits, dtype=np.float64)
    keep = np.ones(z.shape, dtype=bool)
    if 0 < top_k < z.size:
        keep &= z >= np.sort(z)[::-1][top_k - 1]
    p = np.where(keep, np.exp((z - z[keep].max()) / temperature), 0.0)
    p /= p.sum()
    if top_p < 1.0:
        order = np.argsort(-p, kind="stable")
        cumulative = np.cumsum(p[order])
        assert np.min(np.abs(cumulative - top_p)) > NUCLEUS_MARGIN, "top_p sits on a boundary: pick another"
        n = min(int(np.searchsorted(cumulative, top_p)) + 1, int(keep.sum()))
        nucleus = np.zeros(z.shape, dtype=bool)
        nucleus[order[:n]] = True
        p = np.where(nucleus, p, 0.0)
        p /= p.sum()
    return p


def assert_fits(draws, probs) -> None:
    """No draw outside the support, and a chi-square goodness of fit to probs (categories with expected count < 5
    pooled, as the test requires)."""
    counts = np.bincount(np.asarray(draws), minlength=probs.size).astype(np.float64)
    assert counts.size == probs.size, "a draw is outside the vocabulary"
    outside = counts[probs == 0]
    assert outside.sum() == 0, f"drew tokens {np.flatnonzero((probs == 0) & (counts > 0))} outside the support"
    expected = probs * counts.sum()
    big = expected >= 5
    obs = np.append(counts[big], counts[~big & (probs > 0)].sum())
    exp = np.append(expected[big], expected[~big & (probs > 0)].sum())
    if exp[-1] == 0:
        obs, exp = obs[:-1], exp[:-1]
    assert obs.size >= 2, "degenerate distribution: nothing to test"
    p_value = chisquare(obs, exp).pvalue
    assert p_value > P_VALUE_MIN, f"p = {p_value:.2e}; observed {obs}, expected {np.round(exp, 1)}"


# ---- distribution ------------------------------------------------------------------------------------------------

FILTERS = {
    "plain": dict(),
    "temperature-0.7": dict(temperature=0.7),
    "temperature-2.5": dict(temperature=2.5),
    "top_k-5": dict(top_k=5),
    "top_k-over-vocab": dict(top_k=100),
    "top_p-0.8": dict(top_p=0.8),
    "top_p-0.5-temperature-0.6": dict(temperature=0.6, top_p=0.5),
    "top_k-8-top_p-0.7-temperature-1.3": dict(temperature=1.3, top_k=8, top_p=0.7),
    "top_k-3-top_p-0.95": dict(top_k=3, top_p=0.95),
}


@pytest.mark.parametrize("name", FILTERS)
def test_sample_matches_filtered_distribution(name):
    params = FILTERS[name]
    draws = kvcache.sample(np.tile(LOGITS, (N_DRAWS, 1)), seed=2024, **params)
    assert len(draws) == N_DRAWS
    assert_fits(draws, reference_distribution(LOGITS, **params))


def test_top_k_keeps_ties_with_the_kth_logit():
    logits = np.array([3.0, 1.0, 1.0, 1.0, 0.0, -1.0], dtype=np.float32)  # top_k=2 must keep ids 0, 1, 2, 3
    draws = kvcache.sample(np.tile(logits, (N_DRAWS, 1)), top_k=2, seed=3)
    probs = reference_distribution(logits, top_k=2)
    assert set(np.flatnonzero(probs)) == {0, 1, 2, 3}
    assert set(draws) == {0, 1, 2, 3}
    assert_fits(draws, probs)


def test_masked_logits_are_never_drawn():
    """-inf logits (masked tokens) have probability 0, under every filter."""
    logits = LOGITS.copy()
    masked = [0, 3, 7, 13]
    logits[masked] = -np.inf
    for params in (dict(), dict(temperature=3.0), dict(top_k=10), dict(top_p=0.99)):
        draws = kvcache.sample(np.tile(logits, (2000, 1)), seed=1, **params)
        assert not set(draws) & set(masked), params
    only = np.full(10, -np.inf, dtype=np.float32)
    only[6] = 0.0
    assert set(kvcache.sample(np.tile(only, (50, 1)), seed=2)) == {6}


def test_first_draw_over_many_seeds_is_distributed():
    """The first draw of each of many seeds follows the distribution too (seeds are not correlated)."""
    probs = reference_distribution(LOGITS, temperature=0.9)
    draws = [kvcache.sample(LOGITS, temperature=0.9, seed=s) for s in range(5000)]
    assert_fits(draws, probs)


def test_generator_samples_from_the_model_distribution(tiny):
    """generate_ids draws its first token from softmax(last logits / temperature): 4000 rows of one prompt, each
    row with its own random stream."""
    prompt = random_ids(TINY.vocab_size, 6, seed=8)
    last = tiny.model.forward(prompt[None, :])[0, -1]
    rows = tiny.model.generate_ids([prompt.tolist()] * 4000, max_new_tokens=1, do_sample=True, temperature=1.5,
                                   seed=77, eos_token_id=None)
    assert_fits([r[-1] for r in rows], reference_distribution(last, temperature=1.5))


# ---- support: top-k / top-p never leave their set -------------------------------------------------------------------

def random_rows(n_rows=400, vocab=50, seed=0):
    return (np.random.default_rng(seed).normal(size=(n_rows, vocab)) * 2).astype(np.float32)


@pytest.mark.parametrize("top_k", [1, 3, 10])
def test_top_k_never_leaves_the_k_best(top_k):
    rows = random_rows(seed=top_k)
    draws = kvcache.sample(rows, top_k=top_k, temperature=1.7, seed=top_k)
    for row, token in zip(rows, draws):
        assert row[token] >= np.sort(row)[::-1][top_k - 1]


@pytest.mark.parametrize("top_p", [0.3, 0.75, 0.9])
def test_top_p_never_leaves_the_nucleus(top_p):
    rows = random_rows(seed=int(top_p * 100))
    draws = kvcache.sample(rows, top_p=top_p, seed=11)
    hits = 0
    for row, token in zip(rows, draws):
        probs = np.exp(row.astype(np.float64) - row.max())
        probs /= probs.sum()
        order = np.argsort(-probs)
        cumulative = np.cumsum(probs[order])
        nucleus = order[:int(np.searchsorted(cumulative, top_p)) + 1]
        if np.min(np.abs(cumulative - top_p)) < NUCLEUS_MARGIN:
            continue  # boundary case decided by rounding: skip the row
        assert token in nucleus
        hits += token != order[0]
    assert hits > 0  # the test saw draws other than the argmax


# ---- greedy limits, determinism, shapes --------------------------------------------------------------------------

@pytest.mark.parametrize("params", [dict(do_sample=False), dict(temperature=0.0), dict(top_k=1),
                                    dict(top_p=1e-6), dict(temperature=0.3, top_k=1, top_p=0.5)],
                         ids=["do_sample-false", "temperature-0", "top_k-1", "tiny-top_p", "combined"])
def test_degenerate_settings_are_argmax(params):
    rows = random_rows(seed=5)
    assert kvcache.sample(rows, seed=0, **params) == rows.argmax(axis=1).tolist()


@pytest.mark.parametrize("n", [1, 5, 8, 13, 50257])
def test_greedy_takes_the_first_of_tied_largest_logits(n):
    """Greedy's argmax finds the largest logit in vector lanes, then its first index: ties and infinities must still
    give what a scalar scan with > gives (NumPy's argmax), wherever the winner sits."""
    rng = np.random.default_rng(n)
    rows = rng.standard_normal((6, n)).astype(np.float32)
    for r, spots in enumerate([[n - 1], [0, n - 1], [n // 2, n - 1], [n // 3, n // 2]]):
        rows[r, spots] = 9.0
    rows[4, n - 1] = np.inf
    rows[5, :] = -np.inf
    assert kvcache.sample(rows, do_sample=False) == rows.argmax(axis=1).tolist()


@pytest.mark.parametrize("n", [1, 8, 13, 50257])
@pytest.mark.parametrize("params", [dict(do_sample=False), dict(seed=0), dict(seed=0, top_k=5),
                                    dict(seed=0, top_p=0.5)], ids=["greedy", "sample", "top_k", "top_p"])
def test_a_nan_logit_is_an_error_wherever_it_sits(n, params):
    """A NaN logit means a broken model or input: greedy used to pass over it and sampling returned the last id."""
    for spot in sorted({0, n // 2, n - 1}):
        rows = np.random.default_rng(spot).standard_normal((2, n)).astype(np.float32)
        rows[1, spot] = np.nan
        with pytest.raises(ValueError, match=rf"logits contain NaN \(token id {spot}\)"):
            kvcache.sample(rows, **params)


@pytest.mark.parametrize("params", [dict(), dict(top_k=3), dict(top_p=0.5)], ids=["plain", "top_k", "top_p"])
def test_sampling_with_every_logit_minus_inf_is_an_error(params):
    with pytest.raises(ValueError, match=r"no token has a finite logit"):
        kvcache.sample(np.full(10, -np.inf, np.float32), seed=0, **params)
    assert kvcache.sample(np.full(10, -np.inf, np.float32), do_sample=False) == 0  # argmax of ties: the first


def test_sample_takes_lists_and_numpy_scalars_and_rejects_other_types():
    assert kvcache.sample([0.0, 5.0, 1.0], do_sample=False) == 1
    assert kvcache.sample(LOGITS, seed=np.int64(7)) == kvcache.sample(LOGITS, seed=7)
    for bad in (np.array(["a", "b"]), np.array([1.0, 2.0], dtype=complex), np.array([True, False])):
        with pytest.raises(TypeError, match=r"logits must be real numbers"):
            kvcache.sample(bad)
    for kwargs in (dict(do_sample=1), dict(temperature=True), dict(top_k=True), dict(top_k=2.0), dict(seed=1.5)):
        with pytest.raises(TypeError):
            kvcache.sample(LOGITS, **kwargs)
    with pytest.raises(ValueError, match=r"temperature must fit a float32"):
        kvcache.sample(LOGITS, temperature=1e39)


@pytest.mark.parametrize("kwargs, pattern", [
    (dict(top_p=1e-50), r"top_p must fit a float32 \(it rounds 1e-50 to 0\)"),  # was "got 0.000000"
    (dict(temperature=1e-50), r"temperature must fit a float32 \(it rounds 1e-50 to 0\)"),  # was greedy, silently
    (dict(top_p=0.0), r"top_p must be in \(0, 1\] \(1 = off\), got 0$"),
    (dict(top_p=1.25), r"got 1\.25$"),
    (dict(temperature=-1e-3), r"temperature must be a finite number >= 0, got -0\.001$"),
], ids=["top_p-underflow", "temperature-underflow", "zero-top_p", "top_p-above-1", "negative-t"])
def test_sampling_parameter_errors_show_the_value(kwargs, pattern):
    """Messages print the float32 the core got as its shortest decimal, and values float32 turns into 0 are refused."""
    with pytest.raises(ValueError, match=pattern):
        kvcache.sample(LOGITS, seed=0, **kwargs)


def test_a_tiny_float_in_a_core_message_is_not_rounded_to_zero():
    assert kvcache.sample(LOGITS, seed=0, top_p=1.5e-7) in range(LOGITS.size)  # tiny, but a valid top_p
    with pytest.raises(ValueError, match=r"layer_norm_epsilon must be a positive finite float32, got -1\.5e-07$"):
        kvcache.GPT2Config(eps=-1.5e-7)  # std::to_string printed "-0.000000"


def test_sample_shapes_and_types():
    one = kvcache.sample(LOGITS, seed=1)
    assert isinstance(one, int) and 0 <= one < LOGITS.size
    many = kvcache.sample(random_rows(n_rows=7), seed=1)
    assert isinstance(many, list) and len(many) == 7 and all(isinstance(t, int) for t in many)
    # float64 input is accepted and gives the draws of the same logits as float32
    assert kvcache.sample(LOGITS.astype(np.float64), seed=9) == kvcache.sample(LOGITS, seed=9)


def test_sample_same_seed_same_draws_different_seeds_differ():
    rows = np.tile(LOGITS, (300, 1))
    first = kvcache.sample(rows, temperature=1.2, seed=123)
    assert kvcache.sample(rows, temperature=1.2, seed=123) == first
    others = [kvcache.sample(rows, temperature=1.2, seed=s) for s in (124, 125, 126)]
    assert all(o != first for o in others)
    assert len({tuple(o) for o in others}) == 3


@pytest.mark.parametrize("params", [dict(temperature=1.0), dict(temperature=0.8, top_k=20, top_p=0.9)],
                         ids=["temperature", "top_k-top_p"])
def test_generate_same_seed_same_output_different_seeds_differ(tiny, params):
    prompts = [random_ids(TINY.vocab_size, n, seed=n).tolist() for n in (3, 7)]
    kw = dict(max_new_tokens=40, do_sample=True, eos_token_id=None, **params)
    first = tiny.model.generate_ids(prompts, seed=1, **kw)
    assert tiny.model.generate_ids(prompts, seed=1, **kw) == first
    others = [tiny.model.generate_ids(prompts, seed=s, **kw) for s in (2, 3, 4)]
    assert all(o != first for o in others)
    # rows of one batch get different streams: the same prompt twice in a batch diverges
    twin = tiny.model.generate_ids([prompts[0], prompts[0]], seed=1, **kw)
    assert twin[0] != twin[1]


def test_generate_with_top_k_1_is_greedy(tiny):
    prompt = random_ids(TINY.vocab_size, 5, seed=1).tolist()
    greedy = tiny.model.generate_ids(prompt, max_new_tokens=50, eos_token_id=None)
    for params in (dict(top_k=1), dict(temperature=0.0)):
        sampled = tiny.model.generate_ids(prompt, max_new_tokens=50, eos_token_id=None, do_sample=True, seed=3,
                                          **params)
        assert sampled == greedy
