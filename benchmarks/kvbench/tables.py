"""The benchmark records as tables: lists of dicts, one per row, and format_table to print any of them as
Markdown (the terminal, the notebooks and docs/benchmarks.md read them alike)."""

from __future__ import annotations

from typing import List, Optional, Sequence

from .engine_benchmarks import SpeedupRow
from .kv_memory import SHAPES, KVMemoryProfile, as_shape, kv_cache_bytes
from .timing import GenerationRecord


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
