"""The main job: generate text with and without the KV cache and print both times and the speedup.

    python -m kvcache.demo                       # random-init GPT-2 124M, written once to a cache folder
    python -m kvcache.demo --model path/to/dir   # real weights: a Hugging Face GPT-2 directory
    python -m kvcache.demo --model gpt2          # real weights from the local Hugging Face cache
"""

from __future__ import annotations

import argparse
import os
import time

from . import get_num_threads, set_num_threads
from ._core import GPT2Config
from .arguments import positive_int, thread_count, usage_errors
from .model import GPT2

DEFAULT_CHECKPOINT = os.path.join(os.environ.get("XDG_CACHE_HOME", os.path.expanduser("~/.cache")), "kvcache",
                                  "gpt2-124M-random-init")


def random_checkpoint(directory: str = DEFAULT_CHECKPOINT) -> str:
    """A GPT-2 124M checkpoint with random weights (seed 0), written on first use and reused after."""
    if not os.path.isfile(os.path.join(directory, "model.safetensors")):
        print(f"No --model given: writing a random-init GPT-2 124M checkpoint to {directory} (once).")
        GPT2.from_config(GPT2Config(), seed=0).save_pretrained(directory)
    else:
        print(f"No --model given: using the random-init GPT-2 124M checkpoint in {directory}.")
    print("Its weights are random, so the text is gibberish; the timings are those of the real model's shape.")
    return directory


def timed_generate(model: GPT2, prompt: str, max_new_tokens: int, use_cache: bool) -> tuple[str, float]:
    start = time.perf_counter()
    text = model.generate(prompt, max_new_tokens=max_new_tokens, eos_token_id=None, use_cache=use_cache)
    return text, time.perf_counter() - start


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(prog="python -m kvcache.demo", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", help="Hugging Face GPT-2 directory or model name (default: random-init 124M)")
    parser.add_argument("--prompt", default="The key-value cache makes generation fast because")
    parser.add_argument("--max-new-tokens", type=positive_int, default=100)
    parser.add_argument("--threads", type=thread_count, default=None,
                        help="kernel threads (default: OMP_NUM_THREADS, else all cores)")
    args = parser.parse_args(argv)
    if args.threads is not None:
        set_num_threads(args.threads)

    with usage_errors(parser):  # a missing or malformed checkpoint, a prompt the tokenizer refuses
        model = GPT2.from_pretrained(args.model or random_checkpoint())
        n_prompt = len(model.encode(args.prompt))
        if n_prompt + args.max_new_tokens > model.config.n_ctx:
            raise ValueError(f"the prompt's {n_prompt} tokens + --max-new-tokens {args.max_new_tokens} exceed the "
                             f"model's context of {model.config.n_ctx} positions")
    print(f"Model: {model.config}, {model.weights_nbytes / 2**20:.0f} MiB of float32 weights, "
          f"{get_num_threads()} threads")
    print(f"Prompt: {args.prompt!r} ({n_prompt} tokens); generating {args.max_new_tokens} new tokens, greedy\n")

    timed_generate(model, args.prompt, min(4, args.max_new_tokens), use_cache=True)  # warm-up: page in the weights, start the threads
    cached_text, cached_s = timed_generate(model, args.prompt, args.max_new_tokens, use_cache=True)
    uncached_text, uncached_s = timed_generate(model, args.prompt, args.max_new_tokens, use_cache=False)
    cache = model.new_cache(1, n_prompt + args.max_new_tokens)

    print(cached_text, "\n")
    print(f"with KV cache:    {cached_s:8.3f} s  ({args.max_new_tokens / cached_s:7.1f} tokens/s)")
    print(f"without KV cache: {uncached_s:8.3f} s  ({args.max_new_tokens / uncached_s:7.1f} tokens/s)")
    print(f"speedup:          {uncached_s / cached_s:8.1f} x")
    print(f"KV cache for {n_prompt + args.max_new_tokens} positions: {cache.nbytes / 2**20:.2f} MiB "
          f"(2 x {model.config.n_layer} layers x {n_prompt + args.max_new_tokens} positions x "
          f"{model.config.n_embd} x 4 bytes)")
    print("identical text with and without the cache:", cached_text == uncached_text)


if __name__ == "__main__":
    main()
