"""CausalLM: what every model family offers in Python: text and ids in, generation (greedy, sampled, batched,
streamed), forward over a KV cache. GPT2 (model.py) and Llama (llama.py) add their loading."""

from __future__ import annotations

import os
from typing import Iterator, List, Optional, Sequence, Union

import numpy as np

from . import _core
from ._core import KVCache
from .arguments import check_bool, check_dtype, check_float, check_int, check_seed, check_token_id

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
        """Prompt text (or a list of them) -> prompt + continuation. Keywords as generate_ids()."""
        tok = self._need_tokenizer()
        if isinstance(prompt, str):
            return tok.decode(self.generate_ids(self._encode_prompt(prompt), max_new_tokens, **kwargs))
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
               use_cache: bool = True, cache_dtype: str = "float32") -> Iterator[str]:
        """Yield the continuation of one prompt piece by piece, as it is produced. Keywords as generate_ids(). Bad
        arguments raise here, at the call, not at the first next()."""
        tok = self._need_tokenizer()
        generator = self._generator([self._encode_prompt(prompt)], max_new_tokens, do_sample=do_sample,
                                    temperature=temperature, top_k=top_k, top_p=top_p, seed=seed,
                                    eos_token_id=eos_token_id, use_cache=use_cache, cache_dtype=cache_dtype)
        return self._pieces(tok, generator)

    @staticmethod
    def _pieces(tok, generator: _core.Generator) -> Iterator[str]:
        produced: List[int] = []
        emitted = ""
        while generator.step():
            produced.append(generator.last_tokens[0])
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
                     use_cache: bool = True, cache_dtype: str = "float32") -> Union[List[int], List[List[int]]]:
        """Token ids (one list, or a list of lists of any lengths) -> prompt + new ids, per row.

        do_sample=False is greedy and ignores temperature/top_k/top_p. temperature > 0 divides the logits
        (0 = greedy); top_k keeps the k likeliest tokens (0 = off); top_p keeps the smallest set of likeliest tokens
        whose probability reaches top_p (1.0 = off). seed makes sampling reproducible. Generation stops at
        eos_token_id (default: the config's; None = never) or after max_new_tokens. use_cache=False recomputes
        the whole sequence at every step: the baseline the KV cache is measured against. cache_dtype stores the
        keys and values as "float32", "float16" (half the cache's bytes; values beyond +-65504 saturate) or
        "bfloat16" (half the bytes, float32's range, 8 bits of precision).
        """
        rows, single = _as_id_rows(ids, self.config.n_vocab)
        generator = self._generator(rows, max_new_tokens, do_sample=do_sample, temperature=temperature,
                                    top_k=top_k, top_p=top_p, seed=seed, eos_token_id=eos_token_id,
                                    use_cache=use_cache, cache_dtype=cache_dtype)
        generator.run()
        out = [list(s) for s in generator.sequences]
        return out[0] if single else out

    def _generator(self, rows: List[List[int]], max_new_tokens: int, *, do_sample: bool = False,
                   temperature: float = 1.0, top_k: int = 0, top_p: float = 1.0, seed: Optional[int] = None,
                   eos_token_id=_FROM_CONFIG, use_cache: bool = True, cache_dtype: str = "float32") -> _core.Generator:
        if not rows:
            raise ValueError("no prompt given")
        do_sample, use_cache = check_bool("do_sample", do_sample), check_bool("use_cache", use_cache)
        if eos_token_id is _FROM_CONFIG:
            eos_token_id = self.eos_token_id
        if eos_token_id is not None:
            check_int("eos_token_id", eos_token_id, 0)
        seed = check_seed(seed)
        if seed is None:
            seed = int.from_bytes(os.urandom(8), "little") if do_sample else 0
        return _core.Generator(
            self._core, rows, max_new_tokens=check_int("max_new_tokens", max_new_tokens, 0), do_sample=do_sample,
            temperature=check_float("temperature", temperature), top_k=check_int("top_k", top_k),
            top_p=check_float("top_p", top_p), seed=seed,
            eos_token_id=-1 if eos_token_id is None else eos_token_id, use_cache=use_cache,
            cache_dtype=check_dtype("cache_dtype", cache_dtype))

    # ---- the cache ----------------------------------------------------------------------------------------------
    def new_cache(self, batch_size: int = 1, max_seq_len: Optional[int] = None, dtype: str = "float32") -> KVCache:
        """A KV cache allocated once: 2 x n_layer x batch_size x n_kv_head x max_seq_len x head_dim values of dtype
        (n_kv_head = n_head for GPT-2), "float32", "float16" or "bfloat16" (2 bytes each: half the memory, and half
        the bytes attention reads per step)."""
        max_seq_len = self.config.n_ctx if max_seq_len is None else max_seq_len
        return self._core.new_cache(check_int("batch_size", batch_size, 1), check_int("max_seq_len", max_seq_len, 1),
                                    check_dtype("dtype", dtype))

    def forward(self, tokens, cache: Optional[KVCache] = None) -> np.ndarray:
        """tokens (B, T) -> logits (B, T, n_vocab) float32. With a cache, each row continues at its own length and
        the new K/V are appended; without one, the tokens are a whole sequence starting at position 0."""
        if cache is not None and not isinstance(cache, KVCache):
            raise TypeError(f"cache must be a KVCache, got {type(cache).__name__}")
        tokens = np.asarray(tokens)
        if tokens.ndim == 1:
            tokens = tokens[None, :]
        return self._core.forward(tokens, cache)

    __call__ = forward

