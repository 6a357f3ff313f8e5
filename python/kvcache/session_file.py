"""A session on disk: one safetensors file (docs/sessions.md).

Tensors:  "tokens"            int64 (n_tokens,)          every id of the history
          "layers.{l}.keys"    (n_kv_head, held, head_dim) the cache's filled positions of layer l, in the cache's
          "layers.{l}.values"  (n_kv_head, held, head_dim) dtype: F32, F16, or U16 holding bfloat16's bits
Metadata: format "kvcache.session", version "1", model (the class), fingerprint (of the weights as computed),
          weights_dtype, cache_dtype, n_layer, n_kv_head, head_dim, max_seq_len, held, messages and turn_ends (JSON).
Loading checks every field, name, dtype and shape before any position is written, and refuses another model's
session (another fingerprint): its keys and values would continue a different computation.
"""

from __future__ import annotations

import json
import os
from typing import Dict

import numpy as np

FORMAT = "kvcache.session"
VERSION = "1"
_STORED_DTYPES = {"float32": np.float32, "float16": np.float16, "bfloat16": np.uint16}


def save_session(session, path) -> None:
    from safetensors.numpy import save_file

    path = _path(path)
    cache, model = session.cache, session.model
    held = cache.get_seq_length()
    positions = cache.read(0, 0, held)  # (L, 2, NKV, held, HS)
    tensors: Dict[str, np.ndarray] = {"tokens": np.asarray(session._tokens, dtype=np.int64)}
    for layer in range(cache.n_layer):
        tensors[f"layers.{layer}.keys"] = np.ascontiguousarray(positions[layer, 0])
        tensors[f"layers.{layer}.values"] = np.ascontiguousarray(positions[layer, 1])
    metadata = {
        "format": FORMAT, "version": VERSION, "model": type(model).__name__, "fingerprint": model.fingerprint,
        "weights_dtype": model.weights_dtype, "cache_dtype": cache.dtype, "n_layer": str(cache.n_layer),
        "n_kv_head": str(cache.n_kv_head), "head_dim": str(cache.head_dim), "max_seq_len": str(cache.max_seq_len),
        "held": str(held), "messages": json.dumps(session._messages), "turn_ends": json.dumps(session._turn_ends),
    }
    tmp = f"{path}.{os.getpid()}.tmp"
    try:
        save_file(tensors, tmp, metadata=metadata)
        os.replace(tmp, path)  # a failed save leaves an older file intact
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def _path(path) -> str:
    if not isinstance(path, (str, os.PathLike)):
        raise TypeError(f"path must be a str or os.PathLike, got {type(path).__name__}")
    return os.fspath(path)


def _int_field(meta: Dict[str, str], name: str, path: str, minimum: int = 0) -> int:
    value = meta.get(name)
    if value is None or not value.isdigit() or int(value) < minimum:
        raise ValueError(f"{path}: session metadata {name}={value!r} is not an integer >= {minimum}")
    return int(value)


def _json_field(meta: Dict[str, str], name: str, path: str):
    try:
        return json.loads(meta.get(name, ""))
    except json.JSONDecodeError:
        raise ValueError(f"{path}: session metadata {name} is not valid JSON") from None


def load_session(cls, model, path, max_seq_len=None):
    from safetensors import SafetensorError, safe_open

    path = _path(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"no session file at {path!r}")
    try:
        with safe_open(path, framework="numpy") as f:
            meta = f.metadata() or {}
            names = set(f.keys())
            _check_metadata(meta, model, path)
            n_layer = int(meta["n_layer"])
            expected = {"tokens"} | {f"layers.{l}.{kv}" for l in range(n_layer) for kv in ("keys", "values")}
            if names != expected:
                extra, missing = sorted(names - expected), sorted(expected - names)
                raise ValueError(f"{path}: session tensors do not match its metadata (missing {missing[:3]}, "
                                 f"unexpected {extra[:3]})")
            tensors = {name: f.get_tensor(name) for name in sorted(names)}
    except SafetensorError as e:
        raise ValueError(f"{path}: not a readable session file ({e})") from None
    return _build(cls, model, meta, tensors, path, max_seq_len)


def _check_metadata(meta: Dict[str, str], model, path: str) -> None:
    if meta.get("format") != FORMAT:
        raise ValueError(f"{path}: not a kvcache session file (format={meta.get('format')!r})")
    if meta.get("version") != VERSION:
        raise ValueError(f"{path}: session format version {meta.get('version')!r} is not supported (this kvcache "
                         f"reads version {VERSION})")
    if meta.get("model") != type(model).__name__ or meta.get("weights_dtype") != model.weights_dtype:
        raise ValueError(f"{path}: saved from a {meta.get('model')} with {meta.get('weights_dtype')} weights; this is "
                         f"a {type(model).__name__} with {model.weights_dtype} weights")
    if meta.get("fingerprint") != model.fingerprint:
        raise ValueError(f"{path}: saved from another model (weights fingerprint {meta.get('fingerprint')!r}, this "
                         f"model's is {model.fingerprint!r}); its keys and values would not continue this model")
    if meta.get("cache_dtype") not in _STORED_DTYPES:
        raise ValueError(f"{path}: cache_dtype {meta.get('cache_dtype')!r} is not one of {sorted(_STORED_DTYPES)}")
    shape = model._core.new_cache(1, 1, "float32")
    for name in ("n_layer", "n_kv_head", "head_dim"):
        if _int_field(meta, name, path, 1) != getattr(shape, name):
            raise ValueError(f"{path}: {name}={meta[name]} differs from this model's {getattr(shape, name)}")


def _build(cls, model, meta, tensors, path, max_seq_len):
    tokens = tensors["tokens"]
    if tokens.dtype != np.int64 or tokens.ndim != 1:
        raise ValueError(f"{path}: tokens must be a 1-D int64 tensor, got {tokens.dtype} of shape {tokens.shape}")
    V = model.config.n_vocab
    if tokens.size and (tokens.min() < 0 or tokens.max() >= V):
        bad = int(tokens[(tokens < 0) | (tokens >= V)][0])
        raise ValueError(f"{path}: token id {bad} is outside the vocabulary [0, {V})")
    held = _int_field(meta, "held", path)
    if held > tokens.size:
        raise ValueError(f"{path}: the cache holds {held} positions, more than the {tokens.size} tokens")
    saved_len = _int_field(meta, "max_seq_len", path, 1)
    max_seq_len = saved_len if max_seq_len is None else max_seq_len
    if tokens.size > max_seq_len:
        raise ValueError(f"{path}: the session holds {tokens.size} tokens, more than max_seq_len={max_seq_len}")
    dtype = meta["cache_dtype"]
    n_layer, nkv, hs = int(meta["n_layer"]), int(meta["n_kv_head"]), int(meta["head_dim"])
    stored = np.dtype(_STORED_DTYPES[dtype])
    positions = np.empty((n_layer, 2, nkv, held, hs), dtype=stored)
    for layer in range(n_layer):
        for kv, part in enumerate(("keys", "values")):
            t = tensors[f"layers.{layer}.{part}"]
            if t.dtype != stored or t.shape != (nkv, held, hs):
                raise ValueError(f"{path}: layers.{layer}.{part} is {t.dtype} {t.shape}, expected {stored} "
                                 f"{(nkv, held, hs)} for a {dtype} cache of {held} positions")
            positions[layer, kv] = t
    if dtype != "bfloat16" and not np.isfinite(positions).all():
        raise ValueError(f"{path}: the cached keys and values hold non-finite numbers")
    messages, turn_ends = _json_field(meta, "messages", path), _json_field(meta, "turn_ends", path)
    if not (isinstance(messages, list) and all(isinstance(m, dict) for m in messages) and isinstance(turn_ends, list)
            and all(isinstance(e, int) and 0 <= e <= tokens.size for e in turn_ends)
            and len(messages) == 2 * len(turn_ends)):
        raise ValueError(f"{path}: session messages and turn_ends do not describe a conversation")
    session = cls(model, max_seq_len=max_seq_len, dtype=dtype)
    if held:
        session.cache.append(0, positions)
    session._tokens = tokens.tolist()
    session._messages = messages
    session._turn_ends = turn_ends
    return session
