"""One generate call on the engine: the C++ Generator, and the cache it writes: its own, a cache the caller
continues (cache= / past_key_values=), or one that starts with blocks from the model's prefix cache."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import List, Optional, Tuple

import numpy as np

from . import _core
from ._core import KVCache
from .generation_config import GenerationConfig
from .speculative import SpeculationStats


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


@dataclass
class GenerateOutput:
    """return_dict_in_generate=True: the rows and, per step, what each token was chosen from (as transformers'
    GenerateDecoderOnlyOutput). Rows that finished early have -inf scores and NaN log-probabilities after their end."""

    sequences: List[List[int]]
    scores: Optional[Tuple[np.ndarray, ...]] = None  # per step (rows, n_vocab): output_scores
    logits: Optional[Tuple[np.ndarray, ...]] = None  # per step (rows, n_vocab): output_logits
    # per row, the log-probability of each new token under the scores it was chosen from (log-softmax of them)
    logprobs: List[np.ndarray] = field(default_factory=list)
    # per row, (new tokens, top_logprobs) ids and their log-probabilities, likeliest first
    top_logprobs: List[Tuple[np.ndarray, np.ndarray]] = field(default_factory=list)
    texts: Optional[List[str]] = None  # generate(): the decoded sequences
    speculation: Optional[SpeculationStats] = None  # speculative decoding: rounds, drafted and accepted tokens


def _log_softmax(scores: np.ndarray) -> np.ndarray:
    top = scores.max(axis=-1, keepdims=True)
    with np.errstate(invalid="ignore", divide="ignore"):  # all -inf rows (finished) give NaN, as documented
        shifted = scores.astype(np.float64) - top
        return shifted - np.log(np.exp(shifted).sum(axis=-1, keepdims=True))


class GenerationRun:
    """The Generator of one call and the tokens each prompt did not feed it. rows: one list of ids per prompt; the
    generated rows are each prompt repeated num_return_sequences times.

    cache: the rows' ids are the tokens after what the cache holds (row p * n for prompt p); the returned sequences
    are those ids plus the new ones. past_key_values: as transformers, the rows are whole sequences whose first
    cache.get_seq_length() tokens the cache holds already; the returned sequences are the whole rows plus the new
    ones. prefix_cache: blocks of the prompts held there are copied in instead of computed, and the prompts' blocks
    are stored once prefilled. contexts: per prompt, the tokens a given cache holds before it (a session's history),
    which the repetition penalty and n-gram bans read."""

    def __init__(self, model, rows: List[List[int]], config: GenerationConfig, *, prefix_cache=None,
                 contexts: Optional[List[List[int]]] = None):
        if not rows:
            raise ValueError("no prompt given")
        c = config
        n = self.num_return_sequences = c.num_return_sequences
        cache, past_key_values, cache_dtype = c.cache, c.past_key_values, c.cache_dtype
        seed = c.seed
        if seed is None:
            seed = int.from_bytes(os.urandom(8), "little") if c.do_sample else 0
        if cache is not None and past_key_values is not None:
            raise ValueError("give cache= (ids after what it holds) or past_key_values= (whole sequences), not both")
        given = cache if cache is not None else past_key_values
        if given is not None:
            if not isinstance(given, KVCache):
                raise TypeError(f"{'cache' if cache is not None else 'past_key_values'} must be a KVCache, got "
                                f"{type(given).__name__}")
            if not c.use_cache:
                raise ValueError("use_cache=False recomputes every sequence from its start; it cannot continue a cache")
            if cache_dtype is not None and cache_dtype != given.dtype:
                raise ValueError(f"cache_dtype={cache_dtype!r} differs from the given cache's dtype {given.dtype!r}")
            if given.batch_size != len(rows) * n:
                raise ValueError(f"the cache has batch_size {given.batch_size}, but {len(rows)} prompts x "
                                 f"num_return_sequences={n} make {len(rows) * n} rows")
            cache_dtype = given.dtype
        cache_dtype = "float32" if cache_dtype is None else cache_dtype
        # the longest sequence as transformers would see it: what a continued cache holds, then the ids
        longest = max(len(r) + (cache.get_seq_length(p * n) if cache is not None else 0) for p, r in enumerate(rows))
        max_new_tokens = self.max_new_tokens = new_token_budget(c, longest)
        min_new_tokens = max(c.min_new_tokens, c.min_length - longest)

        self.prefixes: List[List[int]] = [[] for _ in rows]  # the tokens of each prompt the generator is not fed
        fed = rows
        if past_key_values is not None:
            fed = [self._split_held(past_key_values, p * n, row, p) for p, row in enumerate(rows)]
        elif prefix_cache is not None and c.use_cache:
            cache, fed = self._from_prefix_cache(model, prefix_cache, rows, max_new_tokens, n, cache_dtype)
        if c.encoder_hidden_states is not None:  # a cross-attention model: its cross K/V go into the call's cache
            from .model import _as_encoder_states  # model.py imports this module

            states = _as_encoder_states(c.encoder_hidden_states)
            if states.shape[0] != len(rows):
                raise ValueError(f"encoder_hidden_states has batch {states.shape[0]}, but {len(rows)} prompts are "
                                 f"given: one encoder sequence per prompt")
            if cache is None and past_key_values is None:
                cache = own_cache(model, rows, max_new_tokens, n, cache_dtype)
            model._set_encoder_states(cache if cache is not None else past_key_values, np.repeat(states, n, axis=0))
        if contexts is None and any(self.prefixes):
            contexts = self.prefixes
        self.cache = cache if cache is not None else past_key_values
        self._prefix_cache = prefix_cache if self.cache is not None and given is None else None
        self._rows = rows
        self._stored = False
        self.config = c
        self._tokenizer = model.tokenizer
        self._n_vocab = model.config.n_vocab
        if c.stop_strings is not None and model.tokenizer is None:
            raise ValueError("stop_strings need the model's tokenizer, and this model has none")
        if c.streamer is not None and len(rows) * n != 1:
            raise ValueError(f"a streamer takes one row (as transformers' TextStreamer), but {len(rows) * n} are "
                             f"generated")
        self._keep_scores = c.return_dict_in_generate
        self.generator = _core.Generator(
            model._core, fed, max_new_tokens=max_new_tokens, do_sample=c.do_sample, temperature=c.temperature,
            top_k=c.top_k, top_p=c.top_p, min_p=c.min_p, typical_p=c.typical_p,
            repetition_penalty=c.repetition_penalty, no_repeat_ngram_size=c.no_repeat_ngram_size,
            min_new_tokens=max(0, min_new_tokens), eos_token_ids=list(model._eos_ids(c)), seed=seed,
            use_cache=c.use_cache, cache_dtype=cache_dtype, num_return_sequences=n,
            keep_scores=self._keep_scores, keep_logits=c.return_dict_in_generate and c.output_logits,
            cache=self.cache, contexts=contexts or [])
        self._steps_scores: List[np.ndarray] = []
        self._steps_logits: List[np.ndarray] = []
        self._steps_tokens: List[List[int]] = []

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
        if more:
            self._after_step()
        return more

    @property
    def _watched(self) -> bool:
        c = self.config
        return c.streamer is not None or c.stop_strings is not None or self._keep_scores

    def run(self) -> None:
        c = self.config
        if c.streamer is not None:
            c.streamer.put(np.asarray([self.sequences[0]]))
        if self._watched:
            while self.step():
                pass
        else:
            if self._prefix_cache is not None and not self._stored:
                self.step()
            self.generator.run()
        if c.streamer is not None:
            c.streamer.end()

    def _after_step(self) -> None:
        c = self.config
        if not self._watched:
            return
        tokens = self.generator.last_tokens
        if self._keep_scores:
            scores = self.generator.last_scores
            done = np.asarray(tokens) < 0
            scores[done] = -np.inf
            self._steps_scores.append(scores)
            self._steps_tokens.append(tokens)
            if c.output_logits:
                logits = self.generator.last_logits
                logits[done] = np.nan
                self._steps_logits.append(logits)
        if c.streamer is not None and tokens[0] >= 0:
            c.streamer.put(np.asarray([tokens[0]]))
        if c.stop_strings is not None:
            self._stop_at_strings(tokens)

    def _stop_at_strings(self, tokens: List[int]) -> None:
        longest = max(len(s) for s in self.config.stop_strings)
        for row, t in enumerate(tokens):
            if t < 0:
                continue
            seq = self.generator_sequence(row)
            # every token is at least one character, but one may be part of a character: a few more than needed
            tail = self._tokenizer.decode(seq[-(longest + 4):])
            if any(tail.endswith(s) for s in self.config.stop_strings):
                self.generator.finish_row(row)

    def generator_sequence(self, row: int) -> List[int]:
        return self.prefixes[row // self.num_return_sequences] + list(self.generator.sequences[row])

    @property
    def sequences(self) -> List[List[int]]:
        n = self.num_return_sequences
        return [self.prefixes[r // n] + list(s) for r, s in enumerate(self.generator.sequences)]

    def output(self) -> GenerateOutput:
        """The GenerateOutput of a finished run (return_dict_in_generate)."""
        c = self.config
        out = GenerateOutput(sequences=self.sequences,
                             scores=tuple(self._steps_scores) if c.output_scores else None,
                             logits=tuple(self._steps_logits) if c.output_logits else None)
        rows = len(out.sequences)
        k = min(c.top_logprobs, self._n_vocab)
        chosen = [[] for _ in range(rows)]
        top_ids = [[] for _ in range(rows)]
        top_values = [[] for _ in range(rows)]
        for scores, tokens in zip(self._steps_scores, self._steps_tokens):
            logp = _log_softmax(scores)
            for r, t in enumerate(tokens):
                if t < 0:
                    continue
                chosen[r].append(logp[r, t])
                if k:
                    ids = np.argpartition(-logp[r], k - 1)[:k]
                    ids = ids[np.lexsort((ids, -logp[r, ids]))]  # likeliest first, ties by id
                    top_ids[r].append(ids)
                    top_values[r].append(logp[r, ids])
        out.logprobs = [np.asarray(x, dtype=np.float64) for x in chosen]
        if k and self._steps_scores:
            out.top_logprobs = [(np.asarray(i, dtype=np.int64).reshape(-1, k),
                                 np.asarray(v, dtype=np.float64).reshape(-1, k)) for i, v in zip(top_ids, top_values)]
        return out


def new_token_budget(config: GenerationConfig, longest_prompt: int) -> int:
    """max_new_tokens, or what max_length leaves after the longest prompt (transformers counts max_length on the
    padded batch, whose length is the longest prompt's), or 20."""
    if config.max_new_tokens is not None:
        return config.max_new_tokens
    if config.max_length is not None:
        if config.max_length <= longest_prompt:
            raise ValueError(f"max_length={config.max_length} leaves no room for new tokens after the longest "
                             f"prompt, of {longest_prompt} tokens")
        return config.max_length - longest_prompt
    return 20
