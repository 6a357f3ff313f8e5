"""Speculative decoding: a cheap drafter proposes k tokens, the model checks them all in one forward pass over its
cache, and the positions it rejects are cropped from both caches.

Drafters: an assistant model of the same vocabulary (assistant_model=, num_assistant_tokens=k), or n-gram matches
in the sequence itself (prompt_lookup_num_tokens=k, as transformers' prompt lookup decoding). Greedy gives exactly
the tokens plain greedy gives whenever the model's verifying pass picks the same argmax as its one-token steps (the
pass multiplies k + 1 rows at once, so its float32 sums may differ in the last bits). Sampling follows the rejection
rule of Leviathan et al. 2023 and Chen et al. 2023: a drafted token x is kept with probability min(1, p(x) / q(x)),
and a rejected one is replaced by a draw from max(0, p - q) renormalised, so every token is distributed as p.
Prompt lookup drafts deterministically (q is one token): a draw from p is kept while it equals the draft."""

from __future__ import annotations

from dataclasses import dataclass
from typing import List, Optional

import numpy as np

from . import _core


@dataclass
class SpeculationStats:
    rounds: int = 0    # verifying passes of the model
    drafted: int = 0   # tokens proposed
    accepted: int = 0  # of them, kept

    @property
    def acceptance_rate(self) -> float:
        return self.accepted / self.drafted if self.drafted else 0.0


def _probabilities(logits: np.ndarray, config) -> np.ndarray:
    """(rows, V) logits -> the distributions the sampler draws from (its filters, in its order)."""
    scores = _core.filtered_scores(logits, temperature=config.temperature, top_k=config.top_k, top_p=config.top_p,
                                   min_p=config.min_p, typical_p=config.typical_p).astype(np.float64)
    scores -= scores.max(axis=1, keepdims=True)
    p = np.exp(scores)
    return p / p.sum(axis=1, keepdims=True)


def _draw(p: np.ndarray, rng: np.random.Generator) -> int:
    return int(min(np.searchsorted(np.cumsum(p), rng.random() * p.sum(), side="right"), p.size - 1))


def lookup_draft(sequence: List[int], k: int, max_ngram: int) -> List[int]:
    """As transformers' PromptLookupCandidateGenerator: the k tokens after the first earlier occurrence of the
    sequence's last n tokens, trying n = max_ngram down to 1; none when nothing matches."""
    seq = np.asarray(sequence)
    for n in range(min(max_ngram, len(seq) - 1), 0, -1):
        windows = np.lib.stride_tricks.sliding_window_view(seq[:-1], n)
        hits = np.flatnonzero((windows == seq[-n:]).all(axis=1))
        for start in hits:
            draft = seq[start + n:start + n + k]
            if draft.size:
                return draft.tolist()
    return []


class _Drafter:
    """An assistant model on its own cache, which holds every token of the sequence but the last it was fed."""

    def __init__(self, assistant, max_seq_len: int, dtype: str):
        self.model = assistant
        self.cache = assistant.new_cache(1, max_seq_len, dtype)

    def draft(self, sequence: List[int], k: int, config, rng):
        held = self.cache.get_seq_length()
        tokens, drafts, q = sequence[held:], [], []
        for _ in range(k):
            logits = self.model.forward([tokens], self.cache, logits="last")
            if config.do_sample:
                q.append(_probabilities(logits, config)[0])
                token = _draw(q[-1], rng)
            else:
                token = int(np.argmax(logits[0]))
            drafts.append(token)
            tokens = [token]
        return drafts, q

    def keep(self, n: int) -> None:
        self.cache.crop(min(self.cache.get_seq_length(), n))


def speculative_generate(model, prompt: List[int], config, max_new_tokens: int, eos: tuple,
                         stats: Optional[SpeculationStats] = None) -> List[int]:
    """prompt + up to max_new_tokens new ids, drafted and verified (module docstring)."""
    k = config.num_assistant_tokens if config.assistant_model is not None else config.prompt_lookup_num_tokens
    total = len(prompt) + max_new_tokens
    if total > model.config.n_ctx:
        raise ValueError(f"the prompt of {len(prompt)} tokens plus max_new_tokens={max_new_tokens} is {total} "
                         f"tokens, beyond n_ctx={model.config.n_ctx}")
    dtype = config.cache_dtype or "float32"
    cache = model.new_cache(1, total + k + 1, dtype)
    drafter = _Drafter(config.assistant_model, total + k + 1, dtype) if config.assistant_model is not None else None
    rng = np.random.default_rng(config.seed)
    stats = stats if stats is not None else SpeculationStats()
    seq = list(prompt)
    while len(seq) < total:
        room = min(k, total - len(seq) - 1)  # a round adds the drafts it keeps plus one token of the model's
        q: List[np.ndarray] = []
        if room <= 0:
            drafts = []
        elif drafter is not None:
            drafts, q = drafter.draft(seq, room, config, rng)
        else:
            drafts = lookup_draft(seq, room, config.max_matching_ngram_size)
        held = cache.get_seq_length()
        logits = model.forward([seq[held:] + drafts], cache, logits="all")[0, -(len(drafts) + 1):]
        stats.rounds += 1
        stats.drafted += len(drafts)
        new = _verify(logits, drafts, q, config, rng)
        stats.accepted += len(new) - 1
        for i, token in enumerate(new):
            if token in eos:
                new = new[:i + 1]
                break
        seq += new
        cache.crop(len(seq) - 1)  # the model's cache holds every token but the last
        if drafter is not None:
            drafter.keep(len(seq) - 1)
        if new[-1] in eos:
            break
    return seq


def _verify(logits: np.ndarray, drafts: List[int], q: List[np.ndarray], config, rng) -> List[int]:
    """The drafts the model keeps, then its own next token (a correction, or one past the last draft)."""
    if not config.do_sample or config.temperature == 0.0:
        best = np.argmax(logits, axis=1)
        kept = 0
        while kept < len(drafts) and best[kept] == drafts[kept]:
            kept += 1
        return drafts[:kept] + [int(best[kept])]
    p = _probabilities(logits, config)
    out: List[int] = []
    for i, x in enumerate(drafts):
        if q:  # a drafting model: the rejection rule
            if rng.random() < min(1.0, p[i, x] / q[i][x]):
                out.append(x)
                continue
            residual = np.maximum(p[i] - q[i], 0.0)
            return out + [_draw(residual if residual.sum() > 0 else p[i], rng)]
        token = _draw(p[i], rng)  # a lookup draft is one token for sure: draw from p, keep while it matches
        out.append(token)
        if token != x:
            return out
    return out + [_draw(p[len(drafts)], rng)]
