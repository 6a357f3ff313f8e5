"""CausalLM: what every model family offers in Python: text and ids in, generation (greedy, sampled, batched,
streamed), forward over a KV cache. GPT2 (model.py) and Llama (llama.py) add their loading."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Iterator, List, Optional, Sequence, Tuple, Union

import numpy as np

from . import _core
from ._core import KVCache
from .arguments import check_dtype, check_int
from .fingerprint import weights_fingerprint
from .generation import GenerateOutput, GenerationRun, new_token_budget
from .generation_config import FROM_CONFIG, GenerationConfig, resolve, with_generation_options
from .prefix_cache import PrefixCache
from .token_ids import id_matrix, is_id_array, parse_prompts

if TYPE_CHECKING:
    from .session import Session

# stream() yields pieces one at a time: beams, a dict of scores, a streamer of its own and drafts do not apply
_NOT_STREAMED = ("num_beams", "length_penalty", "early_stopping", "return_dict_in_generate", "output_scores",
                 "output_logits", "top_logprobs", "streamer", "assistant_model", "num_assistant_tokens",
                 "prompt_lookup_num_tokens", "max_matching_ngram_size")
_NOT_SPECULATED = ("use_cache", "cache", "past_key_values", "encoder_hidden_states", "stop_strings", "streamer",
                   "output_scores", "output_logits", "top_logprobs", "repetition_penalty", "no_repeat_ngram_size",
                   "min_new_tokens", "min_length")
_NOT_WITH_BEAMS = ("use_cache", "cache", "past_key_values", "encoder_hidden_states", "stop_strings", "streamer",
                   "return_dict_in_generate", "repetition_penalty", "no_repeat_ngram_size", "min_new_tokens",
                   "min_length", "min_p", "typical_p", "assistant_model", "prompt_lookup_num_tokens")


def _pieces(tok, run: GenerationRun) -> Iterator[Tuple[int, str]]:
    """(row, new text) as each row's tokens arrive; a piece waits while its last character is incomplete."""
    rows = len(run.generator.last_tokens)
    produced: List[List[int]] = [[] for _ in range(rows)]
    emitted = [""] * rows
    while run.step():
        for row, token in enumerate(run.generator.last_tokens):
            if token < 0:
                continue
            produced[row].append(token)
            text = tok.decode(produced[row])
            if text.endswith("\ufffd"):  # a multi-byte character still incomplete: wait for its next byte
                continue
            if len(text) > len(emitted[row]):
                yield row, text[len(emitted[row]):]
                emitted[row] = text
    for row in range(rows):
        text = tok.decode(produced[row])
        if len(text) > len(emitted[row]):
            yield row, text[len(emitted[row]):]


class CausalLM:
    """A model on the C++ engine; subclasses load it. self._core is the engine's model, self.tokenizer its tokenizer
    (or None: ids only), self.eos_token_id where generation stops by default, self.pad_token_id what fills the
    rows of a 2-D result that stopped early (None: the end-of-text id, as transformers)."""

    def __init__(self, core: _core.CausalLM, tokenizer=None, eos_token_id: Optional[int] = None,
                 pad_token_id: Optional[int] = None):
        self._core = core
        self.tokenizer = tokenizer
        # An end-of-text id outside the vocabulary (a small test config) can never be produced: no early stop.
        self.eos_token_id = eos_token_id if eos_token_id is not None and eos_token_id < core.n_vocab else None
        self.pad_token_id = pad_token_id
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
        """Text -> token ids, as the model's tokenizer splits it (no special tokens added).

        Raises:
            ValueError: the model has no tokenizer (a checkpoint without tokenizer files: use ids)."""
        return self._need_tokenizer().encode(text)

    def decode(self, ids: Sequence[int]) -> str:
        """One sequence of ids (a list, 1-D array or tensor) -> text. ValueError for an id the tokenizer lacks."""
        return self._need_tokenizer().decode(ids)

    @with_generation_options()
    def generate(self, prompt: Union[str, Sequence[str]], max_new_tokens: Optional[int] = None, *,
                 attention_mask=None, pad_token_id=FROM_CONFIG, **options):
        """Prompt text (or a list of them) -> prompt + continuation (a list of num_return_sequences texts per
        prompt when more than one); with return_dict_in_generate, a GenerateOutput whose texts are those. Token
        ids as a NumPy array or torch tensor (with attention_mask=, as transformers' generate takes them) are
        generate_ids(): ids out, of the same type.

        Args:
            prompt: a str, or a list of str of any lengths (a ragged batch: each row gives what it gives alone).
            max_new_tokens: tokens to add per row (default 20); every generation keyword below too.

        Returns:
            The prompt and its continuation, decoded; a list for a list of prompts or num_return_sequences > 1.

        Raises:
            TypeError: a prompt that is not text, an unknown keyword, an option of the wrong type.
            ValueError: an empty prompt, a prompt plus max_new_tokens beyond n_ctx, an option out of range, a model
                without a tokenizer."""
        if is_id_array(prompt):
            return self.generate_ids(prompt, max_new_tokens, attention_mask=attention_mask, pad_token_id=pad_token_id,
                                     **options)
        if attention_mask is not None:
            raise ValueError("attention_mask goes with padded token ids (an array or tensor, or generate_ids()); "
                             "text prompts are never padded")
        config = resolve("generate", max_new_tokens, options)
        tok = self._need_tokenizer()
        if isinstance(prompt, str):
            rows, single = [self._encode_prompt(prompt)], True
        elif isinstance(prompt, (list, tuple)):
            if len(prompt) == 0:
                return []
            rows, single = [self._encode_prompt(p) for p in prompt], False
        else:
            raise TypeError(f"prompt must be a str or a list of str, got {type(prompt).__name__}")
        out = self._generate(rows, config)
        sequences = out.sequences if isinstance(out, GenerateOutput) else out
        texts = [tok.decode(ids) for ids in sequences]
        if isinstance(out, GenerateOutput):
            out.texts = texts
            return out
        return texts[0] if single and config.num_return_sequences == 1 else texts

    def _encode_prompt(self, prompt: str) -> List[int]:
        if not isinstance(prompt, str):
            raise TypeError(f"every prompt must be a str, got {type(prompt).__name__}")
        ids = self._need_tokenizer().encode(prompt)
        if not ids:
            raise ValueError("prompt is empty; give at least one character of text")
        return ids

    @with_generation_options(exclude=_NOT_STREAMED)
    def stream(self, prompt: Union[str, Sequence[str]], max_new_tokens: Optional[int] = None,
               **options) -> Iterator[Union[str, Tuple[int, str]]]:
        """Yield the continuation of one prompt piece by piece, as it is produced; for a list of prompts (or
        num_return_sequences > 1), (row, piece) pairs in the order the pieces are produced. Bad arguments raise
        here, at the call, not at the first next().

        Raises:
            TypeError / ValueError: as generate(); beams, scores, a streamer and speculative decoding are not taken."""
        config = resolve("stream", max_new_tokens, options, exclude=_NOT_STREAMED)
        tok = self._need_tokenizer()
        if isinstance(prompt, str):
            rows, single = [self._encode_prompt(prompt)], config.num_return_sequences == 1
        elif isinstance(prompt, (list, tuple)) and prompt:
            rows, single = [self._encode_prompt(p) for p in prompt], False
        else:
            raise TypeError(f"prompt must be a str or a non-empty list of str, got {prompt!r}")
        run = self._run(rows, config)
        pieces = _pieces(tok, run)
        return (piece for _, piece in pieces) if single else pieces

    # ---- ids ----------------------------------------------------------------------------------------------------
    @with_generation_options()
    def generate_ids(self, ids, max_new_tokens: Optional[int] = None, *, attention_mask=None,
                     pad_token_id=FROM_CONFIG, **options):
        """Token ids (one list, or a list of lists of any lengths; a 1-D or 2-D NumPy array or torch tensor of any
        integer dtype) -> prompt + new ids, per row; with return_dict_in_generate, a GenerateOutput.

        Greedy (do_sample=False) ignores the sampling filters; sampling applies temperature, top_k, top_p, min_p and
        typical_p in that order, after the repetition penalty, n-gram bans and min_new_tokens, as transformers does.
        Generation stops at eos_token_id (default: the model's), a stop string, or after max_new_tokens.
        cache: continue an existing cache (model.new_cache(batch_size=prompts x num_return_sequences)): ids are the
        tokens after what each row holds, and the cache is left holding every returned token but the last.
        past_key_values: as transformers, ids are whole sequences whose first get_seq_length() tokens the cache
        holds. Without either, a prefix cache (enable_prefix_cache) supplies the blocks it holds.
        encoder_hidden_states (prompts, S, n_embd): the encoder states a cross-attention GPT-2
        (add_cross_attention=True) attends over, projected once per call into the cache's cross K/V.
        attention_mask (the shape of ids, 0/1; as transformers' tokenizers pad): each row's real tokens are those
        under 1, one run per row (padding on the left, the right, or both); pads never enter attention, and each row
        gives what it gives alone, unpadded.

        Returns: lists for lists: a single prompt with num_return_sequences=1 gives one list of ids, otherwise a
        list per generated row, each the prompt as given (pads included) then its new ids. For an array or tensor:
        the same type, dtype and device; 1-D for a 1-D prompt and one row, else (rows, T + new), so that
        out[:, T:] are the new tokens, rows that stopped early filled with pad_token_id (default: the config's
        pad_token_id, else the end-of-text id, as transformers).

        Raises:
            TypeError: ids that are not integers (floats, bools, a str), a mask of the wrong type.
            ValueError: ids beyond 2-D or outside the vocabulary; a mask of another shape, with values other than
                0/1, a hole, or a row of zeros; a result to fill and no pad_token_id; bad generation options."""
        config = resolve("generate_ids", max_new_tokens, options)
        prompts = parse_prompts(ids, self.config.n_vocab, attention_mask)
        pad = self._pad(pad_token_id, config)
        out = self._generate(prompts.rows, config)
        if isinstance(out, GenerateOutput):
            out.sequences = prompts.as_given(out.sequences, config.num_return_sequences)
            return out
        return prompts.output(out, config.num_return_sequences, pad)

    def _generate(self, rows: List[List[int]], config: GenerationConfig,
                  contexts=None) -> Union[List[List[int]], GenerateOutput]:
        if config.num_beams > 1:
            return self._beam_search(rows, config)
        if config.assistant_model is not None or config.prompt_lookup_num_tokens is not None:
            return self._speculate(rows, config)
        run = self._run(rows, config, contexts)
        run.run()
        return run.output() if config.return_dict_in_generate else run.sequences

    def _beam_search(self, rows: List[List[int]], c: GenerationConfig) -> List[List[int]]:
        if c.do_sample:
            raise ValueError("num_beams > 1 is beam search, which here is deterministic: do_sample must be False")
        refused = [name for name in _NOT_WITH_BEAMS if not c.is_default(name)]
        if refused:
            raise ValueError(f"beam search runs on a cache of its own, without logits processors, stop strings, a "
                             f"streamer or scores: it does not take {', '.join(refused)}")
        eos = self._eos_ids(c)
        if len(eos) > 1:
            raise ValueError(f"beam search takes one eos_token_id, got {list(eos)}")
        from .beam_search import beam_search

        return beam_search(self, rows, new_token_budget(c, max(len(r) for r in rows)), num_beams=c.num_beams,
                           num_return_sequences=c.num_return_sequences, length_penalty=c.length_penalty,
                           early_stopping=c.early_stopping, eos_token_id=eos[0] if eos else None,
                           cache_dtype=c.cache_dtype or "float32")

    def _speculate(self, rows: List[List[int]], c: GenerationConfig) -> Union[List[List[int]], GenerateOutput]:
        if c.assistant_model is not None and c.prompt_lookup_num_tokens is not None:
            raise ValueError("give assistant_model= or prompt_lookup_num_tokens=, not both")
        if c.assistant_model is not None:
            if not isinstance(c.assistant_model, CausalLM):
                raise TypeError(f"assistant_model must be a kvcache model, got {type(c.assistant_model).__name__}")
            if c.assistant_model.config.n_vocab != self.config.n_vocab:
                raise ValueError(f"assistant_model has a vocabulary of {c.assistant_model.config.n_vocab} tokens, "
                                 f"this model {self.config.n_vocab}: speculative decoding needs the same vocabulary")
        if len(rows) != 1 or c.num_return_sequences != 1:
            raise ValueError(f"speculative decoding takes one prompt and one sequence (as transformers), got "
                             f"{len(rows)} prompts x num_return_sequences={c.num_return_sequences}")
        refused = [name for name in _NOT_SPECULATED if not c.is_default(name)]
        if refused:
            raise ValueError(f"speculative decoding verifies drafts with the sampling filters alone: it does not take "
                             f"{', '.join(refused)}")
        from .speculative import SpeculationStats, speculative_generate

        stats = SpeculationStats()
        seq = speculative_generate(self, rows[0], c, new_token_budget(c, len(rows[0])), self._eos_ids(c), stats)
        return GenerateOutput(sequences=[seq], speculation=stats) if c.return_dict_in_generate else [seq]

    def _eos_ids(self, config: GenerationConfig) -> Tuple[int, ...]:
        """The ids that end a row under config: its eos_token_id, or by default this model's; () for none."""
        eos = self.eos_token_id if config.eos_token_id is FROM_CONFIG else config.eos_token_id
        return () if eos is None else (eos,) if isinstance(eos, int) else tuple(eos)

    def _pad(self, pad_token_id, config: GenerationConfig) -> Optional[int]:
        """The id that fills a 2-D result's rows that stopped early: given, the config's, else the end-of-text id."""
        if pad_token_id is FROM_CONFIG:
            if self.pad_token_id is not None:
                return self.pad_token_id
            eos = self._eos_ids(config)
            return eos[0] if eos else None
        return None if pad_token_id is None else check_int("pad_token_id", pad_token_id, 0)

    def _run(self, rows: List[List[int]], config: GenerationConfig, contexts=None) -> GenerationRun:
        # the prefix cache keys blocks by tokens alone: with encoder states, the same tokens have other K/V
        reusable = config.cache is None and config.past_key_values is None and config.encoder_hidden_states is None
        prefix_cache = self._prefix_cache if reusable else None
        return GenerationRun(self, rows, config, prefix_cache=prefix_cache, contexts=contexts)

    # ---- the cache ----------------------------------------------------------------------------------------------
    def new_cache(self, batch_size: int = 1, max_seq_len: Optional[int] = None, dtype: str = "float32", *,
                  window: Optional[int] = None, sinks: int = 0, evict_chunk: Optional[int] = None) -> KVCache:
        """A KV cache allocated once: 2 x n_layer x batch_size x n_kv_head x max_seq_len x head_dim values of dtype
        (n_kv_head = n_head for GPT-2), "float32", "float16" or "bfloat16" (2 bytes each: half the memory, and half
        the bytes attention reads per step).

        window / sinks (RoPE models, the LLaMA family): a sliding window with attention sinks (StreamingLLM). Each
        row keeps its first `sinks` positions forever and the most recent ones after them; when a row is full, its
        evict_chunk oldest positions after the sinks are evicted at once (default: window // 8, at least 1) and the
        rest move down, keys re-rotated, so positions stay 0 .. max_seq_len - 1 and generation may go on past n_ctx
        in constant memory. max_seq_len = sinks + window: give either (sinks > 0 alone takes the window from
        max_seq_len); both must agree. cache.window, cache.sinks, cache.evict_chunk, cache.evicted(row) tell.

        Args:
            batch_size: rows (sequences) it holds.
            max_seq_len: positions per row (default n_ctx; at most n_ctx).
            dtype: "float32" (default), "float16" or "bfloat16" (np.float16 and the like too).

        Returns:
            A KVCache of this model (nbytes: its exact size).

        Raises:
            ValueError: batch_size or max_seq_len < 1, max_seq_len beyond n_ctx, an unknown dtype; a window on GPT-2
                (its learned positions are in its keys), sinks >= max_seq_len, window and sinks that do not add up."""
        if window is None and sinks == 0 and evict_chunk is None:
            max_seq_len = self.config.n_ctx if max_seq_len is None else max_seq_len
            return self._core.new_cache(check_int("batch_size", batch_size, 1),
                                        check_int("max_seq_len", max_seq_len, 1), check_dtype("dtype", dtype))
        if window is None and sinks == 0:
            raise ValueError("evict_chunk is the eviction of a windowed cache: give window= or sinks= with it")
        batch_size = check_int("batch_size", batch_size, 1)
        sinks = check_int("sinks", sinks, 0)
        if window is not None:
            window = check_int("window", window, 1)
        if max_seq_len is not None:
            max_seq_len = check_int("max_seq_len", max_seq_len, 1)
            if sinks >= max_seq_len:
                raise ValueError(f"sinks={sinks} leaves no room for a window in max_seq_len={max_seq_len}: sinks must "
                                 f"be < max_seq_len")
        if window is None:
            if max_seq_len is None:
                raise ValueError("a windowed cache needs window= (or max_seq_len=, the window being max_seq_len - "
                                 "sinks)")
            window = max_seq_len - sinks
        elif max_seq_len is None:
            max_seq_len = sinks + window
        elif max_seq_len != sinks + window:
            raise ValueError(f"max_seq_len={max_seq_len} but sinks={sinks} + window={window} = {sinks + window}: "
                             f"the cache holds the sinks and the window, so give max_seq_len = sinks + window (or "
                             f"leave one of them out)")
        if max_seq_len > self.config.n_ctx:
            raise ValueError(f"sinks={sinks} + window={window} = {max_seq_len} positions, beyond n_ctx="
                             f"{self.config.n_ctx}: a windowed cache assigns positions by place in the cache, which "
                             f"must stay within the model's context (it lets generation go past n_ctx instead)")
        if evict_chunk is None:
            evict_chunk = max(1, window // 8)
        evict_chunk = check_int("evict_chunk", evict_chunk, 1)
        if evict_chunk > window:
            raise ValueError(f"evict_chunk must be in [1, window={window}], got {evict_chunk}")
        return self._core.new_cache(batch_size, max_seq_len, check_dtype("dtype", dtype), window=window, sinks=sinks,
                                    evict_chunk=evict_chunk)

    def forward(self, tokens, cache: Optional[KVCache] = None, *, rows: Optional[Sequence[int]] = None,
                logits: str = "all") -> np.ndarray:
        """tokens (B, T) -> logits (B, T, n_vocab) float32, or (B, n_vocab) of each row's last token with
        logits="last". With a cache, each row continues at its own length and the new K/V are appended (input row
        i into cache row rows[i], default i); without one, the tokens are a whole sequence starting at position 0.
        tokens: a NumPy array, a torch tensor (moved to the CPU) or nested lists, of any integer dtype; 1-D is one
        row.

        Raises:
            TypeError: tokens that are not integers, a cache that is not a KVCache.
            ValueError: not 1-D/2-D, rows of different lengths, empty, ids outside the vocabulary, beyond the
                cache's room or n_ctx."""
        if cache is not None and not isinstance(cache, KVCache):
            raise TypeError(f"cache must be a KVCache, got {type(cache).__name__}")
        if logits not in ("all", "last"):
            raise ValueError(f"logits must be 'all' or 'last', got {logits!r}")
        tokens = id_matrix(tokens)
        if rows is not None:
            rows = [check_int("rows[i]", r, 0) for r in rows]
        return self._core.forward(tokens, cache, rows, logits == "last")

    __call__ = forward

    # ---- reusing the cache ----------------------------------------------------------------------------------------
    def session(self, max_seq_len: Optional[int] = None, dtype: str = "float32") -> "Session":
        """A conversation that owns one cache (batch 1, max_seq_len positions, default n_ctx): each call prefills
        only the tokens the cache does not hold yet (session.py, docs/sessions.md).

        Args:
            max_seq_len: positions its cache holds (default n_ctx); the whole conversation must fit in them.
            dtype: the cache's "float32", "float16" or "bfloat16".

        Raises:
            ValueError: max_seq_len < 1 or beyond n_ctx, an unknown dtype."""
        from .session import Session

        return Session(self, max_seq_len=max_seq_len, dtype=dtype)

    def load_session(self, path: Union[str, os.PathLike], max_seq_len: Optional[int] = None) -> "Session":
        """A session saved by Session.save(), continued with this model; refused (ValueError) if the file is not a
        session file of this very model (weights, weights_dtype), or is damaged.

        Args:
            path: a file written by Session.save().
            max_seq_len: the new session's cache positions (default: n_ctx); must hold the saved tokens.

        Raises:
            FileNotFoundError: no such file. ValueError: another model's file, a damaged or forged one, a history
                longer than max_seq_len."""
        from .session import Session

        return Session.load(self, path, max_seq_len=max_seq_len)

    def enable_prefix_cache(self, max_bytes: int = 256 << 20, block_size: int = 32) -> PrefixCache:
        """Keep the keys and values of prompts in blocks of block_size tokens (at most max_bytes, least recently used
        evicted): a later generate call whose prompt starts with held blocks copies them instead of computing them,
        with identical results. Returns the prefix cache (also model.prefix_cache).

        Raises:
            ValueError: max_bytes < 0 or block_size < 1."""
        self._prefix_cache = PrefixCache(check_int("max_bytes", max_bytes, 0, None),
                                         check_int("block_size", block_size, 1))
        return self._prefix_cache

    def disable_prefix_cache(self) -> None:
        """Generate calls stop using the prefix cache (its blocks are dropped with it)."""
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
