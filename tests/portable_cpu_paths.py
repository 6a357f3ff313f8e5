"""Runs every engine path on a small model and saves what each gives, so that runs on two CPUs can be compared.

test_portable_cpus.py runs this file on emulated CPUs without AVX2 (qemu-user) and compares with this machine. It
imports only kvcache, its kernel test module kvcache_kernels and NumPy, so it starts in seconds under emulation.
Usage: python portable_cpu_paths.py OUT.npz CHECKPOINT_DIR
"""

from __future__ import annotations

import sys
from typing import Dict

import numpy as np

import kvcache_kernels
import kvcache
from kvcache import GPT2, GPT2Config, LlamaConfig

# Shapes that reach every tile of the kernels: 1 row (decode), odd row counts, a prefill longer than one row
# block, 8 and 9 decode rows (two row blocks), int8, bfloat16 and float16 weights, each cache dtype.
CONFIG = dict(n_vocab=1000, n_ctx=96, n_embd=128, n_head=4, n_layer=2)
PREFILL_SHAPES = [(1, 1), (1, 37), (9, 20)]
WEIGHTS_DTYPES = ["float32", "bfloat16", "float16", "int8"]
CACHE_DTYPES = ["float32", "float16", "bfloat16"]
GENERATE_OPTIONS = [dict(), dict(do_sample=True, seed=3, top_k=5, top_p=0.7, temperature=0.8), dict(use_cache=False)]
TEXT = "Héllo, wörld! 123 the cache  "
# Grouped-query attention (6 query heads over 2), and a cache long enough for decode's split attention (> 256)
LLAMA = dict(n_vocab=300, n_ctx=320, n_embd=96, n_head=6, n_kv_head=2, n_layer=1, n_ff=64, tie_word_embeddings=True)


def llama_paths(rng, out: Dict[str, np.ndarray]) -> None:
    config = LlamaConfig(**LLAMA)
    tensors = {name: rng.normal(0, 0.2, size=shape).astype(np.float32)
               for name, shape in kvcache._core.LlamaModel.expected_tensors(config)}
    for weights_dtype in WEIGHTS_DTYPES:
        model = kvcache._core.LlamaModel.from_tensors(config, tensors, weights_dtype)
        for cache_dtype in CACHE_DTYPES:
            cache = model.new_cache(2, 320, cache_dtype)
            prefill = model.forward(rng.integers(0, 300, (2, 290)), cache)
            steps = [model.forward(rng.integers(0, 300, (2, 1)), cache) for _ in range(2)]
            out[f"llama {weights_dtype} prefill + decode past 256, {cache_dtype} cache"] = np.concatenate(
                [prefill[:, -2:], *steps], axis=1)


def run_paths(checkpoint_dir: str) -> Dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    out: Dict[str, np.ndarray] = {}
    GPT2.from_config(GPT2Config(**CONFIG), seed=1).save_pretrained(checkpoint_dir)
    for weights_dtype in WEIGHTS_DTYPES:
        model = GPT2.from_pretrained(checkpoint_dir, weights_dtype=weights_dtype)
        for batch, length in PREFILL_SHAPES:
            out[f"{weights_dtype} prefill {batch}x{length}"] = model.forward(rng.integers(0, 1000, (batch, length)))
        for cache_dtype in CACHE_DTYPES:
            cache = model.new_cache(batch_size=8, dtype=cache_dtype)
            model.forward(rng.integers(0, 1000, (8, 20)), cache=cache)
            steps = [model.forward(rng.integers(0, 1000, (8, 1)), cache=cache) for _ in range(3)]
            out[f"{weights_dtype} decode, {cache_dtype} cache"] = np.stack(steps)
        prompts = [[int(t) for t in rng.integers(0, 1000, n)] for n in (3, 11, 5)]
        for options in GENERATE_OPTIONS:
            tokens = model.generate_ids(prompts, max_new_tokens=8, **options)
            out[f"{weights_dtype} generate_ids {options}"] = np.array(sum(tokens, []))
    llama_paths(rng, out)
    out["gelu"] = np.asarray(kvcache_kernels.gelu(rng.standard_normal((3, 4096)).astype(np.float32)))
    text_model = GPT2.from_config(GPT2Config(n_vocab=50257, n_ctx=64, n_embd=64, n_head=4, n_layer=1), seed=0)
    out["tokenizer round trip"] = np.array(text_model.tokenizer.encode(TEXT))
    out["generated text"] = np.frombuffer(text_model.generate(TEXT, max_new_tokens=4).encode(), np.uint8)
    return out


if __name__ == "__main__":
    np.savez(sys.argv[1], **run_paths(sys.argv[2]))
