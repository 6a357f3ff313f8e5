"""Session: a conversation that owns one KV cache, so that each turn computes only the tokens the cache does not
hold yet (llama.cpp's server slots, transformers' past_key_values passed back into generate).

The cache holds every token of the history but the last (whose logits the next generation needs, and which it
feeds). A turn renders the whole conversation through the chat template, keeps the longest common prefix of those
ids and the history, crops the cache to it, and prefills the rest: usually just the new turn; more only where the
template renders a past reply differently from the ids that produced it.
"""

from __future__ import annotations

import os
from typing import Dict, List, Optional, Sequence, Union

from .arguments import check_int
from .generation import GenerationRun, new_token_budget
from .generation_config import SESSION_FIXED, GenerationConfig, resolve, with_generation_options
from .token_ids import id_list, is_id_array

# a session generates one row on its own cache, and returns text
_SESSION_EXCLUDED = SESSION_FIXED + ("encoder_hidden_states", "length_penalty", "early_stopping",
                                     "return_dict_in_generate", "output_scores", "output_logits", "top_logprobs",
                                     "assistant_model", "num_assistant_tokens", "prompt_lookup_num_tokens",
                                     "max_matching_ngram_size")
_WHY = "a session generates one sequence on its own cache"


def _common_prefix(a: Sequence[int], b: Sequence[int]) -> int:
    n = min(len(a), len(b))
    for i in range(n):
        if a[i] != b[i]:
            return i
    return n


class Session:
    """Make one with model.session(max_seq_len=None, dtype="float32") or model.load_session(path)."""

    def __init__(self, model, max_seq_len: Optional[int] = None, dtype: str = "float32", *, _cache=None):
        self.model = model
        self._cache = _cache if _cache is not None else model.new_cache(1, max_seq_len, dtype)
        self._tokens: List[int] = []
        self._messages: List[dict] = []
        self._turn_ends: List[int] = []  # len(tokens) at the end of each say(): its two messages end there
        self._stats: Dict[str, int] = {"prefilled": 0, "reused": 0, "generated": 0}

    # ---- state ---------------------------------------------------------------------------------------------------
    @property
    def tokens(self) -> List[int]:
        """Every id of the history so far (a copy)."""
        return list(self._tokens)

    @property
    def cache(self):
        """The live KVCache (batch 1): it holds the keys and values of every token but the last."""
        return self._cache

    @property
    def messages(self) -> List[dict]:
        """The conversation of say() so far (a copy)."""
        return [dict(m) for m in self._messages]

    @property
    def max_seq_len(self) -> int:
        return self._cache.max_seq_len

    @property
    def stats(self) -> Dict[str, int]:
        """Of the last call: prefilled (tokens computed from their ids), reused (positions the cache already
        held) and generated (new tokens)."""
        return dict(self._stats)

    def __len__(self) -> int:
        return len(self._tokens)

    def __repr__(self) -> str:
        return (f"Session(tokens={len(self._tokens)}, cached={self._cache.get_seq_length()}, "
                f"max_seq_len={self.max_seq_len}, dtype={self._cache.dtype!r})")

    # ---- growing the history ---------------------------------------------------------------------------------------
    def _ids(self, text_or_ids) -> List[int]:
        if isinstance(text_or_ids, str):
            return self.model.encode(text_or_ids)
        if isinstance(text_or_ids, (list, tuple)) or is_id_array(text_or_ids):
            return id_list(text_or_ids, self.model.config.n_vocab)
        raise TypeError(f"expected text (str) or token ids (a list, 1-D array or tensor), got "
                        f"{type(text_or_ids).__name__}")

    def _check_room(self, n_tokens: int, max_new_tokens: int) -> None:
        if n_tokens + max_new_tokens > self.max_seq_len:
            raise ValueError(f"the session would hold {n_tokens} tokens plus max_new_tokens={max_new_tokens} = "
                             f"{n_tokens + max_new_tokens}, beyond its max_seq_len={self.max_seq_len}; nothing was "
                             f"changed (rewind(), or start a session with a larger max_seq_len)")

    def append(self, text_or_ids) -> None:
        """Extend the history with text or ids (a list, 1-D NumPy array or torch tensor of any integer dtype) without
        generating; their keys and values are computed now (all but the last token, which the next generation
        feeds).

        Raises:
            TypeError: neither text nor ids; ids that are not integers.
            ValueError: ids outside the vocabulary or not 1-D; more than the session's max_seq_len."""
        ids = self._ids(text_or_ids)
        self._check_room(len(self._tokens) + len(ids), 0)
        held = self._cache.get_seq_length()
        self._tokens += ids
        pending = self._tokens[held:-1]
        if pending:
            self.model.forward([pending], self._cache, logits="last")
        self._stats = {"prefilled": len(pending), "reused": held, "generated": 0}

    @with_generation_options(exclude=_SESSION_EXCLUDED)
    def generate(self, max_new_tokens: Optional[int] = None, **options) -> Union[str, List[int]]:
        """Continue the history: the new text (the new ids for a model without a tokenizer); the tokens equal
        those of one uncached call over the whole history with the same options.

        Raises:
            ValueError: an empty session; a history plus max_new_tokens beyond max_seq_len (nothing is changed).
            TypeError: a keyword the session fixes itself (cache, num_beams, ...) or does not know."""
        new = self._generate(resolve("Session.generate", max_new_tokens, options, _SESSION_EXCLUDED, _WHY))
        if self.model.tokenizer is None:
            return new
        return self.model.decode(new)

    def _generate(self, config: GenerationConfig) -> List[int]:
        if not self._tokens:
            raise ValueError("the session is empty: append() a prompt or say() something first")
        held = self._cache.get_seq_length()
        if held == len(self._tokens):  # everything held (after a rewind): the last token is fed again
            self._cache.crop(held - 1)
            held -= 1
        pending = self._tokens[held:]
        self._check_room(len(self._tokens), new_token_budget(config, len(self._tokens)))
        run = GenerationRun(self.model, [pending], config.replace(cache=self._cache),
                            contexts=[self._tokens[:held]])
        run.run()
        new = run.sequences[0][len(pending):]
        self._tokens += new
        self._stats = {"prefilled": len(pending), "reused": held, "generated": len(new)}
        return new

    @with_generation_options(exclude=_SESSION_EXCLUDED)
    def say(self, message: Union[str, dict], max_new_tokens: Optional[int] = 256, **options) -> str:
        """One chat turn: the message (text from the user, or a {"role", "content"} dict) joins the conversation,
        the conversation is rendered through the model's chat template, only the tokens the cache does not hold
        are prefilled, and the assistant's reply is generated and returned (text without special tokens).

        Args:
            message: the user's text, or a {"role", "content"} dict of str.
            max_new_tokens: at most this many tokens of reply (default 256); the generation keywords below too.

        Returns:
            The reply's text.

        Raises:
            TypeError: a message that is neither; a keyword the session does not take.
            ValueError: a model without a chat template; a conversation plus max_new_tokens beyond max_seq_len
                (nothing is changed)."""
        if isinstance(message, str):
            message = {"role": "user", "content": message}
        if not isinstance(message, dict) or not isinstance(message.get("content"), str) or \
                not isinstance(message.get("role"), str):
            raise TypeError(f"message must be a str or a dict with str 'role' and 'content', got {message!r}")
        if not hasattr(self.model, "chat_ids"):
            raise ValueError(f"{type(self.model).__name__} has no chat template; use append() and generate()")
        config = resolve("Session.say", max_new_tokens, options, _SESSION_EXCLUDED, _WHY)
        messages = self._messages + [dict(message)]
        ids = self.model.chat_ids(messages)
        self._check_room(len(ids), new_token_budget(config, len(ids)))  # before the history changes
        common = _common_prefix(ids, self._tokens)
        self._cut(common)
        self._tokens += ids[common:]
        new = self._generate(config)
        reply = self.model.tokenizer.decode(new, skip_special_tokens=True)
        self._messages = messages + [{"role": "assistant", "content": reply}]
        # a past turn the template rendered differently now ends, at the latest, where this prompt does
        self._turn_ends = [end if end <= common else len(ids) for end in self._turn_ends] + [len(self._tokens)]
        return reply

    # ---- going back, branching, saving ------------------------------------------------------------------------------
    def _cut(self, n: int) -> None:
        """Keep the first n tokens; the cache keeps at most those."""
        del self._tokens[n:]
        if self._cache.get_seq_length() > n:
            self._cache.crop(n)

    def _truncate(self, n: int) -> None:
        """_cut(n), and the turns that end past the n tokens are forgotten."""
        self._cut(n)
        while self._turn_ends and self._turn_ends[-1] > n:
            self._turn_ends.pop()
            del self._messages[-2:]

    def rewind(self, n: int) -> None:
        """Forget the last n tokens: the history is cut, the cache cropped, and any say() turn they belonged to
        forgotten (a partly rewound turn is rendered again from the template at the next say()).

        Raises:
            ValueError: n < 0 or more than the history holds."""
        n = check_int("n", n, 0, len(self._tokens))
        self._truncate(len(self._tokens) - n)

    def fork(self) -> "Session":
        """A copy that diverges from here: its own cache (a copy of the filled positions); the parent is
        untouched."""
        other = Session(self.model, _cache=self._cache.copy())
        other._tokens = list(self._tokens)
        other._messages = [dict(m) for m in self._messages]
        other._turn_ends = list(self._turn_ends)
        return other

    def save(self, path: Union[str, os.PathLike]) -> None:
        """Write the history and the cache's filled positions to a safetensors file (docs/sessions.md), with the
        model's fingerprint, so that load_session() refuses it for another model.

        Raises:
            OSError: the file cannot be written."""
        from .session_file import save_session

        save_session(self, path)

    @classmethod
    def load(cls, model, path: Union[str, os.PathLike], max_seq_len: Optional[int] = None) -> "Session":
        """A session saved by save(), continued with model (model.load_session(path) is the same).

        Raises:
            ValueError: not a session file of this very model (weights, weights_dtype, family), or a damaged one.
            FileNotFoundError: no such file."""
        from .session_file import load_session

        return load_session(cls, model, path, max_seq_len)
