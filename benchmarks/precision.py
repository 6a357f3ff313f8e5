"""Accuracy and speed of reduced-precision weight and KV-cache storage against float32, on the same checkpoint, in
one run.

    python benchmarks/precision.py [--model DIR] [--positions 1024] [--out results/precision.json]

For each weights_dtype (with a float32 cache) and each cache dtype (with float32 weights): the largest logit
difference from float32 over every position of a few full-context sequences, how often the top-1 token agrees,
how many greedy tokens agree before the first divergence, and the decode speed as a ratio to float32 (median
step). Weights are timed at batch 1 after a short prompt, where they are all a step reads; the cache deep into
the context (900+ positions) at batch 1 and 4, where its share of the bytes read grows. With random-init weights
(all we have here) the logits are nearly flat, so top-1 and greedy agreement are far stricter tests than with real GPT-2 weights, whose top
tokens are usually separated by whole logits.
"""

from __future__ import annotations

import argparse
import os
import sys

import numpy as np

import kvcache
from kvcache import GPT2
from kvcache._core import Generator
from kvcache.arguments import positive_int, thread_count, usage_errors
from kvcache.demo import random_checkpoint

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))  # kvbench and speed.py, beside this script
from kvbench.kv_memory import CACHE_DTYPES  # noqa: E402
# the sibling script: one way to time a decode step
from speed import alternating_step_times, filler_prompt, in_rounds, step_times, write_json  # noqa: E402

DTYPES = ("float32", "bfloat16", "float16", "int8")
# The 16-bit cache's decode is timed deep in the context, where its share of the bytes read is largest.
DEEP_PROMPT, DEEP_STEPS = 900, 64


def decode_step_seconds(models: dict, rounds: int = 8, steps: int = 8) -> dict:
    """Median decode step at batch 1 after an 8-token prompt, per model, the models timed in rounds."""
    measures = {name: (lambda m=model: step_times(m, [filler_prompt(m, 8)], steps)) for name, model in models.items()}
    for measure in measures.values():
        measure()  # warm-up: pages the weights in, starts the threads
    return in_rounds(measures, rounds)


def deep_decode_step_seconds(model: GPT2, batch: int, prompt_len: int = DEEP_PROMPT, steps: int = DEEP_STEPS) -> dict:
    """Median decode step per cache dtype with prompt_len positions already cached in each of `batch` rows, the
    generators (one per dtype, prefilled once) stepped in alternation."""
    prompts = [filler_prompt(model, prompt_len, r) for r in range(batch)]
    generators = {dtype: Generator(model._core, prompts, max_new_tokens=steps + 1, cache_dtype=dtype)
                  for dtype in CACHE_DTYPES}
    return alternating_step_times(generators, steps)


def agreement(logits: np.ndarray, reference: np.ndarray, greedy: list, greedy_reference: list, prompt_len: int,
              greedy_tokens: int) -> dict:
    diff = np.abs(logits - reference)
    return {"max_abs_logit_diff": float(diff.max()), "mean_abs_logit_diff": float(diff.mean()),
            "logit_std": float(reference.std()),
            "top1_agreement": float((logits.argmax(-1) == reference.argmax(-1)).mean()),
            "greedy_tokens_agreeing": greedy_agreement(greedy_reference, greedy, prompt_len),
            "greedy_tokens": greedy_tokens}


def greedy_agreement(reference: list, other: list, prompt_len: int) -> int:
    """New tokens equal to the reference's before the first difference."""
    for i, (a, b) in enumerate(zip(reference[prompt_len:], other[prompt_len:])):
        if a != b:
            return i
    return len(reference) - prompt_len


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", help="Hugging Face GPT-2 directory (default: random-init 124M)")
    parser.add_argument("--positions", type=positive_int, default=1024, help="positions per sequence (<= n_ctx)")
    parser.add_argument("--sequences", type=positive_int, default=2)
    parser.add_argument("--greedy-tokens", type=positive_int, default=100)
    parser.add_argument("--threads", type=thread_count, default=None)
    parser.add_argument("--out", default=None)
    args = parser.parse_args(argv)
    if args.threads is not None:
        kvcache.set_num_threads(args.threads)
    directory = args.model or random_checkpoint()
    with usage_errors(parser):  # a missing or malformed --model
        models = {dtype: GPT2.from_pretrained(directory, weights_dtype=dtype) for dtype in DTYPES}
    reference = models["float32"]
    if args.positions > reference.config.n_ctx:
        parser.error(f"--positions {args.positions} exceeds the model's context of {reference.config.n_ctx}")
    if args.greedy_tokens + 16 > reference.config.n_ctx:
        parser.error(f"--greedy-tokens {args.greedy_tokens} + the 16-token prompt exceed the model's context of "
                     f"{reference.config.n_ctx}")
    if DEEP_PROMPT + DEEP_STEPS + 1 > reference.config.n_ctx:
        parser.error(f"the model's context of {reference.config.n_ctx} positions is too short: the cache's decode is "
                     f"timed after {DEEP_PROMPT} cached positions, {DEEP_PROMPT + DEEP_STEPS + 1} in all")
    rng = np.random.default_rng(0)
    tokens = rng.integers(0, reference.config.n_vocab, size=(args.sequences, args.positions))
    prompt = tokens[0, :16].tolist()
    logits = {dtype: m.forward(tokens) for dtype, m in models.items()}
    greedy = {dtype: m.generate_ids(prompt, args.greedy_tokens, eos_token_id=None) for dtype, m in models.items()}
    step = decode_step_seconds(models)

    results = {"model": os.path.abspath(directory), "threads": kvcache.get_num_threads(), "positions": int(tokens.size),
               "dtypes": {}, "cache_dtypes": {}}
    for dtype in DTYPES:
        results["dtypes"][dtype] = {
            "weights_bytes": models[dtype].weights_nbytes,
            **agreement(logits[dtype], logits["float32"], greedy[dtype], greedy["float32"], len(prompt),
                        args.greedy_tokens),
            "decode_tokens_per_s": 1.0 / step[dtype],
            "decode_speedup_vs_float32": step["float32"] / step[dtype],
        }

    # the KV cache's storage, with float32 weights: every position's keys and values go through the cache
    B, T = tokens.shape
    deep_steps = {batch: deep_decode_step_seconds(reference, batch) for batch in (1, 4)}
    for dtype in CACHE_DTYPES:
        cache_logits = reference.forward(tokens, cache=reference.new_cache(B, T, dtype=dtype))
        cache_greedy = reference.generate_ids(prompt, args.greedy_tokens, eos_token_id=None, cache_dtype=dtype)
        results["cache_dtypes"][dtype] = {
            "cache_bytes_per_position": reference.new_cache(1, 1, dtype=dtype).nbytes,
            **agreement(cache_logits, logits["float32"], cache_greedy, greedy["float32"], len(prompt),
                        args.greedy_tokens),
            **{f"deep_decode_batch{b}_tokens_per_s": b / s[dtype] for b, s in deep_steps.items()},
            **{f"deep_decode_batch{b}_speedup_vs_float32": s["float32"] / s[dtype] for b, s in deep_steps.items()},
        }
    print(report(results))
    if args.out:
        write_json(args.out, results)
    return results


def report(results: dict) -> str:
    lines = [f"accuracy over {results['positions']} positions against float32 weights",
             "| weights | MiB read per token | decode tokens/s | vs float32 | max abs logit diff (logit std) "
             "| top-1 agreement | greedy tokens agreeing |", "|---|---|---|---|---|---|---|"]
    for dtype, r in results["dtypes"].items():
        lines.append(f"| {dtype} | {r['weights_bytes'] / 2**20:.0f} | {r['decode_tokens_per_s']:.1f} "
                     f"| {r['decode_speedup_vs_float32']:.2f}x | {r['max_abs_logit_diff']:.2e} ({r['logit_std']:.2f}) "
                     f"| {r['top1_agreement']:.2%} | {r['greedy_tokens_agreeing']}/{r['greedy_tokens']} |")
    lines += ["", "the KV cache's storage (float32 weights), accuracy over the same positions; decode after "
                  f"{DEEP_PROMPT} cached positions per row",
              "| cache | KiB per position | batch 1 tokens/s | vs float32 | batch 4 tokens/s | vs float32 "
              "| max abs logit diff (logit std) | top-1 agreement | greedy tokens agreeing |",
              "|---|---|---|---|---|---|---|---|---|"]
    for dtype, r in results.get("cache_dtypes", {}).items():
        lines.append(f"| {dtype} | {r['cache_bytes_per_position'] / 1024:.0f} "
                     f"| {r['deep_decode_batch1_tokens_per_s']:.1f} | {r['deep_decode_batch1_speedup_vs_float32']:.2f}x "
                     f"| {r['deep_decode_batch4_tokens_per_s']:.1f} | {r['deep_decode_batch4_speedup_vs_float32']:.2f}x "
                     f"| {r['max_abs_logit_diff']:.2e} ({r['logit_std']:.2f}) "
                     f"| {r['top1_agreement']:.2%} | {r['greedy_tokens_agreeing']}/{r['greedy_tokens']} |")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
