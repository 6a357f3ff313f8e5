"""The prompts benchmarks run on: a fixed length of deterministic tokens, since the speedup depends on the
prompt's length rather than on its text."""

from __future__ import annotations

from typing import List, Sequence, Union

import numpy as np

from kvcache.arguments import check_int, check_token_id
from kvcache.model import GPT2

PROMPT_TEXT = ("The key-value cache stores the keys and values of every token already seen, so that each new "
               "token attends over them instead of recomputing the whole sequence. ")


def make_prompt(model: GPT2, n_tokens: int) -> List[int]:
    """Exactly n_tokens ids: PROMPT_TEXT repeated and cut (deterministic ids when the model has no tokenizer).
    The speedup depends on the prompt length, so benchmarks fix it rather than a text."""
    if model.tokenizer is None:
        return [(7919 * i) % model.config.n_vocab for i in range(n_tokens)]
    unit = model.tokenizer.encode(PROMPT_TEXT)
    return (unit * (n_tokens // len(unit) + 1))[:n_tokens]


def prompt_ids(model: GPT2, prompt: Union[str, int, Sequence[int]]) -> List[int]:
    """A prompt as ids: text is encoded, an int is a length (make_prompt), a sequence is taken as ids."""
    if isinstance(prompt, str):
        return model.encode(prompt)
    if isinstance(prompt, (int, np.integer)) and not isinstance(prompt, bool):
        return make_prompt(model, check_int("prompt length", prompt, 1))
    if isinstance(prompt, bool) or not isinstance(prompt, (list, tuple, np.ndarray)):
        raise TypeError(f"prompt must be text, a length or a list of ids, got {type(prompt).__name__} {prompt!r}")
    return [check_token_id(t, model.config.n_vocab) for t in prompt]
