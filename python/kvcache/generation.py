"""One generate call on the engine: the C++ Generator, and the cache it writes: its own, a cache the caller
continues (cache= / past_key_values=), or one that starts with blocks from the model's prefix cache."""

from __future__ import annotations

import os
from typing import List, Optional

import numpy as np

from . import _core
from ._core import KVCache
from .arguments import check_bool, check_dtype, check_float, check_int, check_seed


def check_context(model, rows: List[List[int]], max_new_tokens: int) -> int:
    """The longest prompt plus max_new_tokens; ValueError naming the first prompt that would pass n_ctx (the
    message of the engine's own check, for the caches made here)."""
    n_ctx = model.config.n_ctx
    for p, r in enumerate(rows):
        if len(r) + max_new_tokens > n_ctx:
            raise ValueError(f"prompt {p} of {len(r)} tokens plus max_new_tokens={max_new_tokens} is "
                             f"{len(r) + max_new_tokens} tokens, beyond n_ctx={n_ctx}")
    return max(len(r) for r in rows) + max_new_tokens


def own_cache(model, rows: List[List[int]], max_new_tokens: int, n: int, dtype: str) -> KVCache:
    """A cache for one call, as the engine's Generator would make: a row per generated sequence, the longest
    prompt plus max_new_tokens positions."""
    return model.new_cache(len(rows) * n, check_context(model, rows, max_new_tokens), dtype)


class GenerationRun:
    """The Generator of one call and the tokens each prompt did not feed it. rows: one list of ids per prompt; the
    generated rows are each prompt repeated num_return_sequences times.

    cache: the rows' ids are the tokens after what the cache holds (row p * n for prompt p); the returned sequences
    are those ids plus the new ones. past_key_values: as transformers, the rows are whole sequences whose first
    cache.get_seq_length() tokens the cache holds already; the returned sequences are the whole rows plus the new
    ones. prefix_cache: blocks of the prompts held there are copied in instead of computed, and the prompts' blocks
    are stored once prefilled."""

    def __init__(self, model, rows: List[List[int]], max_new_tokens: int, *, do_sample: bool = False,
                 temperature: float = 1.0, top_k: int = 0, top_p: float = 1.0, seed: Optional[int] = None,
                 eos_token_id: Optional[int] = None, use_cache: bool = True, cache_dtype: Optional[str] = None,
                 num_return_sequences: int = 1, cache: Optional[KVCache] = None,
                 past_key_values: Optional[KVCache] = None, prefix_cache=None, encoder_hidden_states=None):
        if not rows:
            raise ValueError("no prompt given")
        do_sample, use_cache = check_bool("do_sample", do_sample), check_bool("use_cache", use_cache)
        max_new_tokens = check_int("max_new_tokens", max_new_tokens, 0)
        n = self.num_return_sequences = check_int("num_return_sequences", num_return_sequences, 1)
        if eos_token_id is not None:
            check_int("eos_token_id", eos_token_id, 0)
        seed = check_seed(seed)
        if seed is None:
            seed = int.from_bytes(os.urandom(8), "little") if do_sample else 0
        if cache is not None and past_key_values is not None:
            raise ValueError("give cache= (ids after what it holds) or past_key_values= (whole sequences), not both")
        given = cache if cache is not None else past_key_values
        if given is not None:
            if not isinstance(given, KVCache):
                raise TypeError(f"{'cache' if cache is not None else 'past_key_values'} must be a KVCache, got "
                                f"{type(given).__name__}")
            if not use_cache:
                raise ValueError("use_cache=False recomputes every sequence from its start; it cannot continue a cache")
            if cache_dtype is not None and check_dtype("cache_dtype", cache_dtype) != given.dtype:
                raise ValueError(f"cache_dtype={cache_dtype!r} differs from the given cache's dtype {given.dtype!r}")
            if given.batch_size != len(rows) * n:
                raise ValueError(f"the cache has batch_size {given.batch_size}, but {len(rows)} prompts x "
                                 f"num_return_sequences={n} make {len(rows) * n} rows")
            cache_dtype = given.dtype
        cache_dtype = check_dtype("cache_dtype", "float32" if cache_dtype is None else cache_dtype)

        self.prefixes: List[List[int]] = [[] for _ in rows]  # the tokens of each prompt the generator is not fed
        fed = rows
        if past_key_values is not None:
            fed = [self._split_held(past_key_values, p * n, row, p) for p, row in enumerate(rows)]
        elif prefix_cache is not None and use_cache:
            cache, fed = self._from_prefix_cache(model, prefix_cache, rows, max_new_tokens, n, cache_dtype)
        if encoder_hidden_states is not None:  # a cross-attention model: its cross K/V go into the call's cache
            from .model import _as_encoder_states  # model.py imports this module

            states = _as_encoder_states(encoder_hidden_states)
            if states.shape[0] != len(rows):
                raise ValueError(f"encoder_hidden_states has batch {states.shape[0]}, but {len(rows)} prompts are "
                                 f"given: one encoder sequence per prompt")
            if cache is None and past_key_values is None:
                cache = own_cache(model, rows, max_new_tokens, n, cache_dtype)
            model._set_encoder_states(cache if cache is not None else past_key_values, np.repeat(states, n, axis=0))
        self.cache = cache if cache is not None else past_key_values
        self._prefix_cache = prefix_cache if self.cache is not None and given is None else None
        self._rows = rows
        self._stored = False
        self.generator = _core.Generator(
            model._core, fed, max_new_tokens=max_new_tokens, do_sample=do_sample,
            temperature=check_float("temperature", temperature), top_k=check_int("top_k", top_k),
            top_p=check_float("top_p", top_p), seed=seed, eos_token_id=-1 if eos_token_id is None else eos_token_id,
            use_cache=use_cache, cache_dtype=cache_dtype, num_return_sequences=n, cache=self.cache)

    def _split_held(self, cache: KVCache, row: int, ids: List[int], p: int) -> List[int]:
        held = cache.get_seq_length(row)
        if held > len(ids):
            raise ValueError(f"cache row {row} holds {held} positions, more than the {len(ids)} tokens of prompt {p}: "
                             f"past_key_values takes whole sequences (the cached tokens and those after them)")
        if held == len(ids):  # every token is held, but not the last one's logits: it is computed again
            cache.crop(held - 1, row=row)
            held -= 1
        self.prefixes[p] = ids[:held]
        return ids[held:]

    def _from_prefix_cache(self, model, prefix_cache, rows, max_new_tokens, n, dtype):
        cache = own_cache(model, rows, max_new_tokens, n, dtype)
        fed = []
        for p, row in enumerate(rows):
            blocks = prefix_cache.lookup(row, dtype)
            if blocks:
                cache.append(p * n, np.concatenate(blocks, axis=3))
            held = len(blocks) * prefix_cache.block_size
            self.prefixes[p] = row[:held]
            fed.append(row[held:])
        return cache, fed

    def step(self) -> bool:
        more = self.generator.step()
        if self._prefix_cache is not None and not self._stored:  # after the prefill: the prompts' K/V are there
            self._stored = True
            for p, row in enumerate(self._rows):
                self._prefix_cache.store(row, self.cache, p * self.num_return_sequences)
        return more

    def run(self) -> None:
        if self._prefix_cache is not None and not self._stored:
            self.step()
        self.generator.run()

    @property
    def sequences(self) -> List[List[int]]:
        n = self.num_return_sequences
        return [self.prefixes[r // n] + list(s) for r, s in enumerate(self.generator.sequences)]
