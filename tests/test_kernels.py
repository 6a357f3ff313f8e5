"""Fast kernels against their naive twins (and float64 NumPy), and thread-count invariance."""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest

import kvcache
from kvcache import GPT2, GPT2Config
import kvcache_kernels as kernels  # the test module, not the engine (KVCACHE_KERNEL_TESTS=ON)
from conftest import random_ids

# Fast and naive kernels sum in different orders in float32: allow 1e-4 of the output's scale.
KERNEL_RTOL = 1e-4


def rel_err(got, want) -> float:
    want = np.asarray(want, dtype=np.float64)
    return float(np.max(np.abs(np.asarray(got, dtype=np.float64) - want)) / max(np.max(np.abs(want)), 1e-30))


def rand(rng, *shape):
    return rng.standard_normal(shape).astype(np.float32)


# Weights are given output-major (OC, K) and stored as the model stores them: float32 in panels of 16 outputs
# (one kernel for every row count: register tiles of 2-5 rows over 3-1 panels, of 1 or 6 rows over one; for 7-11
# decode rows, one tile of all of them with AVX-512's 32 registers, else two row blocks over 64-input pieces of
# one panel, as for 12-16 rows with AVX-512; K not always a multiple of 64), 16/8-bit output-major (the streaming
# kernel up to 16 rows, the panel kernel above). The shapes cover every tile, ragged last panels
# (OC not a multiple of 16), several passes over K (K > 256) and over rows (N > 512). The lm_head shape
# (1, 768, 50257) is the largest product of a decode step.
SHAPES = [(1, 1, 1), (1, 64, 192), (1, 768, 2304), (1, 768, 50257), (2, 300, 97), (3, 5, 17), (4, 48, 211),
          (5, 20, 40), (6, 70, 33), (7, 33, 65), (8, 3072, 768), (9, 256, 100), (10, 130, 49), (11, 513, 200),
          (12, 200, 70), (13, 100, 55), (14, 64, 33), (15, 129, 50), (16, 40, 37), (64, 128, 512), (130, 768, 3072),
          (520, 300, 50)]


@pytest.mark.parametrize("N, K, OC", SHAPES)
@pytest.mark.parametrize("with_bias", [False, True], ids=["no-bias", "bias"])
def test_linear_matches_naive(N, K, OC, with_bias):
    rng = np.random.default_rng(N * K + OC)
    inp, weight = rand(rng, N, K), rand(rng, OC, K)
    bias = rand(rng, OC) if with_bias else None
    fast = kernels.linear(inp, weight, bias)
    naive = kernels.linear(inp, weight, bias, naive=True)
    exact = inp.astype(np.float64) @ weight.astype(np.float64).T + (0 if bias is None else bias.astype(np.float64))
    assert fast.shape == naive.shape == (N, OC)
    assert rel_err(fast, naive) < KERNEL_RTOL
    assert rel_err(fast, exact) < KERNEL_RTOL
    assert rel_err(naive, exact) < KERNEL_RTOL


@pytest.mark.parametrize("dtype", ["bfloat16", "float16", "int8"])
@pytest.mark.parametrize("N, K, OC", [s for s in SHAPES if s[2] < 10000])
def test_reduced_precision_linear_matches_naive_on_stored_values(dtype, N, K, OC):
    """The fast kernels widen bf16 / float16 / int8 exactly: they equal float32 math on the values the storage holds."""
    rng = np.random.default_rng(N + K + OC)
    inp, weight, bias = rand(rng, N, K), rand(rng, OC, K), rand(rng, OC)
    stored = kernels.stored_values(weight, dtype)
    fast = kernels.linear(inp, weight, bias, weights_dtype=dtype)
    naive = kernels.linear(inp, stored, bias, naive=True)
    assert rel_err(fast, naive) < KERNEL_RTOL


@pytest.mark.parametrize("dtype", ["int8", "float16"])
@pytest.mark.parametrize("N, K, OC", [s for s in SHAPES if s[0] <= 16 and s[2] < 10000])
def test_multiversioned_decode_kernel_matches_the_avx2_one(dtype, N, K, OC):
    """int8 and float16 decode run on a kernel built for AVX2 (+ F16C) where the CPU has it; the multiversioned one
    that other CPUs use (float16 widened with integer arithmetic there) must give the same products (both equal
    float32 math on the stored values)."""
    rng = np.random.default_rng(N * OC + K)
    inp, weight, bias = rand(rng, N, K), rand(rng, OC, K), rand(rng, OC)
    naive = kernels.linear(inp, kernels.stored_values(weight, dtype), bias, naive=True)
    fast = kernels.linear(inp, weight, bias, weights_dtype=dtype)
    portable = kernels.linear(inp, weight, bias, weights_dtype=dtype, isa="portable")
    assert rel_err(portable, naive) < KERNEL_RTOL
    assert rel_err(fast, naive) < KERNEL_RTOL


@pytest.mark.parametrize("N, K, OC", [s for s in SHAPES if s[2] < 10000])
def test_float32_panel_kernel_portable_build_matches_the_avx2_one(N, K, OC):
    """CPUs without AVX2 + FMA run the portable build of the panel kernel: the same tiles in the same order, without
    fused multiply-adds. Both must be within float32 rounding of float64 math."""
    rng = np.random.default_rng(N * K + 7 * OC)
    inp, weight, bias = rand(rng, N, K), rand(rng, OC, K), rand(rng, OC)
    exact = inp.astype(np.float64) @ weight.astype(np.float64).T + bias.astype(np.float64)
    assert rel_err(kernels.linear(inp, weight, bias), exact) < KERNEL_RTOL
    assert rel_err(kernels.linear(inp, weight, bias, isa="portable"), exact) < KERNEL_RTOL


FAST_ISAS = [isa for isa in kernels.available_isas() if isa != "portable"]


@pytest.mark.parametrize("isa", FAST_ISAS)
@pytest.mark.parametrize("K, OC", [(768, 2304), (300, 97), (40, 37)])
def test_float32_rows_do_not_depend_on_the_rows_beside_them(isa, K, OC):
    """Every tile sums an output in the same order (k = 0 .. K-1), so a row's products are the same bits alone, in
    any decode batch (one tile of 7-11 rows, two row blocks over 64-input pieces, 6 rows and then the rest over a
    group of panels: which of them depends on the build) or in a prefill of 23 rows: batching never changes a
    token."""
    rng = np.random.default_rng(K + OC)
    inp, weight, bias = rand(rng, 23, K), rand(rng, OC, K), rand(rng, OC)
    together = kernels.linear(inp, weight, bias, isa=isa)
    for n in range(1, 17):
        np.testing.assert_array_equal(kernels.linear(inp[:n], weight, bias, isa=isa), together[:n])
    np.testing.assert_array_equal(kernels.linear(inp[17:18], weight, bias, isa=isa), together[17:18])


@pytest.mark.skipif("avx512" not in kernels.available_isas(), reason="this CPU has no AVX-512 VL")
@pytest.mark.parametrize("N, K, OC", [(n, 200, 70) for n in range(1, 17)] + [s for s in SHAPES if s[2] < 10000])
def test_float32_panel_kernel_avx512_build_is_the_avx2_one_bit_for_bit(N, K, OC):
    """The AVX-512 build runs larger decode tiles (32 registers), yet sums every output in the same order with the
    same FMAs: its products are the AVX2 build's, bit for bit, at every decode row count and in a prefill."""
    rng = np.random.default_rng(N * 3 + K + OC)
    inp, weight, bias = rand(rng, N, K), rand(rng, OC, K), rand(rng, OC)
    np.testing.assert_array_equal(kernels.linear(inp, weight, bias, isa="avx512"),
                                  kernels.linear(inp, weight, bias, isa="avx2"))
    np.testing.assert_array_equal(kernels.linear(inp, weight, None, isa="avx512"),
                                  kernels.linear(inp, weight, None, isa="avx2"))


def test_kernel_builds_are_named_and_checked():
    """The tests choose a build by name; an unknown name, or one this CPU cannot run, is refused, never ignored."""
    isas = kernels.available_isas()
    assert isas[0] == "portable" and set(isas) <= {"portable", "avx2", "avx512"}
    inp, weight = np.ones((2, 8), np.float32), np.ones((3, 8), np.float32)
    with pytest.raises(ValueError, match="isa must be 'best', 'portable', 'avx2' or 'avx512'; got 'sse'"):
        kernels.linear(inp, weight, isa="sse")
    with pytest.raises(ValueError, match="got 'AVX2'"):
        kernels.attend(np.ones(8, np.float32), np.ones((2, 8), np.float32), np.ones((2, 8), np.float32), isa="AVX2")
    for isa in ("avx2", "avx512"):
        if isa not in isas:
            with pytest.raises(ValueError, match=f"isa '{isa}' is not available on this machine"):
                kernels.linear(inp, weight, isa=isa)
        else:
            np.testing.assert_array_equal(kernels.linear(inp, weight, isa=isa), np.full((2, 3), 8.0, np.float32))


@pytest.mark.parametrize("dtype", ["bfloat16", "float16", "int8"])
@pytest.mark.parametrize("N, K, OC", [(17, 64, 40), (23, 300, 100), (40, 4096, 2100)])  # 2100: three blocks
def test_reduced_precision_prefill_is_the_float32_product_of_the_stored_values(restore_threads, dtype, N, K, OC):
    """Prefill with 16/8-bit weights widens a block of outputs at a time into float32 panels and runs the float32
    kernel over them: the same bits as the float32 model's on the stored values, on any thread count (through
    OpenBLAS they moved by about 1e-5 with the thread count). 2100 outputs of K = 4096 take three blocks (1024
    outputs each, the last ragged)."""
    rng = np.random.default_rng(N + K)
    inp, weight, bias = rand(rng, N, K), rand(rng, OC, K), rand(rng, OC)
    stored = kernels.stored_values(weight, dtype)
    float32 = kernels.linear(inp, stored, bias)
    for threads in (1, 2, 3):
        kvcache.set_num_threads(threads)
        np.testing.assert_array_equal(kernels.linear(inp, weight, bias, weights_dtype=dtype), float32)
    portable = kernels.linear(inp, weight, bias, weights_dtype=dtype, isa="portable")
    assert rel_err(portable, float32) < KERNEL_RTOL


@pytest.mark.parametrize("dtype, max_rel", [("float32", 0.0), ("bfloat16", 2.0**-8), ("float16", 2.0**-11),
                                            ("int8", 0.5 / 127)])
def test_stored_values_are_within_the_format_precision(dtype, max_rel):
    """bf16 keeps 8 significant bits (relative error <= 2^-9, allow 2^-8), float16 11 (<= 2^-12, allow 2^-11; below
    its normal range 2^-14 its steps are 2^-24 apart); int8 errs by at most half a step of each row's scale
    (max |w| / 127)."""
    rng = np.random.default_rng(1)
    weight = rand(rng, 64, 256)
    err = np.abs(kernels.stored_values(weight, dtype) - weight)
    if dtype == "int8":
        assert np.all(err <= max_rel * np.abs(weight).max(axis=1, keepdims=True) * 1.0001)
    elif dtype == "float16":
        assert np.all(err <= np.maximum(max_rel * np.abs(weight), 2.0**-25))
    else:
        assert np.all(err <= max_rel * np.abs(weight))


def test_float16_weights_round_as_ieee_half():
    """Round to nearest even, as NumPy's (and torch's) float16: ties both ways, subnormals, the smallest and largest
    halves, NaN kept. A value beyond 65504 is refused, not clamped (checkpoints: tests/test_reduced_precision.py)."""
    rng = np.random.default_rng(2)
    edges = np.array([0.0, -0.0, 1.0, 1.0 + 2.0**-11, 1.0 + 3 * 2.0**-11, 2.0**-24, 2.0**-25, 3 * 2.0**-26, 2.0**-26,
                      2.0**-14 - 2.0**-25, 65504.0, -65504.0, 65503.0, 1e-30, -3.1e-5, np.nan], np.float32)
    weight = np.concatenate([edges, rand(rng, 1000) * 10.0 ** rng.integers(-8, 5, 1000)]).astype(np.float32)
    weight = weight[: weight.size // 8 * 8].reshape(8, -1)
    stored = kernels.stored_values(weight, "float16")
    want = weight.astype(np.float16).astype(np.float32)
    np.testing.assert_array_equal(stored, want)  # NaN where NaN
    assert np.signbit(stored[0, 1])
    for beyond in (65504.5, 65520.0, -1e9, np.inf):
        with pytest.raises(ValueError, match="beyond float16's range"):
            kernels.stored_values(np.full((2, 3), beyond, np.float32), "float16")


def attend_reference(q, keys, values):
    q, keys, values = (np.asarray(a, dtype=np.float64) for a in (q, keys, values))
    scores = keys @ q / np.sqrt(q.size)
    w = np.exp(scores - scores.max())
    return (w / w.sum()) @ values


@pytest.mark.parametrize("length, HS", [(1, 1), (1, 64), (2, 16), (17, 64), (1024, 64), (300, 128)])
@pytest.mark.parametrize("scale", [1.0, 8.0], ids=["unit", "peaked"])  # peaked: softmax far from uniform
def test_attend_matches_naive(length, HS, scale):
    rng = np.random.default_rng(length * HS)
    q, keys, values = rand(rng, HS) * scale, rand(rng, length, HS), rand(rng, length, HS)
    fast = kernels.attend(q, keys, values)
    naive = kernels.attend(q, keys, values, naive=True)
    exact = attend_reference(q, keys, values)
    assert fast.shape == naive.shape == (HS,)
    assert rel_err(fast, naive) < KERNEL_RTOL
    assert rel_err(fast, exact) < KERNEL_RTOL


@pytest.mark.parametrize("start, T, HS", [(0, 16, 64), (0, 100, 32), (7, 20, 64), (500, 24, 64), (0, 512, 64),
                                          (300, 200, 64)])
def test_attend_block_matches_query_by_query(start, T, HS):
    """The prefill path (BLAS products + causal softmax) equals attending one query at a time, naively."""
    rng = np.random.default_rng(start + T)
    q, keys, values = rand(rng, T, HS), rand(rng, start + T, HS), rand(rng, start + T, HS)
    block = kernels.attend_block(q, keys, values, start)
    for t in range(T):
        n = start + t + 1
        naive = kernels.attend(q[t], keys[:n], values[:n], naive=True)
        assert rel_err(block[t], naive) < KERNEL_RTOL, t


def test_attend_single_key_returns_its_value():
    rng = np.random.default_rng(0)
    values = rand(rng, 1, 24)
    np.testing.assert_allclose(kernels.attend(rand(rng, 24), rand(rng, 1, 24), values), values[0], rtol=1e-6)


def test_kernel_argument_checks():
    with pytest.raises(ValueError, match="kernel arguments"):
        kernels.linear(np.zeros((2, 3), np.float32), np.zeros((5, 4), np.float32))
    with pytest.raises(ValueError, match="bias"):
        kernels.linear(np.zeros((2, 3), np.float32), np.zeros((5, 3), np.float32), np.zeros(4, np.float32))
    with pytest.raises(ValueError, match="kernel arguments"):
        kernels.attend(np.zeros(4, np.float32), np.zeros((0, 4), np.float32), np.zeros((0, 4), np.float32))


# ---- threads -----------------------------------------------------------------------------------------------------

@pytest.fixture
def restore_threads():
    before = kvcache.get_num_threads()
    yield
    kvcache.set_num_threads(before)


@pytest.mark.parametrize("dtype", ["float32", "bfloat16", "float16", "int8"])
def test_thread_count_does_not_change_results(restore_threads, dtype):
    """Every output of every kernel is computed whole by one thread, in one order: the same bits on 1-3 threads, in
    every weight format (16/8-bit prefill went through OpenBLAS, whose sums moved by about 1e-6 with the thread
    count). C=256 and 3x30-token prefills are large enough for the threaded paths (products, layernorm, gelu,
    attention) to split the work."""
    model = GPT2.from_config(GPT2Config(n_vocab=2000, n_ctx=128, n_embd=256, n_head=4, n_layer=4), seed=0,
                             weights_dtype=dtype)
    ids = random_ids(2000, (3, 40), seed=12)
    runs = {}
    for n in (1, 2, 3):
        kvcache.set_num_threads(n)
        assert kvcache.get_num_threads() == n
        cache = model.new_cache(batch_size=3)
        prefill = model.forward(ids[:, :30], cache=cache)
        steps = [model.forward(ids[:, t:t + 1], cache=cache) for t in range(30, 40)]
        runs[n] = (model.forward(ids), np.concatenate([prefill] + steps, axis=1),
                   model.generate_ids(ids.tolist(), max_new_tokens=20, eos_token_id=None))
    for n in (2, 3):
        for got, want in zip(runs[n][:2], runs[1][:2]):
            np.testing.assert_array_equal(got, want)
        assert runs[n][2] == runs[1][2]


@pytest.mark.parametrize("dtype", ["float32", "bfloat16", "float16", "int8"])
def test_decode_products_do_not_depend_on_the_thread_count(restore_threads, dtype):
    """Up to 16 rows the threads take chunks of whole panels (float32) or of whole 18-output tiles (16/8-bit
    weights) in an order that depends on timing (stream_split.h); every output is still summed whole, by one
    thread, in one order, so the bits are the same on any number of threads."""
    rng = np.random.default_rng(3)
    weight = rand(rng, 5000, 300)  # hundreds of chunks: shares are cut and taken in many places
    for n in (1, 3, 7, 16):
        inp = rand(rng, n, 300)
        results = []
        for threads in (1, 2, 3, 4):
            kvcache.set_num_threads(threads)
            results.append(kernels.linear(inp, weight, weights_dtype=dtype))
        for r in results[1:]:
            np.testing.assert_array_equal(r, results[0])


@pytest.mark.parametrize("threads", [1, 2, 3])
@pytest.mark.parametrize("items, chunk", [(0, 1), (1, 4), (10, 3), (1000, 7), (5, 100)])
def test_stream_split_takes_every_item_exactly_once(restore_threads, threads, items, chunk):
    kvcache.set_num_threads(threads)
    taken, owner = kernels.stream_split(items, chunk)
    assert taken.tolist() == [1] * items
    assert set(owner.tolist()) <= set(range(threads))


def test_stream_split_helps_a_slow_thread(restore_threads):
    """Thread 0 sleeps 2 ms per chunk: thread 1 ends its own share at once, then takes chunks from the back of
    thread 0's, while thread 0 takes its share from the front."""
    kvcache.set_num_threads(2)
    taken, owner = kernels.stream_split(400, 5, slow_thread=0)
    assert taken.tolist() == [1] * 400
    assert np.count_nonzero(owner == 1) > 300
    by_slow = np.flatnonzero(owner == 0)
    assert by_slow.tolist() == list(range(len(by_slow)))  # a run from the front of its share


@pytest.mark.parametrize("n", [0, -1, 257, 100_000, 2**31 - 1])
def test_set_num_threads_rejects_counts_outside_1_to_256(restore_threads, n):
    """100000 threads crashed the process (libgomp could not create them) before the upper bound."""
    before = kvcache.get_num_threads()
    with pytest.raises(ValueError, match=rf"num_threads must be in \[1, 256\], got {n}"):
        kvcache.set_num_threads(n)
    assert kvcache.get_num_threads() == before


@pytest.mark.parametrize("n, error", [(True, TypeError), (2.0, TypeError), ("2", TypeError), (2**40, ValueError)])
def test_set_num_threads_rejects_non_ints(restore_threads, n, error):
    with pytest.raises(error, match=r"\bn must"):
        kvcache.set_num_threads(n)


def _default_threads(omp_num_threads):
    """get_num_threads() in a fresh process started with OMP_NUM_THREADS set to this (None: unset)."""
    env = {k: v for k, v in os.environ.items() if k != "OMP_NUM_THREADS"}
    if omp_num_threads is not None:
        env["OMP_NUM_THREADS"] = omp_num_threads
    out = subprocess.run([sys.executable, "-c", "import kvcache; print(kvcache.get_num_threads())"], env=env,
                         capture_output=True, text=True, check=True).stdout
    return int(out)


@pytest.mark.parametrize("omp_num_threads, expected", [
    (None, "cores"), ("1", 1), ("3", 3), ("3,2", 3), ("256", 256),
    ("0", "cores"), ("257", "cores"), ("-2", "cores"), ("two", "cores"), ("", "cores"), ("2x", "cores"),
])
def test_default_thread_count_is_omp_num_threads_else_every_core(omp_num_threads, expected):
    """Users who share a machine set OMP_NUM_THREADS for PyTorch and NumPy; it was ignored. A value that is not a
    count in [1, 256] falls back to every core (as unset), rather than failing at import."""
    cores = min(len(os.sched_getaffinity(0)), 256)
    assert _default_threads(omp_num_threads) == (cores if expected == "cores" else expected)


def test_set_num_threads_overrides_omp_num_threads():
    env = dict(os.environ, OMP_NUM_THREADS="3")
    out = subprocess.run([sys.executable, "-c", "import kvcache; kvcache.set_num_threads(1); "
                          "print(kvcache.get_num_threads())"], env=env, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "1"


@pytest.mark.parametrize("n", [1, 7, 8, 100, 6143, 6144, 24577, 40000])  # both sides of the split to threads
def test_gelu_matches_naive(n):
    """The vectorised GELU (x * sigmoid(2u), one exp) equals the tanh form in double, over the range activations
    take and far beyond it (where exp would overflow)."""
    rng = np.random.default_rng(n)
    x = (rng.standard_normal(n) * 4).astype(np.float32)
    x[: min(n, 4)] = np.array([0.0, -100.0, 100.0, 1e-4], dtype=np.float32)[: min(n, 4)]
    fast, naive = kernels.gelu(x), kernels.gelu(x, naive=True)
    np.testing.assert_allclose(fast, naive, rtol=2e-6, atol=2e-7)
