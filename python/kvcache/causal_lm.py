"""CausalLM: what every model family offers in Python: text and ids in, generation (greedy, sampled, batched,
streamed), forward over a KV cache. GPT2 (model.py) and Llama (llama.py) add their loading."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Iterator, List, Optional, Sequence, Union

import numpy as np

from . import _core
from ._core import KVCache
from .arguments import check_bool, check_dtype, check_int, check_token_id
from .fingerprint import weights_fingerprint
from .generation import GenerationRun
from .prefix_cache import PrefixCache

if TYPE_CHECKING:
    from .session import Session

_FROM_CONFIG = object()  # sentinel: "use the eos_token_id of the model's config"


def _as_id_rows(ids, n_vocab: int) -> tuple[List[List[int]], bool]:
    """Token ids as a list of rows, and whether the input was a single sequence; every id in [0, n_vocab)."""
    if isinstance(ids, np.ndarray):
        if ids.dtype.kind not in "iu":
            raise TypeError(f"token ids must be integers, got dtype {ids.dtype}")
        if ids.ndim not in (1, 2):
            raise ValueError(f"token ids must be 1-D or 2-D, got {ids.ndim} dimensions")
        rows, single = ([ids.tolist()], True) if ids.ndim == 1 else (ids.tolist(), False)
    elif isinstance(ids, (list, tuple)):
        single = len(ids) == 0 or not isinstance(ids[0], (list, tuple, np.ndarray))
        if single:
            rows = [list(ids)]
        else:  # every row a sequence of ids, named when it is not (list() would say "'int' object is not iterable")
            rows = []
            for i, r in enumerate(ids):
                if not isinstance(r, (list, tuple, np.ndarray)) or (isinstance(r, np.ndarray) and r.ndim != 1):
                    raise TypeError(f"prompt {i} must be a list of token ids (rows of ids: every row a list), got "
                                    f"{type(r).__name__} {r!r}")
                rows.append(list(r))
    else:
        raise TypeError(f"token ids must be a list of ints or a list of lists, got {type(ids).__name__}")
    for i, row in enumerate(rows):
        for t in row:
            check_token_id(t, n_vocab, where=f" in prompt {i}")
    return rows, single


class CausalLM:
    """A model on the C++ engine; subclasses load it. self._core is the engine's model, self.tokenizer its tokenizer
    (or None: ids only), self.eos_token_id where generation stops by default."""

    def __init__(self, core: _core.CausalLM, tokenizer=None, eos_token_id: Optional[int] = None):
        self._core = core
        self.tokenizer = tokenizer
        # An end-of-text id outside the vocabulary (a small test config) can never be produced: no early stop.
        self.eos_token_id = eos_token_id if eos_token_id is not None and eos_token_id < core.n_vocab else None
        self._prefix_cache: Optional[PrefixCache] = None
        self._fingerprint: Optional[str] = None

    @property
    def config(self):
        return self._core.config

    @property
    def weights_dtype(self) -> str:
        return self._core.weights_dtype

    @property
    def weights_nbytes(self) -> int:
        """Bytes one decode step reads: the matrices in weights_dtype, biases and norms in float32."""
        return self._core.weights_nbytes

    # ---- text ---------------------------------------------------------------------------------------------------
    def _need_tokenizer(self):
        if self.tokenizer is None:
            raise ValueError("this model has no tokenizer (its checkpoint has no tokenizer files); use generate_ids() "
                             "with token ids")
        return self.tokenizer

    def encode(self, text: str) -> List[int]:
        return self._need_tokenizer().encode(text)

    def decode(self, ids: Sequence[int]) -> str:
        return self._need_tokenizer().decode(ids)

    def generate(self, prompt: Union[str, Sequence[str]], max_new_tokens: int = 20, **kwargs) -> Union[str, List[str]]:
        """Prompt text (or a list of them) -> prompt + continuation (a list of num_return_sequences texts per
        prompt when more than one). Keywords as generate_ids()."""
        tok = self._need_tokenizer()
        if isinstance(prompt, str):
            out = self.generate_ids(self._encode_prompt(prompt), max_new_tokens, **kwargs)
            return tok.decode(out) if not out or not isinstance(out[0], list) else [tok.decode(o) for o in out]
        if not isinstance(prompt, (list, tuple)):
            raise TypeError(f"prompt must be a str or a list of str, got {type(prompt).__name__}")
        if len(prompt) == 0:
            return []
        rows = [self._encode_prompt(p) for p in prompt]
        return [tok.decode(ids) for ids in self.generate_ids(rows, max_new_tokens, **kwargs)]

    def _encode_prompt(self, prompt: str) -> List[int]:
        if not isinstance(prompt, str):
            raise TypeError(f"every prompt must be a str, got {type(prompt).__name__}")
        ids = self._need_tokenizer().encode(prompt)
        if not ids:
            raise ValueError("prompt is empty; give at least one character of text")
        return ids

    def stream(self, prompt: str, max_new_tokens: int = 20, *, do_sample: bool = False, temperature: float = 1.0,
               top_k: int = 0, top_p: float = 1.0, seed: Optional[int] = None, eos_token_id=_FROM_CONFIG,
               use_cache: bool = True, cache_dtype: Optional[str] = None,
               cache: Optional[KVCache] = None, encoder_hidden_states=None) -> Iterator[str]:
        """Yield the continuation of one prompt piece by piece, as it is produced. Keywords as generate_ids(). Bad
        arguments raise here, at the call, not at the first next()."""
        tok = self._need_tokenizer()
        run = self._run([self._encode_prompt(prompt)], max_new_tokens, do_sample=do_sample,
                        temperature=temperature, top_k=top_k, top_p=top_p, seed=seed, eos_token_id=eos_token_id,
                        use_cache=use_cache, cache_dtype=cache_dtype, cache=cache,
                        encoder_hidden_states=encoder_hidden_states)
        return self._pieces(tok, run)

    @staticmethod
    def _pieces(tok, run: GenerationRun) -> Iterator[str]:
        produced: List[int] = []
        emitted = ""
        while run.step():
            produced.append(run.generator.last_tokens[0])
            text = tok.decode(produced)
            if text.endswith("\ufffd"):  # a multi-byte character still incomplete: wait for its next byte
                continue
            if len(text) > len(emitted):
                yield text[len(emitted):]
                emitted = text
        text = tok.decode(produced)
        if len(text) > len(emitted):
            yield text[len(emitted):]

    # ---- ids ----------------------------------------------------------------------------------------------------
    def generate_ids(self, ids, max_new_tokens: int = 20, *, do_sample: bool = False, temperature: float = 1.0,
                     top_k: int = 0, top_p: float = 1.0, seed: Optional[int] = None, eos_token_id=_FROM_CONFIG,
                     use_cache: bool = True, cache_dtype: Optional[str] = None, num_return_sequences: int = 1,
                     num_beams: int = 1, length_penalty: float = 1.0, early_stopping: Union[bool, str] = False,
                     cache: Optional[KVCache] = None, past_key_values: Optional[KVCache] = None,
                     encoder_hidden_states=None) -> Union[List[int], List[List[int]]]:
        """Token ids (one list, or a list of lists of any lengths) -> prompt + new ids, per row.

        do_sample=False is greedy and ignores temperature/top_k/top_p. temperature > 0 divides the logits
        (0 = greedy); top_k keeps the k likeliest tokens (0 = off); top_p keeps the smallest set of likeliest tokens
        whose probability reaches top_p (1.0 = off). seed makes sampling reproducible. Generation stops at
        eos_token_id (default: the config's; None = never) or after max_new_tokens. use_cache=False recomputes
        the whole sequence at every step: the baseline the KV cache is measured against. cache_dtype stores the
        keys and values as "float32" (default), "float16" (half the cache's bytes; values beyond +-65504 saturate)
        or "bfloat16" (half the bytes, float32's range, 8 bits of precision).

        num_return_sequences=n: n rows per prompt (prompt-major, as transformers), the prompt prefilled once and its
        keys and values copied to the other rows; the same as a batch of n copies of the prompt with the same seed.
        num_beams > 1: beam search as transformers' (do_sample=False, length_penalty, early_stopping True / False /
        "never"), returning the num_return_sequences best beams per prompt.
        cache: continue an existing cache (model.new_cache(batch_size=prompts x num_return_sequences)): ids are the
        tokens after what each row holds, and the cache is left holding every returned token but the last.
        past_key_values: as transformers, ids are whole sequences whose first get_seq_length() tokens the cache
        holds. Without either, a prefix cache (enable_prefix_cache) supplies the blocks it holds.
        encoder_hidden_states (prompts, S, n_embd): the encoder states a cross-attention GPT-2
        (add_cross_attention=True) attends over, projected once per call into the cache's cross K/V.
        A single prompt with num_return_sequences=1 gives one list of ids; otherwise a list per generated row."""
        rows, single = _as_id_rows(ids, self.config.n_vocab)
        num_return_sequences = check_int("num_return_sequences", num_return_sequences, 1)
        if check_int("num_beams", num_beams, 1) > 1:
            if do_sample is not False:
                raise ValueError("num_beams > 1 is beam search, which here is deterministic: do_sample must be False")
            if encoder_hidden_states is not None:
                raise ValueError("beam search over encoder states is not supported; use greedy or sampling")
            if cache is not None or past_key_values is not None or not check_bool("use_cache", use_cache):
                raise ValueError("beam search runs on a cache of its own: no cache=, past_key_values= or "
                                 "use_cache=False")
            from .beam_search import beam_search

            out = beam_search(self, rows, max_new_tokens, num_beams=num_beams,
                              num_return_sequences=num_return_sequences, length_penalty=length_penalty,
                              early_stopping=early_stopping, eos_token_id=self._eos(eos_token_id),
                              cache_dtype=cache_dtype)
        else:
            run = self._run(rows, max_new_tokens, do_sample=do_sample, temperature=temperature, top_k=top_k,
                            top_p=top_p, seed=seed, eos_token_id=eos_token_id, use_cache=use_cache,
                            cache_dtype=cache_dtype, num_return_sequences=num_return_sequences, cache=cache,
                            past_key_values=past_key_values, encoder_hidden_states=encoder_hidden_states)
            run.run()
            out = run.sequences
        return out[0] if single and num_return_sequences == 1 else out

    def _eos(self, eos_token_id) -> Optional[int]:
        return self.eos_token_id if eos_token_id is _FROM_CONFIG else eos_token_id

    def _run(self, rows: List[List[int]], max_new_tokens: int, *, eos_token_id=_FROM_CONFIG, cache=None,
             past_key_values=None, **options) -> GenerationRun:
        # the prefix cache keys blocks by tokens alone: with encoder states, the same tokens have other K/V
        reusable = cache is None and past_key_values is None and options.get("encoder_hidden_states") is None
        prefix_cache = self._prefix_cache if reusable else None
        return GenerationRun(self, rows, max_new_tokens, eos_token_id=self._eos(eos_token_id), cache=cache,
                             past_key_values=past_key_values, prefix_cache=prefix_cache, **options)

    # ---- the cache ----------------------------------------------------------------------------------------------
    def new_cache(self, batch_size: int = 1, max_seq_len: Optional[int] = None, dtype: str = "float32") -> KVCache:
        """A KV cache allocated once: 2 x n_layer x batch_size x n_kv_head x max_seq_len x head_dim values of dtype
        (n_kv_head = n_head for GPT-2), "float32", "float16" or "bfloat16" (2 bytes each: half the memory, and half
        the bytes attention reads per step)."""
        max_seq_len = self.config.n_ctx if max_seq_len is None else max_seq_len
        return self._core.new_cache(check_int("batch_size", batch_size, 1), check_int("max_seq_len", max_seq_len, 1),
                                    check_dtype("dtype", dtype))

    def forward(self, tokens, cache: Optional[KVCache] = None, *, rows: Optional[Sequence[int]] = None,
                logits: str = "all") -> np.ndarray:
        """tokens (B, T) -> logits (B, T, n_vocab) float32, or (B, n_vocab) of each row's last token with
        logits="last". With a cache, each row continues at its own length and the new K/V are appended (input row
        i into cache row rows[i], default i); without one, the tokens are a whole sequence starting at position 0."""
        if cache is not None and not isinstance(cache, KVCache):
            raise TypeError(f"cache must be a KVCache, got {type(cache).__name__}")
        if logits not in ("all", "last"):
            raise ValueError(f"logits must be 'all' or 'last', got {logits!r}")
        tokens = np.asarray(tokens)
        if tokens.ndim == 1:
            tokens = tokens[None, :]
        if rows is not None:
            rows = [check_int("rows[i]", r, 0) for r in rows]
        return self._core.forward(tokens, cache, rows, logits == "last")

    __call__ = forward

    # ---- reusing the cache ----------------------------------------------------------------------------------------
    def session(self, max_seq_len: Optional[int] = None, dtype: str = "float32") -> "Session":
        """A conversation that owns one cache (batch 1, max_seq_len positions, default n_ctx): each call prefills
        only the tokens the cache does not hold yet (session.py)."""
        from .session import Session

        return Session(self, max_seq_len=max_seq_len, dtype=dtype)

    def load_session(self, path: Union[str, os.PathLike], max_seq_len: Optional[int] = None) -> "Session":
        """A session saved by Session.save(), continued with this model; refused (ValueError) if the file is not a
        session file of this very model (weights, weights_dtype), or is damaged."""
        from .session import Session

        return Session.load(self, path, max_seq_len=max_seq_len)

    def enable_prefix_cache(self, max_bytes: int = 256 << 20, block_size: int = 32) -> PrefixCache:
        """Keep the keys and values of prompts in blocks of block_size tokens (at most max_bytes, least recently used
        evicted): a later generate call whose prompt starts with held blocks copies them instead of computing them,
        with identical results. Returns the prefix cache (also model.prefix_cache)."""
        self._prefix_cache = PrefixCache(check_int("max_bytes", max_bytes, 0, None),
                                         check_int("block_size", block_size, 1))
        return self._prefix_cache

    def disable_prefix_cache(self) -> None:
        self._prefix_cache = None

    @property
    def prefix_cache(self) -> Optional[PrefixCache]:
        """The prefix cache generate calls use, or None. Assignable: a PrefixCache (shared by models only if they
        are one model: its blocks are this model's keys and values) or None."""
        return self._prefix_cache

    @prefix_cache.setter
    def prefix_cache(self, value: Optional[PrefixCache]) -> None:
        if value is not None and not isinstance(value, PrefixCache):
            raise TypeError(f"prefix_cache must be a PrefixCache or None, got {type(value).__name__}")
        self._prefix_cache = value

    @property
    def fingerprint(self) -> str:
        """A digest of the weights as computed (the float32 parameters sampled, their names and shapes, the
        weights_dtype): what a saved session must match to be continued by this model."""
        if self._fingerprint is None:
            self._fingerprint = weights_fingerprint(self._fingerprint_tensors(), self.weights_dtype)
        return self._fingerprint

    def _fingerprint_tensors(self):
        raise NotImplementedError

    # ---- scores (scoring.py, docs/scoring.md) ---------------------------------------------------------------------
    def score(self, text_or_ids, *, chunk_size: Optional[int] = None) -> Union[np.ndarray, List[np.ndarray]]:
        """Per-token log-likelihoods log p(x_i | x_<i), i >= 1: a float64 array of n - 1 values for a sequence of n
        tokens (a str, a list of ids or a 1-D array), a list of them for a batch. Through the cache chunk_size
        positions at a time (default 128); a sequence must fit n_ctx (longer: perplexity(stride=)).
        See scoring.score."""
        from .scoring import score

        return score(self, text_or_ids, chunk_size=chunk_size)

    def perplexity(self, text_or_ids, *, stride: Optional[int] = None, max_length: Optional[int] = None,
                   chunk_size: Optional[int] = None):
        """Perplexity of one sequence of any length by transformers' strided sliding windows (max_length default
        n_ctx, stride default max_length // 2), as a PerplexityResult(ppl, nll, n_tokens, windows). See
        scoring.perplexity."""
        from .scoring import perplexity

        return perplexity(self, text_or_ids, stride=stride, max_length=max_length, chunk_size=chunk_size)
