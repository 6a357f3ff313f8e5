"""Run under LD_PRELOAD=count_allocs.so: prints, per case, the heap allocations of a whole generation with few and
with many decode steps. Steady-state decode allocates nothing iff the two counts are equal.

Only the cached decode loop is claimed allocation-free: the uncached baseline multiplies ever longer sequences with
OpenBLAS's threaded sgemm, which allocates internally at some sizes."""

import ctypes
import json
import os
import sys

import numpy as np

import kvcache
from kvcache import GPT2, GPT2Config, LlamaConfig

count = ctypes.CDLL(os.environ["KVCACHE_ALLOC_SHIM"]).kvcache_test_alloc_count
count.restype = ctypes.c_long

gpt2 = GPT2.from_config(GPT2Config(n_vocab=512, n_ctx=128, n_embd=64, n_head=4, n_layer=2), seed=0)
# a LLaMA of 6 query heads over 2 key/value heads, random tensors of the names and shapes the core expects
llama_config = LlamaConfig(n_vocab=512, n_ctx=128, n_embd=48, n_head=6, n_kv_head=2, n_layer=2, n_ff=64,
                           tie_word_embeddings=True)
rng = np.random.default_rng(0)
llama = kvcache._core.LlamaModel.from_tensors(llama_config, {
    name: rng.normal(0, 0.2, size=shape).astype(np.float32)
    for name, shape in kvcache._core.LlamaModel.expected_tensors(llama_config)})
CASES = {
    "greedy batch 1": dict(prompts=[[1, 2, 3]]),
    "sampling top-k top-p ragged batch 3": dict(prompts=[[1], [4, 5, 6, 7], [8, 9]], do_sample=True, temperature=0.9,
                                                top_k=40, top_p=0.9, seed=1),
    "sampling top-p, equal-length batch 4": dict(prompts=[[1, 2]] * 4, do_sample=True, top_p=0.8, seed=2),
    "greedy batch 8 (the largest streaming-kernel batch)": dict(prompts=[[i + 1] for i in range(8)]),
    "sampling batch 2 over a float16 cache": dict(prompts=[[1, 2], [3]], do_sample=True, seed=3, cache_dtype="float16"),
    "every logits processor and filter, scores kept, batch 2 with contexts": dict(
        prompts=[[1, 2], [3]], contexts=[[7, 8, 9], [4]], do_sample=True, seed=5, top_k=50, top_p=0.95, min_p=0.05,
        typical_p=0.9, repetition_penalty=1.3, no_repeat_ngram_size=2, min_new_tokens=3, eos_token_ids=[0, 5],
        keep_scores=True, keep_logits=True),
    "llama gqa greedy batch 1": dict(model=llama, prompts=[[1, 2, 3]]),
    "llama gqa sampling ragged batch 3 over a bfloat16 cache": dict(model=llama, prompts=[[1], [4, 5, 6, 7], [8, 9]],
                                                                   do_sample=True, top_p=0.9, seed=4,
                                                                   cache_dtype="bfloat16"),
    # a fresh cache of 16 positions per generation: the 64-step runs evict 4 positions about every 4 steps (values
    # moved, keys rotated), the 4-step runs never
    "llama windowed cache evicting, ragged batch 2 over a float16 cache": dict(
        model=llama, prompts=[[1, 2, 3], [4]], do_sample=True, seed=6,
        cache=lambda: llama.new_cache(2, 16, "float16", window=12, sinks=4, evict_chunk=4)),
}


def allocations(max_new_tokens, prompts, model=gpt2._core, **options):
    """(allocations while constructing the generator, allocations while running it to the end)"""
    if callable(options.get("cache")):
        options = dict(options, cache=options["cache"]())  # made before counting, as the cache is not the loop's
    start = count()
    generator = kvcache._core.Generator(model, prompts, max_new_tokens=max_new_tokens,
                                        **options)
    constructed = count()
    generator.run()
    ran = count() - constructed
    if "cache" in options:
        EVICTED.append([options["cache"].evicted(r) for r in range(options["cache"].batch_size)])
    return constructed - start, ran


EVICTED = []  # per generation over a given cache: the tokens each row evicted
results = {}
for name, case in CASES.items():
    EVICTED.clear()
    allocations(8, **case)  # warm-up: thread pool, lazy initialisations
    # Python itself may grow an arena at any point; a real per-step allocation shows up in every repetition,
    # so the smallest difference of three is the honest figure.
    few = [allocations(4, **case) for _ in range(3)]
    many = [allocations(64, **case) for _ in range(3)]
    results[name] = {"construct": [c for c, _ in few + many], "run_4": [r for _, r in few],
                     "run_64": [r for _, r in many],
                     "extra_per_60_steps": min(m[1] - f[1] for m, f in zip(many, few)),
                     "evicted": list(EVICTED)}
json.dump(results, sys.stdout)
