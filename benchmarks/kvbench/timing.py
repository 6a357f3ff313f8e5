"""How one generation is timed, the same way for every engine: a warm-up run that is not counted, then up to
`repeats` timed runs (fewer once `time_budget_s` is spent, never fewer than one), each step stamped with
time.perf_counter, summarized by medians into a GenerationRecord."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Callable, List, Optional, Sequence, Tuple

import numpy as np
from tqdm import tqdm

from .kv_memory import ModelShape, kv_cache_bytes
from .process_memory import PeakRSS

# A runner performs one generation of n new tokens per row, calling tick() once per produced token (the first
# after the prompt's pass), and returns (new tokens per row, KV-cache bytes or None when unknown).
Tick = Callable[[], None]
Runner = Callable[[int, Tick], Tuple[int, Optional[int]]]

WARMUP_TOKENS = 4  # the warm-up is a short run: it starts thread pools and pages the weights in


@dataclass
class GenerationRecord:
    """One benchmarked configuration: medians over `repeats` timed runs."""
    engine: str                    # "kvcache" or "transformers"
    model: str                     # shape name ("gpt2", or "2L-4H-32D" when not a known one)
    mode: str                      # "cache", "static cache" or "no cache"
    prompt_tokens: int
    new_tokens: int                # generated per row (always the full max_new_tokens)
    batch_size: int
    repeats: int                   # timed runs (warm-up excluded)
    total_s: float                 # whole generate call
    prefill_s: float               # prompt pass + first token (+ allocating the cache)
    step_s: List[float]            # each later token, by position (median over runs)
    tokens_per_s: float            # batch x new tokens / total_s
    decode_tokens_per_s: Optional[float]   # batch / median decode step
    bandwidth_bytes_per_s: Optional[float]  # weights read per decode step / median step
    kv_cache_bytes: Optional[int]  # as the engine reports it (None: unknown)
    kv_formula_bytes: int          # the formula for prompt + new tokens positions, at the engine's float32
    peak_rss_delta_bytes: Optional[int]
    weights_nbytes: int


@dataclass
class _Run:
    seconds: float
    step_s: List[float]  # one per produced token; the first is the prompt's pass (prefill)
    new_tokens: int
    kv_cache_bytes: Optional[int]
    peak_rss_delta_bytes: Optional[int]


def _time_run(runner: Runner, n: int, bar: tqdm) -> _Run:
    stamps: List[float] = []

    def tick() -> None:
        stamps.append(time.perf_counter())
        bar.update()

    with PeakRSS() as memory:
        start = time.perf_counter()
        new_tokens, kv_bytes = runner(n, tick)
        seconds = time.perf_counter() - start
    return _Run(seconds, np.diff([start] + stamps).tolist(), new_tokens, kv_bytes, memory.delta)


def _median(values: Sequence[float]) -> Optional[float]:
    return float(np.median(values)) if len(values) else None


def _summarize(runs: List[_Run], shape: ModelShape, **meta) -> GenerationRecord:
    steps = np.median([r.step_s for r in runs], axis=0)
    total = float(np.median([r.seconds for r in runs]))
    step = _median(steps[1:])
    rss = [r.peak_rss_delta_bytes for r in runs if r.peak_rss_delta_bytes is not None]
    batch, weights = meta["batch_size"], meta["weights_nbytes"]
    return GenerationRecord(
        repeats=len(runs), total_s=total, prefill_s=float(steps[0]), step_s=steps[1:].tolist(),
        tokens_per_s=batch * runs[0].new_tokens / total, new_tokens=runs[0].new_tokens,
        decode_tokens_per_s=batch / step if step else None, bandwidth_bytes_per_s=weights / step if step else None,
        kv_cache_bytes=runs[0].kv_cache_bytes, peak_rss_delta_bytes=int(np.median(rss)) if rss else None,
        model=shape.name, kv_formula_bytes=kv_cache_bytes(shape, meta["prompt_tokens"] + runs[0].new_tokens, batch),
        **meta)


def time_generation(runner: Runner, n: int, repeats: int, time_budget_s: Optional[float], progress: bool,
                    shape: ModelShape, **meta) -> GenerationRecord:
    """Warm up, then time up to `repeats` runs (stopping early once time_budget_s is spent) and summarize.
    meta: the record's engine, mode, prompt_tokens, batch_size and weights_nbytes."""
    if repeats < 1 or n < 1:
        raise ValueError(f"repeats and max_new_tokens must be >= 1, got {repeats} and {n}")
    runner(min(n, WARMUP_TOKENS), lambda: None)
    runs: List[_Run] = []
    desc = f"{meta['engine']} {meta['mode']}, prompt {meta['prompt_tokens']} + {n} tokens x {meta['batch_size']}"
    while len(runs) < repeats:
        with tqdm(total=n, desc=desc, unit="tok", leave=False, disable=not progress) as bar:
            runs.append(_time_run(runner, n, bar))
        if runs[-1].new_tokens != n:
            raise RuntimeError(f"{desc}: generated {runs[-1].new_tokens} tokens instead of {n}")
        if time_budget_s is not None and sum(r.seconds for r in runs) >= time_budget_s:
            break
    return _summarize(runs, shape, **meta)
