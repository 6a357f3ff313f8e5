"""The generation options: their one definition (names, defaults and meanings as transformers' generate() uses them),
their checks, and the signature and docstring every generating method shows for them."""

from __future__ import annotations

import dataclasses
import inspect
from dataclasses import dataclass, field
from typing import Any, Dict, Optional, Sequence, Tuple

from .arguments import check_bool, check_dtype, check_float, check_int, check_seed


class _FromConfig:
    """The default eos_token_id: the model's own end-of-text id."""

    def __repr__(self) -> str:
        return "'from the model'"


FROM_CONFIG = _FromConfig()


def _doc(text: str) -> Dict[str, str]:
    return {"doc": text}


@dataclass(frozen=True)
class GenerationConfig:
    """How to generate. Every field is also a keyword of generate_ids(), generate(), stream() and chat(); a call's
    keywords override a generation_config= given to it."""

    max_new_tokens: Optional[int] = field(default=None, metadata=_doc(
        "tokens to generate per row (default 20, or what max_length leaves after the longest prompt)"))
    max_length: Optional[int] = field(default=None, metadata=_doc(
        "prompt + new tokens, counted on the longest prompt as on transformers' padded batch; max_new_tokens wins"))
    min_new_tokens: int = field(default=0, metadata=_doc("EOS is banned until this many tokens are generated"))
    min_length: int = field(default=0, metadata=_doc("EOS is banned until prompt + new tokens reach this length"))
    do_sample: bool = field(default=False, metadata=_doc("sample (True) or take the likeliest token (False)"))
    temperature: float = field(default=1.0, metadata=_doc("sampling divides the logits by it (0: greedy)"))
    top_k: int = field(default=0, metadata=_doc("sample among the k likeliest tokens (0: off)"))
    top_p: float = field(default=1.0, metadata=_doc(
        "sample among the likeliest tokens whose probability reaches top_p (1: off)"))
    min_p: float = field(default=0.0, metadata=_doc(
        "sample among tokens at least min_p times as likely as the likeliest (0: off)"))
    typical_p: float = field(default=1.0, metadata=_doc(
        "locally typical sampling: the tokens closest to the entropy, up to this mass (1: off)"))
    repetition_penalty: float = field(default=1.0, metadata=_doc(
        "divides the logit of every token already in the sequence (multiplies a negative one); 1: off"))
    no_repeat_ngram_size: int = field(default=0, metadata=_doc(
        "bans any token that would repeat an n-gram of this size already in the sequence (0: off)"))
    eos_token_id: Any = field(default=FROM_CONFIG, metadata=_doc(
        "the id (or list of ids) that ends a row; None: never stop early"))
    stop_strings: Optional[Sequence[str]] = field(default=None, metadata=_doc(
        "a row stops once its text ends with one of these (a str or a list); the string is kept"))
    seed: Optional[int] = field(default=None, metadata=_doc("makes sampling reproducible (None: a fresh seed)"))
    num_return_sequences: int = field(default=1, metadata=_doc(
        "rows per prompt; the prompt is prefilled once and its keys and values copied"))
    num_beams: int = field(default=1, metadata=_doc("beam search over this many beams (greedy only)"))
    length_penalty: float = field(default=1.0, metadata=_doc("beam search: a beam's score is sum / length**this"))
    early_stopping: Any = field(default=False, metadata=_doc("beam search: True, False or 'never', as transformers"))
    assistant_model: Any = field(default=None, metadata=_doc(
        "speculative decoding: a model of the same vocabulary that drafts tokens for this one to verify"))
    num_assistant_tokens: int = field(default=5, metadata=_doc("speculative decoding: tokens drafted per round"))
    prompt_lookup_num_tokens: Optional[int] = field(default=None, metadata=_doc(
        "speculative decoding without a model: draft this many tokens from n-gram matches in the sequence"))
    max_matching_ngram_size: int = field(default=2, metadata=_doc("prompt lookup: the longest n-gram matched"))
    use_cache: bool = field(default=True, metadata=_doc(
        "False recomputes the whole sequence at every step: the baseline the cache is measured against"))
    cache_dtype: Optional[str] = field(default=None, metadata=_doc(
        "'float32' (default), 'float16' or 'bfloat16': how the cache stores keys and values"))
    cache: Any = field(default=None, metadata=_doc(
        "a KVCache to continue: the ids are the tokens after what it holds"))
    past_key_values: Any = field(default=None, metadata=_doc(
        "a KVCache, as transformers: the ids are whole sequences whose start it holds"))
    encoder_hidden_states: Any = field(default=None, metadata=_doc(
        "(prompts, S, n_embd) states a cross-attention GPT-2 attends over"))
    streamer: Any = field(default=None, metadata=_doc(
        "an object with put(ids) and end(), as transformers' TextStreamer (one row only)"))
    return_dict_in_generate: bool = field(default=False, metadata=_doc(
        "return a GenerateOutput (sequences, scores, logprobs) instead of the ids"))
    output_scores: bool = field(default=False, metadata=_doc(
        "GenerateOutput.scores: per step, the (rows, n_vocab) scores each token was chosen from"))
    output_logits: bool = field(default=False, metadata=_doc("GenerateOutput.logits: per step, the raw logits"))
    top_logprobs: int = field(default=0, metadata=_doc(
        "GenerateOutput.top_logprobs: the n likeliest alternatives at each step, with their log-probabilities"))

    def is_default(self, name: str) -> bool:
        value, default = getattr(self, name), FIELDS[name].default
        return value is default or isinstance(value, (bool, int, float, str)) and value == default

    def replace(self, **changes) -> "GenerationConfig":
        return dataclasses.replace(self, **changes)


FIELDS = {f.name: f for f in dataclasses.fields(GenerationConfig)}
# What a session fixes itself: one row on its own cache.
SESSION_FIXED = ("cache", "past_key_values", "num_return_sequences", "num_beams", "use_cache", "cache_dtype")


def _optional_int(name, value, minimum):
    return None if value is None else check_int(name, value, minimum)


def _eos(value):
    if value is FROM_CONFIG or value is None:
        return value
    if isinstance(value, (list, tuple)):
        if not value:
            raise ValueError("eos_token_id must not be an empty list (None: never stop early)")
        return tuple(check_int("eos_token_id", v, 0) for v in value)
    return (check_int("eos_token_id", value, 0),)


def _stop_strings(value):
    if value is None:
        return None
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, (list, tuple)) or not all(isinstance(s, str) for s in value):
        raise TypeError(f"stop_strings must be a str or a list of str, got {value!r}")
    if not value or any(s == "" for s in value):
        raise ValueError(f"stop_strings must be non-empty strings, got {value!r}")
    return tuple(value)


def _early_stopping(value):
    if value not in (True, False, "never") or isinstance(value, (int, float)) and not isinstance(value, bool):
        raise ValueError(f"early_stopping must be True, False or 'never', got {value!r}")
    return value


def _streamer(value):
    if value is not None and not (callable(getattr(value, "put", None)) and callable(getattr(value, "end", None))):
        raise TypeError(f"streamer must have put() and end() methods (as transformers' TextStreamer), got "
                        f"{type(value).__name__}")
    return value


def _unit(name, value, low_open: bool):
    value = check_float(name, value)
    if not ((0.0 < value if low_open else 0.0 <= value) and value <= 1.0):
        raise ValueError(f"{name} must be in {'(0' if low_open else '[0'}, 1], got {value!r}")
    return value


def _positive(name, value):
    value = check_float(name, value)
    if not (value > 0.0 and value != float("inf")):
        raise ValueError(f"{name} must be a finite number > 0, got {value!r}")
    return value


_CHECKS = {
    "max_new_tokens": lambda v: _optional_int("max_new_tokens", v, 0),
    "max_length": lambda v: _optional_int("max_length", v, 1),
    "min_new_tokens": lambda v: check_int("min_new_tokens", v, 0),
    "min_length": lambda v: check_int("min_length", v, 0),
    "do_sample": lambda v: check_bool("do_sample", v),
    "temperature": lambda v: check_float("temperature", v),  # the core names a negative or infinite one
    "top_k": lambda v: check_int("top_k", v, 0),
    "top_p": lambda v: _unit("top_p", v, True),
    "min_p": lambda v: _unit("min_p", v, False),
    "typical_p": lambda v: _unit("typical_p", v, True),
    "repetition_penalty": lambda v: _positive("repetition_penalty", v),
    "no_repeat_ngram_size": lambda v: check_int("no_repeat_ngram_size", v, 0),
    "eos_token_id": _eos,
    "stop_strings": _stop_strings,
    "seed": check_seed,
    "num_return_sequences": lambda v: check_int("num_return_sequences", v, 1),
    "num_beams": lambda v: check_int("num_beams", v, 1),
    "length_penalty": lambda v: check_float("length_penalty", v),
    "early_stopping": _early_stopping,
    "num_assistant_tokens": lambda v: check_int("num_assistant_tokens", v, 1),
    "prompt_lookup_num_tokens": lambda v: _optional_int("prompt_lookup_num_tokens", v, 1),
    "max_matching_ngram_size": lambda v: check_int("max_matching_ngram_size", v, 1),
    "use_cache": lambda v: check_bool("use_cache", v),
    "cache_dtype": lambda v: None if v is None else check_dtype("cache_dtype", v),
    "streamer": _streamer,
    "return_dict_in_generate": lambda v: check_bool("return_dict_in_generate", v),
    "output_scores": lambda v: check_bool("output_scores", v),
    "output_logits": lambda v: check_bool("output_logits", v),
    "top_logprobs": lambda v: check_int("top_logprobs", v, 0),
}


def resolve(method: str, max_new_tokens, options: Dict[str, Any], exclude: Tuple[str, ...] = (),
            why: str = "") -> GenerationConfig:
    """A call's options, checked: a TypeError naming the method for a keyword it does not take (and why, for one of
    the excluded generation keywords), the check's own TypeError or ValueError for a bad value.
    generation_config= supplies the defaults the keywords override."""
    base = options.pop("generation_config", None)
    if base is None:
        base = GenerationConfig()
    elif not isinstance(base, GenerationConfig):
        raise TypeError(f"generation_config must be a kvcache.GenerationConfig, got {type(base).__name__}")
    for name in options:
        if name not in FIELDS or name in exclude:
            taken = ", ".join(n for n in FIELDS if n not in exclude and n != "max_new_tokens")
            reason = f" ({why})" if why and name in FIELDS else ""
            raise TypeError(f"{method}() got an unexpected keyword argument {name!r}{reason}; it takes: {taken}")
    if max_new_tokens is not None:
        options["max_new_tokens"] = max_new_tokens
    values = {name: options.get(name, getattr(base, name)) for name in FIELDS}
    for name, check in _CHECKS.items():
        values[name] = check(values[name])
    return GenerationConfig(**values)


def with_generation_options(*, exclude: Tuple[str, ...] = ()):
    """Shows a method taking **options as taking every generation keyword: help() and inspect.signature list them
    with their defaults, and the docstring gains their meanings."""

    def wrap(fn):
        sig = inspect.signature(fn)
        params = [p for p in sig.parameters.values() if p.kind != inspect.Parameter.VAR_KEYWORD]
        taken = [n for n in FIELDS if n not in exclude and n not in sig.parameters]
        params += [inspect.Parameter(n, inspect.Parameter.KEYWORD_ONLY, default=FIELDS[n].default) for n in taken]
        params.append(inspect.Parameter("generation_config", inspect.Parameter.KEYWORD_ONLY, default=None))
        fn.__signature__ = sig.replace(parameters=params)
        lines = [f"    {n}: {FIELDS[n].metadata['doc']}." for n in taken]
        fn.__doc__ = (inspect.cleandoc(fn.__doc__ or "") + "\n\nGeneration keywords (kvcache.GenerationConfig):\n"
                      + "\n".join(lines) + "\n    generation_config: a GenerationConfig the keywords override.")
        return fn

    return wrap
