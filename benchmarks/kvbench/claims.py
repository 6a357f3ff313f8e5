"""What the KV-cache write-ups this project follows claim for GPT-2, and those claims set against our measured
speedups and the memory formula (where a claim is off, the table says why)."""

from __future__ import annotations

from typing import List, Sequence

from .engine_benchmarks import SpeedupRow
from .kv_memory import kv_cache_bytes

# What the write-ups claim for GPT-2 124M: speedup (low, high) by new tokens.
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
