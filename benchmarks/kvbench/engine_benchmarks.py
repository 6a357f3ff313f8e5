"""This engine's generation, timed: with and without the KV cache, the speedup between the two by length, the
cost model of an uncached step, and throughput by batch size."""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import List, Optional, Sequence, Tuple, Union

import numpy as np

from kvcache import _core
from kvcache.model import GPT2

from .kv_memory import as_shape
from .prompts import prompt_ids
from .timing import GenerationRecord, Tick, time_generation


def _run_kvcache(model: GPT2, rows: List[List[int]], use_cache: bool, n: int, tick: Tick):
    generator = _core.Generator(model._core, rows, max_new_tokens=n, use_cache=use_cache)
    while generator.step():
        tick()
    produced = min(len(s) - len(r) for s, r in zip(generator.sequences, rows))
    return produced, generator.cache_nbytes


def benchmark_generation(model: GPT2, prompt: Union[str, int, Sequence[int]], max_new_tokens: int,
                         use_cache: bool = True, batch_size: int = 1, repeats: int = 3,
                         time_budget_s: Optional[float] = None, progress: bool = False) -> GenerationRecord:
    """Time generation on this engine, prefill and every decode step apart (Generator.step is one of each).

    prompt: text, ids, or an int (a prompt of that many tokens). The batch repeats the prompt batch_size
    times. Without the cache every step recomputes the whole sequence (its "cache" is scratch for that)."""
    ids = prompt_ids(model, prompt)
    runner = functools.partial(_run_kvcache, model, [ids] * batch_size, use_cache)
    return time_generation(runner, max_new_tokens, repeats, time_budget_s, progress, as_shape(model.config),
                           engine="kvcache", mode="cache" if use_cache else "no cache", prompt_tokens=len(ids),
                           batch_size=batch_size, weights_nbytes=model.weights_nbytes)


@dataclass
class SpeedupRow:
    """Cached vs uncached at one (prompt length, new tokens): speedup = uncached time / cached time."""
    prompt_tokens: int
    new_tokens: int
    speedup: float
    cached: GenerationRecord
    uncached: GenerationRecord


def compare_cache_performance(model: GPT2, prompt: Union[str, int, Sequence[int]],
                              lengths: Sequence[int] = (20, 50, 100, 200, 500), batch_size: int = 1,
                              repeats: int = 3, time_budget_s: Optional[float] = 30.0,
                              progress: bool = True) -> List[SpeedupRow]:
    """Cached and uncached generation at each length, same prompt. The uncached cost grows with the square of
    the length, so long uncached runs are usually timed once (time_budget_s); the record says how often."""
    ids = prompt_ids(model, prompt)
    rows = []
    for n in lengths:
        cached, uncached = (benchmark_generation(model, ids, n, use_cache, batch_size, repeats, time_budget_s,
                                                 progress) for use_cache in (True, False))
        rows.append(SpeedupRow(len(ids), n, uncached.total_s / cached.total_s, cached, uncached))
    return rows


def uncached_step_cost(record: GenerationRecord) -> Tuple[float, float]:
    """(fixed seconds, seconds per token) of a straight line through an uncached run's step latencies against
    the length each step recomputes. n new tokens then cost about n x fixed + per_token x (n x P + n^2 / 2)
    without the cache, against n decode steps with it: the speedup is roughly (P + n/2) x per_token / step."""
    lengths = record.prompt_tokens + 1 + np.arange(len(record.step_s))
    per_token, fixed = np.polyfit(lengths, record.step_s, 1)
    return float(fixed), float(per_token)


def benchmark_batch(model: GPT2, prompt: Union[str, int, Sequence[int]], max_new_tokens: int,
                    batch_sizes: Sequence[int] = (1, 2, 4, 8), repeats: int = 3,
                    time_budget_s: Optional[float] = 30.0, progress: bool = True) -> List[GenerationRecord]:
    """Cached generation at each batch size: a decode step reads the weights once for the whole batch, so
    throughput grows with the batch while the cache grows linearly with it."""
    return [benchmark_generation(model, prompt, max_new_tokens, True, b, repeats, time_budget_s, progress)
            for b in batch_sizes]
