"""What a KV cache buys and what it costs, measured: time, speedup, per-step latency, memory, batch, and
transformers' GPT-2 side by side on the same weights.

    from kvcache import GPT2, GPT2Config, bench
    model = GPT2.from_config(GPT2Config(), seed=0)
    rows = bench.compare_cache_performance(model, prompt=8, lengths=(20, 50, 100))
    print(bench.format_table(bench.speedup_table(rows)))

Command line (every subcommand writes JSON + CSV under --out and re-draws the figures under --out/figures):

    python -m kvcache.bench all --out results          # the full run (~15 min on 2 cores)
    python -m kvcache.bench all --small --out /tmp/r   # tiny model, seconds (also: KVCACHE_SMALL=1)
    python -m kvcache.bench plot --out results         # figures again from the JSON, nothing re-run

Every timing is one call of the engine timed with time.perf_counter: after a warm-up run that is not counted,
`repeats` runs (fewer once `time_budget_s` is spent, never fewer than one), median kept. Generation always runs
to the full length (no stop at end-of-text), so the cached and uncached runs do the same number of steps.
"""

from __future__ import annotations

import argparse
import csv
import ctypes
import functools
import json
import os
import re
import shlex
import sys
import tempfile
import time
import typing
from dataclasses import asdict, dataclass, field, fields, is_dataclass
from typing import Callable, Dict, List, Optional, Sequence, Tuple, Union

import numpy as np
from tqdm import tqdm

from . import _core, get_num_threads, set_num_threads
from ._core import GPT2Config
from .machine import describe_machine, measure_matmul_flops, measure_read_bandwidth
from .model import GPT2

# ---- model shapes and the formula -----------------------------------------------------------------------------

DTYPE_BYTES = {"float32": 4, "float16": 2, "bfloat16": 2, "int8": 1}


@dataclass(frozen=True)
class ModelShape:
    """The three numbers the KV cache depends on (the vocabulary and the MLP do not matter to it)."""
    name: str
    n_layer: int
    n_head: int
    head_dim: int

    @property
    def n_embd(self) -> int:
        return self.n_head * self.head_dim

    @property
    def dims(self) -> Tuple[int, int, int]:
        return self.n_layer, self.n_head, self.head_dim


SHAPES: Dict[str, ModelShape] = {s.name: s for s in (
    ModelShape("distilgpt2", 6, 12, 64),
    ModelShape("gpt2", 12, 12, 64),
    ModelShape("gpt2-medium", 24, 16, 64),
    ModelShape("gpt2-large", 36, 20, 64),
    ModelShape("gpt2-xl", 48, 25, 64),
    ModelShape("llama-7b", 32, 32, 128),  # LLaMA-7B's attention shape (no grouped-query attention)
)}


def as_shape(config: Union[str, ModelShape, GPT2Config]) -> ModelShape:
    """A known name ("gpt2", "llama-7b", ...), a ModelShape, or anything with n_layer / n_head / head_dim (a
    GPT2Config); a config named after the known shape it matches, so records say "gpt2" rather than numbers."""
    if isinstance(config, ModelShape):
        return config
    if isinstance(config, str):
        if config not in SHAPES:
            raise ValueError(f"unknown model {config!r}; known: {', '.join(SHAPES)}")
        return SHAPES[config]
    return shape_of(config.n_layer, config.n_head, config.head_dim)


def shape_of(n_layer: int, n_head: int, head_dim: int) -> ModelShape:
    """The known shape with these dimensions, or one named by its numbers ("2L-4H-32D")."""
    dims = (n_layer, n_head, head_dim)
    return next((s for s in SHAPES.values() if s.dims == dims), ModelShape("{}L-{}H-{}D".format(*dims), *dims))


def _dtype_bytes(dtype: str) -> int:
    if dtype not in DTYPE_BYTES:
        raise ValueError(f"unknown dtype {dtype!r}; known: {', '.join(DTYPE_BYTES)}")
    return DTYPE_BYTES[dtype]


def kv_cache_bytes(config, seq_len: int, batch_size: int = 1, dtype: str = "float32") -> int:
    """2 (K and V) x layers x batch x heads x seq_len x head_dim x bytes per value."""
    s = as_shape(config)
    return 2 * s.n_layer * batch_size * s.n_head * seq_len * s.head_dim * _dtype_bytes(dtype)


# ---- process memory -------------------------------------------------------------------------------------------

@functools.lru_cache(maxsize=None)
def _glibc():
    """The C library when it is glibc (it has mallopt and malloc_trim), else None."""
    try:
        libc = ctypes.CDLL(None)
    except OSError:
        return None
    return libc if hasattr(libc, "mallopt") and hasattr(libc, "malloc_trim") else None


def _release_free_memory() -> None:
    """Make RSS growth measure what an allocation really needs. glibc keeps freed memory, resident, for reuse,
    and raises its mmap threshold after large frees, so a new buffer may land on pages already counted and the
    RSS would not grow at all. Pinning the threshold (M_MMAP_THRESHOLD, at its default 128 KiB) and giving the
    free pages back (malloc_trim) before each measurement makes it repeatable."""
    libc = _glibc()
    if libc is not None:  # elsewhere RSS numbers are as the allocator gives them
        libc.mallopt(-3, 128 * 1024)
        libc.malloc_trim(0)


def _proc_status_bytes(key: str) -> Optional[int]:
    """A `key: N kB` line of /proc/self/status in bytes; None off Linux."""
    try:
        with open("/proc/self/status") as f:
            match = re.search(rf"^{key}:\s+(\d+) kB", f.read(), re.M)
    except OSError:
        return None
    return int(match.group(1)) * 1024 if match else None


def rss_bytes() -> Optional[int]:
    """Resident memory of this process (Linux), None where /proc is missing."""
    return _proc_status_bytes("VmRSS")


class _PeakRSS:
    """Growth of the peak RSS over a block: Linux lets a process reset its high-water mark (clear_refs "5")."""

    def __enter__(self) -> "_PeakRSS":
        _release_free_memory()
        self.start = rss_bytes()
        try:
            with open("/proc/self/clear_refs", "w") as f:
                f.write("5")
        except OSError:
            self.start = None
        self.delta: Optional[int] = None
        return self

    def __exit__(self, *exc) -> None:
        peak = _proc_status_bytes("VmHWM")
        if self.start is not None and peak is not None:
            self.delta = max(0, peak - self.start)


# ---- KV memory: formula and measurement -----------------------------------------------------------------------

@dataclass
class KVMemoryProfile:
    """The formula's bytes for one cache shape, and, when a model of that shape was built, what was measured."""
    model: str
    seq_len: int
    batch_size: int
    dtype: str
    bytes_per_token: int                # one sample, one position, all layers, K and V
    total_bytes: int                    # the formula
    per_layer_bytes: List[int]          # K + V of each layer; they sum to total_bytes
    measured_nbytes: Optional[int] = None      # KVCache.nbytes of a cache of this shape
    measured_rss_bytes: Optional[int] = None   # growth of the process RSS when that cache was allocated


def measure_cache_memory(model: GPT2, batch_size: int, seq_len: int) -> Tuple[int, Optional[int]]:
    """(cache.nbytes, RSS growth) of a freshly allocated cache. The cache is zero-filled when made, so its pages
    are touched and the RSS shows all of it: the number the formula has to match."""
    _release_free_memory()
    before = rss_bytes()
    cache = model.new_cache(batch_size, seq_len)
    after = rss_bytes()
    return cache.nbytes, (after - before if before is not None and after is not None else None)


def profile_kv_cache_memory(config, seq_len: int, batch_size: int = 1, dtype: str = "float32",
                            model: Optional[GPT2] = None) -> KVMemoryProfile:
    """Total and per-layer KV-cache bytes from the formula; with `model` (of that shape, float32), also the
    measured cache.nbytes and RSS growth, so the two can be put side by side."""
    shape = as_shape(config if config is not None else model.config)
    total = kv_cache_bytes(shape, seq_len, batch_size, dtype)
    profile = KVMemoryProfile(shape.name, seq_len, batch_size, dtype, kv_cache_bytes(shape, 1, 1, dtype), total,
                              [total // shape.n_layer] * shape.n_layer)
    if model is not None:
        if as_shape(model.config).dims != shape.dims or dtype != "float32":
            raise ValueError(f"a measurement needs the model's own shape in float32; got {shape} {dtype} for "
                             f"{model.config}")
        profile.measured_nbytes, profile.measured_rss_bytes = measure_cache_memory(model, batch_size, seq_len)
    return profile


MEASURE_VOCAB = 256  # the cache does not depend on the vocabulary; a small one keeps the model built to measure small


def measure_memory_growth(shapes: Sequence[str] = ("distilgpt2", "gpt2", "gpt2-medium"),
                          seq_lens: Sequence[int] = (128, 256, 512, 1024, 2048), batch_size: int = 1,
                          progress: bool = True) -> List[KVMemoryProfile]:
    """Formula and measurement for each shape and length: builds a random model of each shape (n_ctx =
    the longest length, a small vocabulary) and allocates its caches one at a time."""
    profiles = []
    for name in tqdm(shapes, desc="KV memory", disable=not progress):
        s = as_shape(name)
        model = GPT2.from_config(GPT2Config(n_layer=s.n_layer, n_head=s.n_head, n_embd=s.n_embd,
                                            n_ctx=max(seq_lens), n_vocab=MEASURE_VOCAB))
        profiles += [profile_kv_cache_memory(s, n, batch_size, model=model) for n in seq_lens]
        del model
    return profiles


# ---- prompts --------------------------------------------------------------------------------------------------

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
    if isinstance(prompt, (int, np.integer)):
        return make_prompt(model, int(prompt))
    return [int(t) for t in prompt]


# ---- timing: one helper for every engine ------------------------------------------------------------------------

# A runner performs one generation of n new tokens per row, calling tick() once per produced token (the first
# after the prompt's pass), and returns (new tokens per row, KV-cache bytes or None when unknown).
Tick = Callable[[], None]
Runner = Callable[[int, Tick], Tuple[int, Optional[int]]]

WARMUP_TOKENS = 4  # the warm-up is a short run: it starts thread pools and pages the weights in


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

    with _PeakRSS() as memory:
        start = time.perf_counter()
        new_tokens, kv_bytes = runner(n, tick)
        seconds = time.perf_counter() - start
    return _Run(seconds, np.diff([start] + stamps).tolist(), new_tokens, kv_bytes, memory.delta)


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


def _benchmark(runner: Runner, n: int, repeats: int, time_budget_s: Optional[float], progress: bool,
               shape: ModelShape, **meta) -> GenerationRecord:
    """Warm up, then time up to `repeats` runs (stopping early once time_budget_s is spent) and summarize."""
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


# ---- our engine -----------------------------------------------------------------------------------------------

def _run_kvcache(model: GPT2, rows: List[List[int]], use_cache: bool, n: int, tick: Tick):
    generator = _core.Generator(model._core, rows, max_new_tokens=n, eos_token_id=-1, use_cache=use_cache)
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
    return _benchmark(runner, max_new_tokens, repeats, time_budget_s, progress, as_shape(model.config),
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


# ---- transformers, on the same weights ----------------------------------------------------------------------------

PEER_MODES = {"cache": {"use_cache": True},
              "static cache": {"use_cache": True, "cache_implementation": "static"},
              "no cache": {"use_cache": False}}


def load_transformers_peer(checkpoint_dir: str):
    """transformers' GPT2LMHeadModel from a checkpoint written by GPT2.save_pretrained: the same weights, in
    float32, on as many torch threads as the engine uses."""
    import torch
    from transformers import GPT2LMHeadModel
    torch.set_num_threads(get_num_threads())
    return GPT2LMHeadModel.from_pretrained(checkpoint_dir, dtype=torch.float32).eval()


def _torch_cache_nbytes(cache) -> Optional[int]:
    layers = getattr(cache, "layers", None)  # transformers >= 4.56 caches; None when there is no cache
    if layers is None:
        return 0 if cache is None else None
    return sum(t.numel() * t.element_size() for layer in layers for t in (layer.keys, layer.values) if t is not None)


@functools.lru_cache(maxsize=None)
def _tick_processor_class():
    from transformers import LogitsProcessor

    class TickProcessor(LogitsProcessor):
        """Called once per generated token, right after its forward pass: the step clock for transformers."""

        def __init__(self, tick: Tick):
            self.tick = tick

        def __call__(self, input_ids, scores):
            self.tick()
            return scores

    return TickProcessor


def _run_transformers(hf_model, rows: List[List[int]], mode: str, n: int, tick: Tick):
    import torch
    from transformers import LogitsProcessorList
    ids = torch.tensor(rows)
    with torch.inference_mode():
        out = hf_model.generate(ids, attention_mask=torch.ones_like(ids), do_sample=False, min_new_tokens=n,
                                max_new_tokens=n, pad_token_id=0, return_dict_in_generate=True,
                                logits_processor=LogitsProcessorList([_tick_processor_class()(tick)]),
                                **PEER_MODES[mode])
    return out.sequences.shape[1] - ids.shape[1], _torch_cache_nbytes(out.past_key_values)


def benchmark_transformers(hf_model, prompt: Sequence[int], max_new_tokens: int, mode: str = "cache",
                           batch_size: int = 1, repeats: int = 3, time_budget_s: Optional[float] = None,
                           progress: bool = False) -> GenerationRecord:
    """Time transformers' generate() like benchmark_generation times ours: greedy, forced to the full length
    (min_new_tokens), steps timed by a logits processor. mode: a key of PEER_MODES."""
    if mode not in PEER_MODES:
        raise ValueError(f"unknown mode {mode!r}; known: {', '.join(PEER_MODES)}")
    ids = [int(t) for t in prompt]
    weights = sum(p.numel() * p.element_size() for p in hf_model.parameters())  # tied lm_head counted once
    runner = functools.partial(_run_transformers, hf_model, [ids] * batch_size, mode)
    c = hf_model.config
    shape = shape_of(c.n_layer, c.n_head, c.n_embd // c.n_head)
    return _benchmark(runner, max_new_tokens, repeats, time_budget_s, progress, shape, engine="transformers", mode=mode,
                      prompt_tokens=len(ids), batch_size=batch_size, weights_nbytes=weights)


@dataclass
class Unavailable:
    """A peer mode that could not run here, and why."""
    engine: str
    mode: str
    reason: str


def compare_peers(model: GPT2, prompt: Union[str, int, Sequence[int]], max_new_tokens: int,
                  checkpoint_dir: Optional[str] = None, batch_size: int = 1, repeats: int = 3,
                  time_budget_s: Optional[float] = 30.0, progress: bool = True
                  ) -> Tuple[List[GenerationRecord], List[Unavailable]]:
    """Ours (cache, no cache) and transformers (cache, static cache, no cache) in one run, same weights and
    prompt. checkpoint_dir: where the model's checkpoint is; None writes one to a temporary directory."""
    ids = prompt_ids(model, prompt)
    records = [benchmark_generation(model, ids, max_new_tokens, c, batch_size, repeats, time_budget_s, progress)
               for c in (True, False)]
    unavailable: List[Unavailable] = []
    with tempfile.TemporaryDirectory() as scratch:
        if checkpoint_dir is None:
            checkpoint_dir = scratch
            model.save_pretrained(scratch)
        try:
            hf_model = load_transformers_peer(checkpoint_dir)
        except Exception as e:  # not installed, or cannot read the checkpoint: every mode is unavailable
            return records, [Unavailable("transformers", m, f"{type(e).__name__}: {e}") for m in PEER_MODES]
        for mode in PEER_MODES:
            try:
                records.append(benchmark_transformers(hf_model, ids, max_new_tokens, mode, batch_size, repeats,
                                                      time_budget_s, progress))
            except Exception as e:  # a mode this transformers version lacks: say so and go on
                unavailable.append(Unavailable("transformers", mode, f"{type(e).__name__}: {e}"))
    return records, unavailable


# ---- the write-ups' claims ---------------------------------------------------------------------------------------

# What the KV-cache write-ups this project follows claim for GPT-2 124M: speedup (low, high) by new tokens.
CLAIMED_SPEEDUP = {20: (2.0, 3.0), 50: (5.0, 5.0), 100: (10.0, 15.0), 500: (30.0, 50.0)}
CLAIMED_SECONDS_100 = {"no cache": 5.0, "cache": 0.4}  # "generate 100 tokens: ~5 s without, ~0.4 s with"


def _claim_text(low: float, high: float) -> str:
    return f"{low:g}x" if low == high else f"{low:g}-{high:g}x"


def claims_table(rows: Sequence[SpeedupRow]) -> List[dict]:
    """The write-ups' speedups next to ours, one column per prompt length (the speedup depends on it)."""
    prompts = sorted({r.prompt_tokens for r in rows})
    table = []
    for n in sorted({r.new_tokens for r in rows} | set(CLAIMED_SPEEDUP)):
        line = {"new tokens": n, "claimed": _claim_text(*CLAIMED_SPEEDUP[n]) if n in CLAIMED_SPEEDUP else ""}
        for p in prompts:
            match = [r for r in rows if r.new_tokens == n and r.prompt_tokens == p]
            line[f"ours, prompt {p}"] = f"{match[0].speedup:.1f}x" if match else "not run"
        table.append(line)
    return table


def _mib(n: float) -> str:
    return f"{n / 2**20:.2f} MiB"


def memory_claims() -> List[dict]:
    """The write-ups' memory figures against the formula. The "0.3 MB for 100 tokens" is one layer's K and V
    (2 x 768 x 100 x 2 bytes = 0.29 MiB): the factor of 12 layers was dropped; the LLaMA-7B "1 GB with 4 bytes
    per value" is the 16-bit size, 32-bit is twice that."""
    gpt2_100 = {d: kv_cache_bytes("gpt2", 100, dtype=d) for d in ("float16", "float32")}
    llama = {d: kv_cache_bytes("llama-7b", 2048, dtype=d) for d in ("float16", "float32")}
    return [
        {"claim": "GPT-2 124M, per token", "write-ups": "",
         "formula, 16-bit": f"{kv_cache_bytes('gpt2', 1, dtype='float16') / 1024:.0f} KiB",
         "formula, 32-bit": f"{kv_cache_bytes('gpt2', 1) / 1024:.0f} KiB",
         "why": "2 x 12 layers x 768 values per token"},
        {"claim": "GPT-2 124M, 100 tokens, 1 sample", "write-ups": "~0.3 MB (fp16)",
         "formula, 16-bit": _mib(gpt2_100["float16"]), "formula, 32-bit": _mib(gpt2_100["float32"]),
         "why": f"0.3 MB is one layer ({_mib(gpt2_100['float16'] / 12)}); 12 layers make it 12x more"},
        {"claim": "LLaMA-7B, 2048 tokens, 1 sample", "write-ups": "~1 GB (4 bytes/value)",
         "formula, 16-bit": f"{llama['float16'] / 2**30:g} GiB", "formula, 32-bit": f"{llama['float32'] / 2**30:g} GiB",
         "why": "2 x 32 x 32 x 2048 x 128 = 2^29 values: 1 GiB at 2 bytes, 2 GiB at 4"},
    ]


# ---- tables -------------------------------------------------------------------------------------------------------

def _fmt(value) -> str:
    if isinstance(value, float):
        return f"{value:.3g}" if abs(value) < 1000 else f"{value:,.0f}"
    return "" if value is None else str(value)


def format_table(rows: Sequence[dict]) -> str:
    """A list of dicts as a Markdown table (README, notebooks and the terminal read it alike)."""
    if not rows:
        return "(no rows)"
    columns = list(rows[0])
    lines = ["| " + " | ".join(columns) + " |", "|" + "|".join("---" for _ in columns) + "|"]
    lines += ["| " + " | ".join(_fmt(r.get(c)) for c in columns) + " |" for r in rows]
    return "\n".join(lines)


def speedup_table(rows: Sequence[SpeedupRow]) -> List[dict]:
    return [{"prompt tokens": r.prompt_tokens, "new tokens": r.new_tokens,
             "cached s": r.cached.total_s, "uncached s": r.uncached.total_s, "speedup": round(r.speedup, 1),
             "cached tok/s": r.cached.tokens_per_s, "uncached tok/s": r.uncached.tokens_per_s,
             "runs (cached/uncached)": f"{r.cached.repeats}/{r.uncached.repeats}"} for r in rows]


def peer_table(records: Sequence[GenerationRecord], read_bandwidth: Optional[float] = None) -> List[dict]:
    """Each engine and mode against ours with the cache: time ratio, decode rate, and the bandwidth its decode
    steps achieve (weights bytes / step), also as a fraction of what the machine's probe measured."""
    ours = next((r for r in records if r.engine == "kvcache" and r.mode == "cache"), None)
    table = []
    for r in records:
        bw = r.bandwidth_bytes_per_s
        table.append({
            "engine": r.engine, "mode": r.mode, "total s": r.total_s,
            "time vs kvcache cache": f"{r.total_s / ours.total_s:.2f}x" if ours else "",
            "prefill ms": 1e3 * r.prefill_s, "decode tok/s": r.decode_tokens_per_s,
            "GB/s": bw / 1e9 if bw else None,
            "of machine": f"{bw / read_bandwidth:.0%}" if bw and read_bandwidth else "",
            "KV MiB": r.kv_cache_bytes / 2**20 if r.kv_cache_bytes is not None else None})
    return table


def batch_table(records: Sequence[GenerationRecord]) -> List[dict]:
    return [{"batch": r.batch_size, "tokens/s": r.tokens_per_s, "decode tok/s": r.decode_tokens_per_s,
             "ms / step": 1e3 * r.batch_size / r.decode_tokens_per_s if r.decode_tokens_per_s else None,
             "KV MiB": r.kv_cache_bytes / 2**20 if r.kv_cache_bytes is not None else None,
             "formula MiB": r.kv_formula_bytes / 2**20,
             "peak RSS +MiB": r.peak_rss_delta_bytes / 2**20 if r.peak_rss_delta_bytes is not None else None}
            for r in records]


def memory_table(profiles: Sequence[KVMemoryProfile]) -> List[dict]:
    return [{"model": p.model, "seq len": p.seq_len, "batch": p.batch_size, "dtype": p.dtype,
             "formula MiB": p.total_bytes / 2**20,
             "cache.nbytes MiB": p.measured_nbytes / 2**20 if p.measured_nbytes is not None else None,
             "RSS growth MiB": p.measured_rss_bytes / 2**20 if p.measured_rss_bytes is not None else None,
             "RSS / formula": round(p.measured_rss_bytes / p.total_bytes, 3) if p.measured_rss_bytes else None}
            for p in profiles]


def formula_table(seq_len: int = 2048, shapes: Sequence[str] = tuple(SHAPES)) -> List[dict]:
    """Per-token and per-sequence KV bytes of each known shape, 16- and 32-bit: the big-model examples."""
    return [{"model": s, "layers x heads x head_dim": "{} x {} x {}".format(*as_shape(s).dims),
             "KiB/token fp16": kv_cache_bytes(s, 1, dtype="float16") / 1024,
             "KiB/token fp32": kv_cache_bytes(s, 1) / 1024,
             f"MiB at {seq_len} fp16": kv_cache_bytes(s, seq_len, dtype="float16") / 2**20,
             f"MiB at {seq_len} fp32": kv_cache_bytes(s, seq_len) / 2**20} for s in shapes]


# ---- results on disk --------------------------------------------------------------------------------------------

@dataclass
class Suite:
    """One benchmark's results with everything needed to read and re-plot them without re-running."""
    name: str                 # "speedup", "batch", "peers" or "memory"
    machine: dict             # describe_machine() + the probes
    params: dict              # sizes, model, prompt: how the run was made
    records: list
    notes: dict = field(default_factory=dict)


RECORD_TYPES = {"speedup": SpeedupRow, "batch": GenerationRecord, "peers": GenerationRecord,
                "memory": KVMemoryProfile}


def _from_dict(cls, data: dict):
    """A dataclass from its asdict() form, nested dataclasses included."""
    hints = typing.get_type_hints(cls)
    return cls(**{f.name: _from_dict(hints[f.name], data[f.name]) if is_dataclass(hints[f.name])
                  else data[f.name] for f in fields(cls) if f.name in data})


def _flatten(record, prefix: str = "") -> dict:
    """One CSV row: nested records become dotted columns; lists (per-step latencies) stay in the JSON only."""
    row = {}
    for key, value in (asdict(record) if is_dataclass(record) else record).items():
        if isinstance(value, dict):
            row.update(_flatten(value, f"{prefix}{key}."))
        elif not isinstance(value, list):
            row[prefix + key] = value
    return row


def save_suite(suite: Suite, out_dir: str) -> str:
    """<out_dir>/<name>.json (everything) and <name>.csv (one row per record, no per-step lists)."""
    os.makedirs(out_dir, exist_ok=True)
    path = os.path.join(out_dir, f"{suite.name}.json")
    with open(path, "w") as f:
        json.dump({"name": suite.name, "machine": suite.machine, "params": suite.params, "notes": suite.notes,
                   "records": [asdict(r) for r in suite.records]}, f, indent=1)
    rows = [_flatten(r) for r in suite.records]
    with open(os.path.join(out_dir, f"{suite.name}.csv"), "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]) if rows else [])
        writer.writeheader()
        writer.writerows(rows)
    return path


def load_suite(path: str) -> Suite:
    with open(path) as f:
        data = json.load(f)
    record_type = RECORD_TYPES[data["name"]]
    return Suite(data["name"], data["machine"], data["params"], [_from_dict(record_type, r) for r in data["records"]],
                 data.get("notes", {}))


def load_results(out_dir: str) -> Dict[str, Suite]:
    """Every suite saved under out_dir, by name (the ones not run are absent)."""
    return {name: load_suite(os.path.join(out_dir, f"{name}.json")) for name in RECORD_TYPES
            if os.path.isfile(os.path.join(out_dir, f"{name}.json"))}


# ---- the runs: sizes, suites, command line -----------------------------------------------------------------------

GPT2_124M = {"n_layer": 12, "n_head": 12, "n_embd": 768}
SMALL_MODEL = {"n_layer": 2, "n_head": 4, "n_embd": 128, "n_ctx": 256}


def small_mode() -> bool:
    """KVCACHE_SMALL=1 (CI) asks the notebooks and the command line for the tiny sizes."""
    return os.environ.get("KVCACHE_SMALL", "") not in ("", "0")


@dataclass
class Sizes:
    """How big a run is. The defaults are the full run (about 15 minutes on 2 cores); small() is CI's."""
    model: dict = field(default_factory=lambda: dict(GPT2_124M))  # random init, seed 0, when no checkpoint
    speedup: list = field(default_factory=lambda: [(8, (20, 50, 100, 200, 500)), (128, (20, 50, 100))])
    repeats: int = 3
    time_budget_s: float = 30.0  # per configuration: no new repeat once this many seconds were timed
    prompt_tokens: int = 8       # of the batch and peer runs
    batch_sizes: Tuple[int, ...] = (1, 2, 4, 8)
    batch_new_tokens: int = 50
    peer_new_tokens: int = 100
    memory_shapes: Tuple[str, ...] = ("distilgpt2", "gpt2", "gpt2-medium")
    memory_seq_lens: Tuple[int, ...] = (128, 256, 512, 1024, 1536, 2048)
    probe_bytes: int = 1 << 30
    probe_matmul_n: int = 2048

    @classmethod
    def small(cls) -> "Sizes":
        return cls(model=dict(SMALL_MODEL), speedup=[(8, (4, 8, 16)), (32, (4, 8))], repeats=2, time_budget_s=5.0,
                   batch_sizes=(1, 2, 4), batch_new_tokens=8, peer_new_tokens=8, memory_shapes=("distilgpt2",),
                   memory_seq_lens=(64, 128, 256), probe_bytes=64 << 20, probe_matmul_n=256)


def machine_info(sizes: Sizes) -> dict:
    """describe_machine() plus the bandwidth and matmul probes, measured now, in this run."""
    info = describe_machine()
    info["read_bandwidth_bytes_per_s"] = measure_read_bandwidth(sizes.probe_bytes)
    info["matmul_flops"] = measure_matmul_flops(sizes.probe_matmul_n)
    return info


@dataclass
class RunContext:
    """What every suite needs: the model, where its checkpoint is (None: random weights), sizes, machine."""
    model: GPT2
    sizes: Sizes
    machine: dict
    model_source: str
    checkpoint_dir: Optional[str] = None
    progress: bool = True

    def suite(self, name: str, records: list, **notes) -> Suite:
        c = self.model.config
        params = {"model": self.model_source, "threads": get_num_threads(), "sizes": asdict(self.sizes),
                  "config": {k: getattr(c, k) for k in ("n_layer", "n_head", "n_embd", "n_ctx", "n_vocab")},
                  "weights_nbytes": self.model.weights_nbytes}
        notes = {"load_average_at_end": list(os.getloadavg()) if hasattr(os, "getloadavg") else None, **notes}
        return Suite(name, self.machine, json.loads(json.dumps(params)), records, notes)  # as it reads back


def _speedup_suite(ctx: RunContext) -> Suite:
    s = ctx.sizes
    rows = [row for prompt, lengths in s.speedup for row in compare_cache_performance(
        ctx.model, prompt, lengths, repeats=s.repeats, time_budget_s=s.time_budget_s, progress=ctx.progress)]
    return ctx.suite("speedup", rows)


def _batch_suite(ctx: RunContext) -> Suite:
    s = ctx.sizes
    return ctx.suite("batch", benchmark_batch(ctx.model, s.prompt_tokens, s.batch_new_tokens, s.batch_sizes,
                                              s.repeats, s.time_budget_s, ctx.progress))


def _peers_suite(ctx: RunContext) -> Suite:
    s = ctx.sizes
    records, unavailable = compare_peers(ctx.model, s.prompt_tokens, s.peer_new_tokens, ctx.checkpoint_dir,
                                         repeats=s.repeats, time_budget_s=s.time_budget_s, progress=ctx.progress)
    return ctx.suite("peers", records, unavailable=[asdict(u) for u in unavailable])


def _memory_suite(ctx: RunContext) -> Suite:
    s = ctx.sizes
    return ctx.suite("memory", measure_memory_growth(s.memory_shapes, s.memory_seq_lens, progress=ctx.progress))


SUITES: Dict[str, Callable[[RunContext], Suite]] = {  # `all` runs them in this order, cheap ones first
    "memory": _memory_suite, "batch": _batch_suite, "peers": _peers_suite, "speedup": _speedup_suite}


def suite_table(suite: Suite) -> List[dict]:
    """The table a suite's records read as (the peers' against the machine's measured bandwidth)."""
    if suite.name == "peers":
        return peer_table(suite.records, suite.machine.get("read_bandwidth_bytes_per_s"))
    return {"speedup": speedup_table, "batch": batch_table, "memory": memory_table}[suite.name](suite.records)


def _load_model(checkpoint: Optional[str], sizes: Sizes) -> Tuple[GPT2, str]:
    if checkpoint:
        return GPT2.from_pretrained(checkpoint), f"checkpoint {checkpoint}"
    dims = ", ".join(f"{k}={v}" for k, v in sizes.model.items())
    return GPT2.from_config(GPT2Config(**sizes.model), seed=0), f"random-init GPT-2 ({dims}), seed 0"


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m kvcache.bench", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("command", choices=["all", *SUITES, "plot", "generate"],
                   help="all: every suite; speedup/batch/peers/memory: one; plot: figures from saved JSON; "
                        "generate: time one generation and print it")
    p.add_argument("--out", default="results", help="folder for JSON/CSV; figures go to OUT/figures")
    p.add_argument("--small", action="store_true", default=small_mode(), help="tiny model and lengths (CI)")
    p.add_argument("--model", help="checkpoint folder (config.json + model.safetensors); default: random GPT-2")
    p.add_argument("--threads", type=int, help="engine and torch threads (default: the engine's default)")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.add_argument("--no-figures", action="store_true", help="write data only")
    g = p.add_argument_group("generate")
    g.add_argument("--prompt-tokens", type=int, default=8)
    g.add_argument("--new-tokens", type=int, default=100)
    g.add_argument("--batch-size", type=int, default=1)
    g.add_argument("--no-cache", action="store_true")
    g.add_argument("--repeats", type=int, default=3)
    return p


def _plot(out: str) -> None:
    import matplotlib
    matplotlib.use("Agg")
    from . import plots
    for path in plots.plot_all(out, os.path.join(out, "figures")).values():
        print("wrote", path)


def main(argv: Optional[Sequence[str]] = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = _parser().parse_args(argv)
    if args.threads:
        set_num_threads(args.threads)
    if args.command == "plot":
        _plot(args.out)
        return 0
    sizes = Sizes.small() if args.small else Sizes()
    model, source = _load_model(args.model, sizes)
    if args.command == "generate":
        record = benchmark_generation(model, args.prompt_tokens, args.new_tokens, not args.no_cache, args.batch_size,
                                      args.repeats, progress=not args.no_progress)
        print(format_table([{k: v for k, v in asdict(record).items() if k != "step_s"}]))
        return 0
    start = time.perf_counter()
    ctx = RunContext(model, sizes, machine_info(sizes), source, args.model, not args.no_progress)
    for name in SUITES if args.command == "all" else [args.command]:
        suite = SUITES[name](ctx)
        print(f"\n## {name}  ({save_suite(suite, args.out)})\n\n{format_table(suite_table(suite))}", flush=True)
    if not args.no_figures:
        _plot(args.out)
    run = {"command": shlex.join(["python", "-m", "kvcache.bench", *argv]), "wall_s": time.perf_counter() - start,
           "machine": ctx.machine}
    with open(os.path.join(args.out, f"run_{args.command}.json"), "w") as f:
        json.dump(run, f, indent=1)
    print(f"\n{args.command}: {run['wall_s']:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
