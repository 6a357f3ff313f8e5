"""Beam search as transformers' generate(num_beams=n, do_sample=False) does it (GenerationMixin._beam_search,
transformers 4.50+), step for step: the same candidates (2 n per step, more with several end ids), the same
finished-hypothesis bookkeeping, length_penalty, and the early_stopping modes True / False / "never", so that the
tokens are transformers' on the same checkpoint.

The keys and values are never recomputed: beam i lives in cache row rows[i]; when the beams are reordered, the first
child of a parent keeps the parent's row and every further child gets a copy of it (KVCache.copy_row) in a row no
new beam descends from. Only the rows that change are copied.
"""

from __future__ import annotations

from typing import List, Optional, Union

import numpy as np

from .arguments import check_dtype, check_float, check_int
from .generation import check_context, own_cache

_NEG = np.float32(-1.0e9)  # transformers' "never chosen" score


def _log_softmax(logits: np.ndarray) -> np.ndarray:
    shifted = logits - logits.max(axis=-1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=-1, keepdims=True))


def _topk(values: np.ndarray, k: int) -> np.ndarray:
    """Indices of the k largest, largest first; equal values in index order."""
    if k < values.size:
        part = np.argpartition(-values, k - 1)[:k]
        # a tie at the k-th value could have been cut arbitrarily: take every index holding it, then the first
        kth = values[part].min()
        part = np.union1d(part[values[part] > kth], np.flatnonzero(values == kth))
    else:
        part = np.arange(values.size)
    order = np.lexsort((part, -values[part]))
    return part[order][:k]


def _reorder(cache, rows: List[int], parents: np.ndarray) -> List[int]:
    """Cache rows for the new beams, beam i descending from old beam parents[i]."""
    new_rows: List[Optional[int]] = [None] * len(parents)
    claimed = set()
    for i, p in enumerate(parents):
        if rows[p] not in claimed:
            new_rows[i] = rows[p]
            claimed.add(rows[p])
    free = [r for r in range(len(rows)) if r not in claimed]
    for i, p in enumerate(parents):
        if new_rows[i] is None:
            new_rows[i] = free.pop()
            cache.copy_row(rows[p], new_rows[i])
    return new_rows


def beam_search(model, prompts: List[List[int]], max_new_tokens: int, *, num_beams: int,
                num_return_sequences: int = 1, length_penalty: float = 1.0,
                early_stopping: Union[bool, str] = False, eos_token_id: Optional[int] = None,
                cache_dtype: Optional[str] = None) -> List[List[int]]:
    """The num_return_sequences best beams of each prompt, best first (prompt-major), each its prompt plus its new
    tokens up to and including the end id that finished it."""
    max_new_tokens = check_int("max_new_tokens", max_new_tokens, 0)
    num_beams = check_int("num_beams", num_beams, 1)
    n_return = check_int("num_return_sequences", num_return_sequences, 1)
    if n_return > num_beams:
        raise ValueError(f"num_return_sequences={n_return} must be <= num_beams={num_beams}: beam search returns "
                         f"its best beams")
    length_penalty = check_float("length_penalty", length_penalty)
    if early_stopping not in (True, False, "never") or isinstance(early_stopping, (int, float)) and \
            not isinstance(early_stopping, bool):
        raise ValueError(f"early_stopping must be True, False or 'never', got {early_stopping!r}")
    if eos_token_id is not None:
        check_int("eos_token_id", eos_token_id, 0)
    dtype = check_dtype("cache_dtype", "float32" if cache_dtype is None else cache_dtype)
    for p, prompt in enumerate(prompts):
        if not prompt:
            raise ValueError(f"prompt {p} is empty; give at least one token")
    check_context(model, prompts, max_new_tokens)
    out: List[List[int]] = []
    for prompt in prompts:
        if max_new_tokens == 0:
            out += [list(prompt) for _ in range(n_return)]
        else:
            out += _search(model, prompt, max_new_tokens, num_beams, n_return, length_penalty, early_stopping,
                           eos_token_id, dtype)
    return out


def _search(model, prompt, max_new_tokens, n, n_return, length_penalty, early_stopping, eos, dtype):
    P = len(prompt)
    max_length = P + max_new_tokens
    n_eos = 0 if eos is None else 1
    K = max(2, 1 + n_eos) * n
    top_n_mask = np.arange(K) < n
    fill = eos if eos is not None else -1

    running = np.full((n, max_length), fill, dtype=np.int64)
    running[:, :P] = prompt
    finished = running.copy()
    finished_lens = np.full(n, P, dtype=np.int64)
    running_scores = np.zeros(n, dtype=np.float32)
    running_scores[1:] = _NEG  # only the first beam's tokens count at the first step: the beams start equal
    finished_scores = np.full(n, _NEG, dtype=np.float32)
    is_finished = np.zeros(n, dtype=bool)
    improvable = True

    cache = own_cache(model, [prompt], max_new_tokens, n, dtype)
    rows = list(range(n))
    log_probs = np.broadcast_to(_log_softmax(model.forward([prompt], cache, rows=[0], logits="last")), (n, model.config.n_vocab))
    V = log_probs.shape[1]
    cur_len = P
    while True:
        scores = (log_probs + running_scores[:, None]).reshape(-1)
        top = _topk(scores, K)
        top_scores = scores[top]
        top_beams, top_tokens = top // V, top % V
        candidates = running[top_beams].copy()
        candidates[:, cur_len] = top_tokens
        hits = np.full(K, cur_len + 1 >= max_length)
        if eos is not None:
            hits |= top_tokens == eos

        # the best unfinished candidates run on
        running_candidates = top_scores + hits.astype(np.float32) * _NEG
        keep = _topk(running_candidates, n)
        running = candidates[keep]
        running_scores = running_candidates[keep]
        parents = top_beams[keep]

        # finished candidates among the top n join the finished hypotheses if they beat them
        just_finished = hits & top_n_mask
        final = top_scores / np.float32((cur_len + 1 - P) ** length_penalty)
        if is_finished.all() and early_stopping is True:
            final = final + _NEG
        if not improvable:
            final = final + _NEG
        final = final + (~just_finished).astype(np.float32) * _NEG
        merged_scores = np.concatenate([finished_scores, final])
        best = _topk(merged_scores, n)
        finished = np.concatenate([finished, candidates])[best]
        finished_lens = np.concatenate([finished_lens, np.full(K, cur_len + 1)])[best]
        finished_scores = merged_scores[best]
        is_finished = np.concatenate([is_finished, just_finished])[best]

        cur_len += 1
        best_length = max_length - P if early_stopping == "never" and length_penalty > 0.0 else cur_len - P
        best_possible = running_scores[0] / np.float32(best_length ** length_penalty)
        worst_finished = np.where(is_finished, finished_scores.min(), _NEG)
        improvable = improvable and bool(np.any(best_possible > worst_finished))
        if not improvable or (is_finished.all() and early_stopping is True) or hits.all():
            break
        rows = _reorder(cache, rows, parents)
        logits = model.forward(running[:, cur_len - 1:cur_len], cache, rows=rows, logits="last")
        log_probs = _log_softmax(logits)
    return [finished[i, :finished_lens[i]].tolist() for i in range(n_return)]
