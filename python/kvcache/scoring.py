"""Scores of a sequence under a model: per-token log-likelihoods (score) and the strided sliding-window perplexity of
transformers' guide (perplexity), both computed through the KV cache a chunk of tokens at a time, so that at most
chunk_size positions of logits (chunk_size x n_vocab float32) exist at once, whatever the length.

model.score() and model.perplexity() (causal_lm.py) delegate here; docs/scoring.md has examples.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import List, Optional, Sequence, Union

import numpy as np

from ._core import KVCache
from .arguments import check_int
from .token_ids import parse_prompts

# Positions per forward call (rows x positions in a batch): 128 x 49152 float32 logits of SmolLM2 are 24 MiB. Larger
# chunks are no faster: a 1024-token window of SmolLM2 took 3.93 / 3.87 / 3.98 s in chunks of 128 / 256 / 512 (in
# alternation, fastest of 3); each call reads every weight once, a small part of a 128-row call.
CHUNK_SIZE = 128


@dataclass(frozen=True)
class PerplexityResult:
    """ppl = exp(nll); nll: the mean negative log-likelihood per token in nats, nll_sum / n_tokens as the guide
    accumulates them; n_tokens: the guide's count, the sum over windows of (tokens scored - 1); windows: how many
    windows slid over the sequence."""

    ppl: float
    nll: float
    n_tokens: int
    windows: int


# ---- log-softmax ------------------------------------------------------------------------------------------------


def _log_probs_of(logits: np.ndarray, targets: np.ndarray) -> np.ndarray:
    """log softmax(logits[t])[targets[t]] for each row t, float64; logits (T, V) float32, overwritten.

    Careful with float32: each row is shifted by its maximum before exp (no overflow, the largest term exactly 1),
    the exp is float32, and the sum, the log and logit - max are float64; within 1e-7 of a float64 log-softmax of
    the same logits."""
    rows = np.arange(len(targets))
    picked = logits[rows, targets].astype(np.float64)
    top = logits.max(axis=1)
    np.subtract(logits, top[:, None], out=logits)
    np.exp(logits, out=logits)
    return picked - top.astype(np.float64) - np.log(logits.sum(axis=1, dtype=np.float64))


# ---- the passes through the cache ---------------------------------------------------------------------------------


def _group_log_probs(model, seqs: Sequence[np.ndarray], cache: KVCache, chunk_size: int,
                     first: int = 1) -> List[np.ndarray]:
    """For each sequence s of seqs (each at least first + 1 >= 2 tokens), log p(s[j] | s[:j]) for j in
    [first, len(s)), float64. The rows go through cache (reset here; batch len(seqs), at least max(len) - 1 positions)
    side by side, right-padded to the longest: causal attention keeps the padding out of every real position. A
    sequence's last token is never fed (its logits would predict what follows it), nor are logits computed for the
    first - 1 positions before the first predicting one (logits="last")."""
    n_rows = len(seqs)
    width = max(len(s) for s in seqs) - 1  # positions fed
    tokens = np.zeros((n_rows, width), dtype=np.int64)  # padding id 0: any id in the vocabulary
    for i, s in enumerate(seqs):
        tokens[i, :len(s) - 1] = s[:-1]
    cache.reset()
    step = max(1, chunk_size // n_rows)
    context = first - 1  # positions whose logits nothing needs
    for start in range(0, context, step):
        model.forward(tokens[:, start:min(start + step, context)], cache, logits="last")
    parts: List[List[np.ndarray]] = [[] for _ in seqs]
    for start in range(context, width, step):
        end = min(start + step, width)
        logits = model.forward(tokens[:, start:end], cache)  # (n_rows, end - start, V)
        for i, s in enumerate(seqs):
            real = min(end, len(s) - 1) - start  # positions of row i in this chunk that predict one of its tokens
            if real > 0:
                parts[i].append(_log_probs_of(logits[i, :real], s[start + 1:start + 1 + real]))
    return [np.concatenate(p) if p else np.zeros(0) for p in parts]


def _groups(lengths: Sequence[int], chunk_size: int) -> List[List[int]]:
    """Indices of the sequences, longest first, packed into groups that one forward call can take side by side:
    at most chunk_size positions in all (rows x the group's longest); a longer sequence is a group alone, fed a chunk
    at a time."""
    order = sorted(range(len(lengths)), key=lambda i: -lengths[i])
    groups: List[List[int]] = []
    for i in order:
        if groups and (len(groups[-1]) + 1) * (lengths[groups[-1][0]] - 1) <= chunk_size:
            groups[-1].append(i)
        else:
            groups.append([i])
    return groups


# ---- inputs --------------------------------------------------------------------------------------------------------


def _encode(model, text: str, where: str = "") -> List[int]:
    if model.tokenizer is None:
        raise ValueError("this model has no tokenizer (its checkpoint has no tokenizer files); score token ids")
    ids = model.tokenizer.encode(text)
    if not ids:
        raise ValueError(f"text{where} is empty; give at least one character of text")
    return ids


def _sequences(model, text_or_ids) -> tuple[List[np.ndarray], bool]:
    """The sequences to score as int64 arrays (every id in the vocabulary, none empty), and whether the input was one
    sequence (a str, a list of ids, a 1-D array) rather than a batch (a list of str or of id lists, a 2-D array)."""
    if isinstance(text_or_ids, str):
        rows, single = [_encode(model, text_or_ids)], True
    elif isinstance(text_or_ids, (list, tuple)) and text_or_ids and all(isinstance(t, str) for t in text_or_ids):
        rows, single = [_encode(model, t, f" {i}") for i, t in enumerate(text_or_ids)], False
    else:
        prompts = parse_prompts(text_or_ids, model.config.n_vocab)  # lists, arrays or tensors
        rows, single = prompts.rows, prompts.single
    for i, r in enumerate(rows):
        if not r:
            raise ValueError("token ids are empty; give at least one id" if single else
                             f"sequence {i} of the batch is empty; give at least one id")
    return [np.asarray(r, dtype=np.int64) for r in rows], single


# ---- the public functions -------------------------------------------------------------------------------------------


def score(model, text_or_ids, *, chunk_size: Optional[int] = None) -> Union[np.ndarray, List[np.ndarray]]:
    """Per-token log-likelihoods: for a sequence x of n tokens, the float64 array of the n - 1 values
    log p(x_i | x_<i), i = 1..n-1, natural log (x_0 has no context to be predicted from; a 1-token sequence gives
    an empty array). A batch (a list of str or of id lists of any lengths, or a 2-D array) gives a list of arrays.

    Text is encoded as model.encode() does (no BOS is added). Each sequence must fit the context (n <= n_ctx);
    longer text is what perplexity(stride=) is for. Sequences go through the KV cache chunk_size positions per call
    (short ones side by side, right-padded), so at most chunk_size x n_vocab float32 logits exist at once; the
    log-softmax is float64 over the model's float32 logits (_log_probs_of)."""
    chunk_size = check_int("chunk_size", CHUNK_SIZE if chunk_size is None else chunk_size, 1)
    seqs, single = _sequences(model, text_or_ids)
    n_ctx = model.config.n_ctx
    for i, s in enumerate(seqs):
        if len(s) > n_ctx:
            where = "" if single else f" (sequence {i} of the batch)"
            raise ValueError(f"a sequence of {len(s)} tokens{where} is longer than the model's context n_ctx={n_ctx}: "
                             f"score() scores whole sequences; for longer text use perplexity(text_or_ids, "
                             f"stride=...), which slides a window of at most n_ctx tokens over it")
    out: List[np.ndarray] = [np.zeros(0) for _ in seqs]
    scored = [i for i, s in enumerate(seqs) if len(s) >= 2]
    for group in _groups([len(seqs[i]) for i in scored], chunk_size):
        members = [seqs[scored[g]] for g in group]
        cache = model.new_cache(len(members), max(len(s) for s in members) - 1)
        for g, logp in zip(group, _group_log_probs(model, members, cache, chunk_size)):
            out[scored[g]] = logp
    return out[0] if single else out


def perplexity(model, text_or_ids, *, stride: Optional[int] = None, max_length: Optional[int] = None,
               chunk_size: Optional[int] = None) -> PerplexityResult:
    """The perplexity of one sequence as transformers' guide "Perplexity of fixed-length models" computes it
    (https://huggingface.co/docs/transformers/perplexity), with the same arithmetic:

        for begin in range(0, seq_len, stride):
            end = min(begin + max_length, seq_len); trg_len = end - prev_end
            window ids[begin:end], labels masked (-100) but its last trg_len
            loss = mean NLL over the labels the model scores (it shifts them by one: a window's first token has no
                   logits before it, so the first window scores trg_len - 1 tokens, a later one trg_len)
            nll_sum += loss * (trg_len - 1); n_tokens += trg_len - 1     # the guide's num_loss_tokens
            prev_end = end; stop once end == seq_len
        ppl = exp(nll_sum / n_tokens)

    max_length: the window (default n_ctx, at most n_ctx); stride: how far each window moves (default
    max_length // 2, the guide's 512 of GPT-2's 1024; 1 <= stride <= max_length). stride == max_length is disjoint
    windows, every token scored once after the window's first. With stride < max_length, every token after the
    first is scored exactly once, with at least max_length - stride tokens of context; the guide's weight trg_len - 1
    then counts one token fewer than each later window's mean was taken over (kept here, to give the guide's number).
    A window whose weight is 0 (a last window of one token) adds nothing, where the guide's loop would add
    NaN * 0 (the mean of no labels). One cache of min(max_length, seq_len) - 1 positions serves every window (reset
    between them); the context part of a window is fed without logits. Text is encoded as model.encode() does."""
    if isinstance(text_or_ids, (list, tuple)) and text_or_ids and isinstance(text_or_ids[0], (str, list, tuple,
                                                                                              np.ndarray)):
        raise TypeError("perplexity() takes one sequence (a str, a list of ids or a 1-D array), got a batch; join "
                        "the texts into one, or call it once per text")
    if isinstance(text_or_ids, np.ndarray) and text_or_ids.ndim != 1:
        raise ValueError(f"perplexity() takes one sequence of ids (a 1-D array), got {text_or_ids.ndim} dimensions")
    chunk_size = check_int("chunk_size", CHUNK_SIZE if chunk_size is None else chunk_size, 1)
    n_ctx = model.config.n_ctx
    max_length = check_int("max_length", n_ctx if max_length is None else max_length, 2, n_ctx)
    stride = check_int("stride", max(1, max_length // 2) if stride is None else stride, 1, max_length)
    (ids,), _ = _sequences(model, text_or_ids)
    seq_len = len(ids)
    if seq_len < 2:
        raise ValueError(f"perplexity needs at least 2 tokens (the first is only context), got {seq_len}")

    cache = model.new_cache(1, min(max_length, seq_len) - 1)
    nll_sum, n_tokens, windows, prev_end = 0.0, 0, 0, 0
    for begin in range(0, seq_len, stride):
        end = min(begin + max_length, seq_len)
        trg_len = end - prev_end
        weight = trg_len - 1  # the guide's num_loss_tokens: valid labels less the batch size (1)
        # the labels the model scores: the last trg_len of the window, less its first position (nothing predicts it)
        first = max(end - begin - trg_len, 1)
        if weight > 0:
            (logp,) = _group_log_probs(model, [ids[begin:end]], cache, chunk_size, first=first)
            nll_sum += float(-logp.mean()) * weight
            n_tokens += weight
        windows += 1
        prev_end = end
        if end == seq_len:
            break
    nll = nll_sum / n_tokens
    return PerplexityResult(ppl=math.exp(nll), nll=nll, n_tokens=n_tokens, windows=windows)
