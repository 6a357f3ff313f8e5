"""Accuracy and speed of reduced-precision weight storage against float32, on the same checkpoint, in one run.

    python benchmarks/precision.py [--model DIR] [--positions 1024] [--out results/precision.json]

For each weights_dtype: the largest logit difference from float32 over every position of a few full-context
sequences, how often the top-1 token agrees, how many greedy tokens agree before the first divergence, and the
decode speed as a ratio to float32 (median step, batch 1). With random-init weights (all we have here) the logits
are nearly flat, so top-1 and greedy agreement are far stricter tests than with real GPT-2 weights, whose top
tokens are usually separated by whole logits.
"""

from __future__ import annotations

import argparse
import os

import numpy as np

from kvcache import GPT2
from kvcache.demo import random_checkpoint
from speed import filler_prompt, in_rounds, step_times, write_json  # the sibling script: one way to time a decode step

DTYPES = ("float32", "bfloat16", "int8")


def decode_step_seconds(models: dict, rounds: int = 8, steps: int = 8) -> dict:
    """Median decode step at batch 1 after an 8-token prompt, per model, the models timed in rounds."""
    measures = {name: (lambda m=model: step_times(m, [filler_prompt(m, 8)], steps)) for name, model in models.items()}
    for measure in measures.values():
        measure()  # warm-up: pages the weights in, starts the threads
    return in_rounds(measures, rounds)


def greedy_agreement(reference: list, other: list, prompt_len: int) -> int:
    """New tokens equal to the reference's before the first difference."""
    for i, (a, b) in enumerate(zip(reference[prompt_len:], other[prompt_len:])):
        if a != b:
            return i
    return len(reference) - prompt_len


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", help="Hugging Face GPT-2 directory (default: random-init 124M)")
    parser.add_argument("--positions", type=int, default=1024, help="positions per sequence (<= n_ctx)")
    parser.add_argument("--sequences", type=int, default=2)
    parser.add_argument("--greedy-tokens", type=int, default=100)
    parser.add_argument("--out", default=None)
    args = parser.parse_args(argv)
    directory = args.model or random_checkpoint()
    models = {dtype: GPT2.from_pretrained(directory, weights_dtype=dtype) for dtype in DTYPES}
    reference = models["float32"]
    rng = np.random.default_rng(0)
    tokens = rng.integers(0, reference.config.n_vocab, size=(args.sequences, args.positions))
    prompt = tokens[0, :16].tolist()
    logits = {dtype: m.forward(tokens) for dtype, m in models.items()}
    greedy = {dtype: m.generate_ids(prompt, args.greedy_tokens, eos_token_id=None) for dtype, m in models.items()}
    step = decode_step_seconds(models)

    results = {"model": os.path.abspath(directory), "positions": int(tokens.size), "dtypes": {}}
    for dtype in DTYPES:
        diff = np.abs(logits[dtype] - logits["float32"])
        top1 = (logits[dtype].argmax(-1) == logits["float32"].argmax(-1)).mean()
        results["dtypes"][dtype] = {
            "weights_bytes": models[dtype].weights_nbytes,
            "max_abs_logit_diff": float(diff.max()),
            "mean_abs_logit_diff": float(diff.mean()),
            "logit_std": float(logits["float32"].std()),
            "top1_agreement": float(top1),
            "greedy_tokens_agreeing": greedy_agreement(greedy["float32"], greedy[dtype], len(prompt)),
            "greedy_tokens": args.greedy_tokens,
            "decode_tokens_per_s": 1.0 / step[dtype],
            "decode_speedup_vs_float32": step["float32"] / step[dtype],
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
    return "\n".join(lines)


if __name__ == "__main__":
    main()
