"""Figures of the benchmark results (matplotlib).

Each plot_* function takes records, fresh from kvbench.bench or loaded from its JSON, and returns a Figure;
plot_all() re-draws every figure of a results folder without re-running anything:

    python benchmarks/bench.py plot --out results    # results/*.json -> results/figures/*.png
"""

from __future__ import annotations

import os
from typing import Dict, List, Optional, Sequence

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.figure import Figure
from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

from . import bench
from .bench import GenerationRecord, KVMemoryProfile, SpeedupRow

_MIB = 2 ** 20
_MODE_COLORS = {"cache": "tab:blue", "static cache": "tab:green", "no cache": "tab:red"}


def _subplots(*args, **kwargs):
    """plt.subplots with a light grid on every axes. (Not rc_context: leaving one restores the interactive flag
    from before the inline backend started, and Jupyter then stops showing figures.)"""
    fig, axes = plt.subplots(*args, **kwargs)
    for ax in np.ravel(axes):
        ax.grid(True, alpha=0.3)
    return fig, axes


def _plain_log(ax, axis: str = "y") -> None:
    """Log axes labelled 20, 50, 100 rather than 10^1 (readable at README size); 1-2-5 ticks when the data span
    fewer than three decades, so that a narrow axis still has labels. Call after plotting."""
    for a in ("x", "y") if axis == "both" else (axis,):
        lo, hi = getattr(ax, f"get_{a}lim")()
        subs = (1.0, 2.0, 5.0) if np.log10(hi / lo) < 3 else (1.0,)
        target = getattr(ax, f"{a}axis")
        target.set_major_locator(LogLocator(subs=subs))
        target.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
        target.set_minor_formatter(NullFormatter())


def _model_label(record: GenerationRecord) -> str:
    return f"{record.model}, batch {record.batch_size}"


def _by_prompt(rows: Sequence[SpeedupRow]) -> Dict[int, List[SpeedupRow]]:
    groups: Dict[int, List[SpeedupRow]] = {}
    for r in sorted(rows, key=lambda r: (r.prompt_tokens, r.new_tokens)):
        groups.setdefault(r.prompt_tokens, []).append(r)
    return groups


def plot_generation_time(rows: Sequence[SpeedupRow]) -> Figure:
    """Total time vs new tokens, cached vs uncached, log-log: the uncached line is steeper (each step redoes
    the whole sequence: O(n^2) work) while the cached one grows linearly (O(n))."""
    fig, ax = _subplots(figsize=(7.5, 4.8))
    for i, (prompt, group) in enumerate(_by_prompt(rows).items()):
        n = [r.new_tokens for r in group]
        color = f"C{i}"
        ax.plot(n, [r.cached.total_s for r in group], "o-", color=color, label=f"cache, prompt {prompt}")
        ax.plot(n, [r.uncached.total_s for r in group], "s--", color=color, label=f"no cache, prompt {prompt}")
    ax.set(xscale="log", yscale="log", xlabel="new tokens generated", ylabel="total generation time (s)",
           title=f"Generation time vs length ({_model_label(rows[0].cached)})")
    _plain_log(ax, "both")
    ax.set_xticks([r.new_tokens for r in rows])
    ax.legend()
    return fig


def plot_speedup(rows: Sequence[SpeedupRow]) -> Figure:
    """Speedup (uncached time / cached time) vs new tokens, one line per prompt length, with the write-ups'
    claimed ranges in grey."""
    fig, ax = _subplots(figsize=(7.5, 4.8))
    for i, (prompt, group) in enumerate(_by_prompt(rows).items()):
        n, s = [r.new_tokens for r in group], [r.speedup for r in group]
        ax.plot(n, s, "o-", color=f"C{i}", label=f"measured, prompt {prompt} tokens")
        for x, y in zip(n, s):
            ax.annotate(f"{y:.1f}x", (x, y), textcoords="offset points", xytext=(4, 4), fontsize=8, color=f"C{i}")
    claimed = sorted(bench.CLAIMED_SPEEDUP.items()) if rows[0].cached.model == "gpt2" else []  # claims are for 124M
    ax.errorbar([n for n, _ in claimed], [(lo + hi) / 2 for _, (lo, hi) in claimed],
                yerr=[[(hi - lo) / 2 for _, (lo, hi) in claimed]] * 2, fmt="_", color="grey", capsize=5,
                markersize=12, label="write-ups' claim (GPT-2 124M)")
    ax.set(xscale="log", xlabel="new tokens generated", ylabel="speedup with the cache (x)",
           title=f"KV-cache speedup vs length ({_model_label(rows[0].cached)})")
    _plain_log(ax, "x")
    ax.set_xticks(sorted({r.new_tokens for r in rows} | {n for n, _ in claimed}))
    ax.legend()
    return fig


def plot_step_latency(rows: Sequence[SpeedupRow]) -> Figure:
    """Latency of each decode step vs its position, for the longest run of the shortest prompt: flat-ish with
    the cache (one token's work, plus attention over a growing cache), growing without (the whole sequence)."""
    row = max(_by_prompt(rows)[min(r.prompt_tokens for r in rows)], key=lambda r: r.new_tokens)
    fig, ax = _subplots(figsize=(7.5, 4.8))
    for record in (row.cached, row.uncached):
        color = _MODE_COLORS[record.mode]
        positions = row.prompt_tokens + 1 + np.arange(len(record.step_s))
        ax.plot(positions, 1e3 * np.asarray(record.step_s), "-", color=color, lw=1,
                label=f"{record.mode} (median of {record.repeats} run{'s' * (record.repeats > 1)})")
        ax.plot([row.prompt_tokens], [1e3 * record.prefill_s], "D", color=color,
                label=f"{record.mode}: prefill of the {row.prompt_tokens}-token prompt")
    ax.set(yscale="log", xlabel="sequence length at the step (tokens)", ylabel="step latency (ms)",
           title=f"Per-step latency vs position ({_model_label(row.cached)})")
    _plain_log(ax)
    ax.legend()
    return fig


def plot_kv_memory(profiles: Sequence[KVMemoryProfile] = (), shapes: Sequence[str] = tuple(bench.SHAPES),
                   max_seq_len: int = 2048) -> Figure:
    """KV-cache bytes vs sequence length (batch 1, float32) from the formula for each shape, and where a model
    was built, the measured cache.nbytes and RSS growth on top of its line: they should sit on it."""
    fig, ax = _subplots(figsize=(7.5, 4.8))
    seq = np.arange(1, max_seq_len + 1)
    for i, name in enumerate(shapes):
        ax.plot(seq, [bench.kv_cache_bytes(name, n) / _MIB for n in seq], color=f"C{i}", label=f"{name} (formula)")
        measured = [p for p in profiles if p.model == name and p.measured_nbytes is not None and p.batch_size == 1]
        if measured:
            ax.plot([p.seq_len for p in measured], [p.measured_nbytes / _MIB for p in measured], "o", color=f"C{i}",
                    mfc="none", ms=8, label=f"{name}: cache.nbytes")
            rss = [p for p in measured if p.measured_rss_bytes is not None]
            ax.plot([p.seq_len for p in rss], [p.measured_rss_bytes / _MIB for p in rss], "x", color=f"C{i}", ms=7,
                    label=f"{name}: RSS growth")
    ax.set(yscale="log", xlabel="sequence length (tokens)", ylabel="KV cache, one sample, float32 (MiB)",
           title="KV-cache memory vs sequence length (16-bit: half)")
    _plain_log(ax)
    ax.legend(ncol=2, fontsize=8)
    return fig


def plot_layer_breakdown(profiles: Sequence[KVMemoryProfile]) -> Figure:
    """Keys and values of each layer, one panel per profile: every layer holds the same share, so the cache
    grows with the number of layers as much as with the sequence."""
    fig, axes = _subplots(1, len(profiles), figsize=(5.5 * len(profiles), 4.5), squeeze=False)
    for ax, p in zip(axes[0], profiles):
        layers = np.arange(len(p.per_layer_bytes))
        half = np.asarray(p.per_layer_bytes) / 2 / _MIB
        ax.bar(layers, half, color="tab:blue", label="keys")
        ax.bar(layers, half, bottom=half, color="tab:orange", label="values")
        ax.set(xlabel="layer", ylabel=f"MiB ({p.dtype})",
               title=f"{p.model}, {p.seq_len} tokens, batch {p.batch_size}: {p.total_bytes / _MIB:,.0f} MiB total")
        ax.legend()
    fig.suptitle("KV cache per layer (formula)")
    fig.tight_layout()
    return fig


def plot_batch(records: Sequence[GenerationRecord]) -> Figure:
    """Throughput and memory vs batch size: one decode step reads the weights once for the whole batch, so
    tokens/s rises with it, while the cache (and the RSS) grow linearly with it."""
    fig, (left, right) = _subplots(1, 2, figsize=(11, 4.5))
    b = [r.batch_size for r in records]
    left.plot(b, [r.decode_tokens_per_s for r in records], "o-", label="decode steps only")
    left.plot(b, [r.tokens_per_s for r in records], "s--", label="end to end (with prefill)")
    left.set(xlabel="batch size", ylabel="tokens/s (all rows)", xticks=b,
             title=f"Throughput ({records[0].model}, {records[0].new_tokens} new tokens)")
    left.legend()
    right.plot(b, [r.kv_formula_bytes / _MIB for r in records], "-", color="grey", label="formula")
    right.plot(b, [r.kv_cache_bytes / _MIB for r in records], "o", mfc="none", ms=8, label="cache nbytes")
    rss = [r for r in records if r.peak_rss_delta_bytes is not None]
    right.plot([r.batch_size for r in rss], [r.peak_rss_delta_bytes / _MIB for r in rss], "x-",
               label="peak RSS growth (cache + activations)")
    right.set(xlabel="batch size", ylabel="MiB", xticks=b,
              title=f"Memory ({records[0].prompt_tokens + records[0].new_tokens} positions per row)")
    right.legend()
    fig.tight_layout()
    return fig


def plot_peers(records: Sequence[GenerationRecord], read_bandwidth: Optional[float] = None) -> Figure:
    """Ours and transformers side by side on the same weights: total time (with the ratio to ours with the
    cache) and the memory bandwidth each decode achieves against the machine's measured bandwidth."""
    fig, (left, right) = _subplots(1, 2, figsize=(12, 4.5))
    labels = [f"{r.engine}\n{r.mode}" for r in records]
    colors = [_MODE_COLORS[r.mode] for r in records]
    y = np.arange(len(records))
    ours = next((r.total_s for r in records if r.engine == "kvcache" and r.mode == "cache"), None)
    left.barh(y, [r.total_s for r in records], color=colors)
    for i, r in enumerate(records):
        if ours:
            left.annotate(f"{r.total_s / ours:.1f}x", (r.total_s, i), xytext=(4, -4), textcoords="offset points")
    left.set(yticks=y, yticklabels=labels, xlabel="total time (s)", xlim=(0, 1.15 * max(r.total_s for r in records)),
             title=f"{records[0].new_tokens} tokens, prompt {records[0].prompt_tokens} ({records[0].model})")
    left.invert_yaxis()
    right.barh(y, [(r.bandwidth_bytes_per_s or 0) / 1e9 for r in records], color=colors)
    if read_bandwidth:
        right.axvline(read_bandwidth / 1e9, color="black", ls="--", label="machine's read bandwidth (probe)")
        right.legend(loc="lower right")
    right.set(yticks=y, yticklabels=labels, xlabel="weights read per decode step / step time (GB/s)",
              title="Achieved memory bandwidth while decoding")
    right.invert_yaxis()
    fig.tight_layout()
    return fig


def save_figure(fig: Figure, directory: str, name: str) -> str:
    """<directory>/<name>.png; returns the path."""
    os.makedirs(directory, exist_ok=True)
    path = os.path.join(directory, f"{name}.png")
    fig.savefig(path, dpi=130, bbox_inches="tight")
    return path


def layer_profiles() -> List[KVMemoryProfile]:
    """The two per-layer examples: GPT-2 124M at its full context, LLaMA-7B at 2048 tokens (float32)."""
    return [bench.profile_kv_cache_memory("gpt2", 1024), bench.profile_kv_cache_memory("llama-7b", 2048)]


def plot_all(results_dir: str, figures_dir: Optional[str] = None) -> Dict[str, str]:
    """Every figure the saved suites allow, written as PNG; name -> path. Nothing is re-run."""
    figures_dir = figures_dir or os.path.join(results_dir, "figures")
    results = bench.load_results(results_dir)
    figures = {}
    if "speedup" in results:
        rows = results["speedup"].records
        figures.update(generation_time=plot_generation_time(rows), speedup=plot_speedup(rows),
                       step_latency=plot_step_latency(rows))
    if "memory" in results:
        figures.update(kv_memory=plot_kv_memory(results["memory"].records), kv_layers=plot_layer_breakdown(
            layer_profiles()))
    if "batch" in results:
        figures["batch"] = plot_batch(results["batch"].records)
    if "peers" in results:
        peers = results["peers"]
        figures["peers"] = plot_peers(peers.records, peers.machine.get("read_bandwidth_bytes_per_s"))
    paths = {}
    for name, fig in figures.items():
        paths[name] = save_figure(fig, figures_dir, name)
        plt.close(fig)
    return paths
