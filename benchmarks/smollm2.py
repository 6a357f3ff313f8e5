"""What the KV cache buys and costs on a real model: SmolLM2-135M-Instruct (30 layers, 9 query heads sharing 3
key/value heads, head_dim 64, context 8192).

    python benchmarks/smollm2.py [--out results/smollm2.json] [--figures results/figures]

1. time:   greedy generation of n new tokens after the chat prompt, with and without the cache (alternating), and
           the speedup, by n.
2. memory: the cache's bytes to 8192 positions by the formula 2 x L x n_kv_head x positions x head_dim x bytes,
           against what 9 full heads would need and the weights, with the process's measured RSS growth when a
           cache of that many positions is filled.
3. bytes per decode step: the weights (all read every step) and the cache (every cached position's keys and
           values), by position, with the measured step time at each position and the achieved GB/s.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

import kvcache
from kvbench.script import script_main

QUESTION = [{"role": "user", "content": "Tell me a long story about a cache that remembered everything."}]


def timed_generation(model, ids, n: int, use_cache: bool) -> float:
    start = time.perf_counter()
    model.generate_ids(ids, n, eos_token_id=None, use_cache=use_cache)
    return time.perf_counter() - start


def time_vs_length(model, ids, lengths, rounds: int) -> list:
    rows = []
    for n in lengths:
        cached, uncached = [], []
        for _ in range(rounds):  # alternating: a slower stretch of the shared machine hits both alike
            cached.append(timed_generation(model, ids, n, True))
            uncached.append(timed_generation(model, ids, n, False))
        rows.append({"new_tokens": n, "cached_s": float(np.median(cached)), "uncached_s": float(np.median(uncached)),
                     "speedup": float(np.median(uncached) / np.median(cached))})
        print("time", rows[-1], flush=True)
    return rows


# Run in a fresh process per point: in a long-lived one, memory freed by earlier measurements is reused, and the
# RSS hardly moves when a cache is allocated (measured: 0 bytes of growth for a 45 MiB cache).
# Also, as process_memory.release_free_memory does, glibc's mmap threshold is pinned and its free pages trimmed
# first: after the load's large frees it would place the cache on pages already resident.
_FILL = """
import ctypes, json, sys
import numpy as np
import kvcache
n, dtype = int(sys.argv[1]), sys.argv[2]
libc = ctypes.CDLL("libc.so.6")
libc.mallopt(-3, 128 * 1024)  # M_MMAP_THRESHOLD
model = kvcache.load("smollm2")
model.forward(np.zeros((1, 512), dtype=np.int64), cache=model.new_cache(1, 512))  # the workspace, before the count
libc.malloc_trim(0)
def rss():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * 4096
before = rss()
cache = model.new_cache(1, n, dtype=dtype)
while cache.seq_lens[0] < n:  # every position filled, as a conversation would
    model.forward(np.zeros((1, min(512, n - cache.seq_lens[0])), dtype=np.int64), cache=cache)
print(json.dumps({"nbytes": cache.nbytes, "rss_growth": rss() - before}))
"""


def memory_growth(model, positions) -> list:
    c = model.config
    rows = []
    for n in positions:
        for dtype, size in (("float32", 4), ("float16", 2)):
            out = subprocess.run([sys.executable, "-c", _FILL, str(n), dtype], capture_output=True, text=True,
                                 check=True)
            measured = json.loads(out.stdout)
            rows.append({"positions": n, "dtype": dtype, **measured,
                         "formula": 2 * c.n_layer * c.n_kv_head * n * c.head_dim * size,
                         "full_heads_formula": 2 * c.n_layer * c.n_head * n * c.head_dim * size})
            print("memory", rows[-1], flush=True)
    return rows


def step_time_by_position(model, positions, steps: int = 16) -> list:
    c = model.config
    cache = model.new_cache(1, max(positions) + steps + 1)
    token = np.array([[198]])
    rows = []
    for p in positions:
        while cache.seq_lens[0] < p:  # prefill up to p in chunks
            model.forward(np.full((1, min(512, p - cache.seq_lens[0])), 198), cache=cache)
        times = []
        for _ in range(steps):
            start = time.perf_counter()
            model.forward(token, cache=cache)
            times.append(time.perf_counter() - start)
        cache.crop(p)  # back to p positions, so each position's steps start alike
        step = float(np.median(times))
        cache_read = 2 * c.n_layer * c.n_kv_head * (p + 1) * c.head_dim * 4
        rows.append({"position": p, "step_s": step, "weights_bytes": model.weights_nbytes,
                     "cache_bytes_read": cache_read, "gb_per_s": (model.weights_nbytes + cache_read) / step / 1e9})
        print("step", rows[-1], flush=True)
    return rows


def plot(results: dict, out: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out.mkdir(parents=True, exist_ok=True)
    t = results["time"]
    fig, (a, b) = plt.subplots(1, 2, figsize=(11, 4))
    n = [r["new_tokens"] for r in t]
    a.plot(n, [r["uncached_s"] for r in t], "o-", color="tab:red", label="without KV cache")
    a.plot(n, [r["cached_s"] for r in t], "o-", color="tab:blue", label="with KV cache")
    a.set_xlabel("new tokens"), a.set_ylabel("seconds"), a.set_title("SmolLM2-135M: generation time")
    a.legend(), a.grid(alpha=0.3)
    b.plot(n, [r["speedup"] for r in t], "o-", color="tab:green")
    b.set_xlabel("new tokens"), b.set_ylabel("x faster with the cache"), b.set_title("speedup")
    b.grid(alpha=0.3)
    fig.tight_layout(), fig.savefig(out / "smollm2_speedup.png", dpi=110), plt.close(fig)

    m = [r for r in results["memory"] if r["dtype"] == "float32"]
    h = [r for r in results["memory"] if r["dtype"] == "float16"]
    fig, ax = plt.subplots(figsize=(7, 4.5))
    x = np.linspace(0, 8192, 50)
    c = results["config"]
    per = 2 * c["n_layer"] * c["head_dim"] * 4 / 2**20
    ax.plot(x, x * per * c["n_head"], "--", color="tab:red", label=f"{c['n_head']} full heads, float32 (formula)")
    ax.plot(x, x * per * c["n_kv_head"], "-", color="tab:blue", label=f"{c['n_kv_head']} kv heads (GQA), float32")
    ax.plot(x, x * per * c["n_kv_head"] / 2, "-", color="tab:cyan", label=f"{c['n_kv_head']} kv heads, float16")
    ax.plot([r["positions"] for r in m], [r["rss_growth"] / 2**20 for r in m], "o", color="tab:blue",
            label="measured RSS growth, float32")
    ax.plot([r["positions"] for r in h], [r["rss_growth"] / 2**20 for r in h], "s", color="tab:cyan",
            label="measured RSS growth, float16")
    ax.axhline(results["weights_bytes"] / 2**20, color="gray", ls=":", label="float32 weights")
    ax.set_xlabel("positions in the cache (batch 1)"), ax.set_ylabel("MiB")
    ax.set_title("SmolLM2-135M: KV cache memory to its 8192-position context")
    ax.legend(fontsize=8), ax.grid(alpha=0.3)
    fig.tight_layout(), fig.savefig(out / "smollm2_memory.png", dpi=110), plt.close(fig)

    s = results["steps"]
    fig, ax = plt.subplots(figsize=(7, 4.5))
    p = np.array([r["position"] for r in s])
    w = np.array([r["weights_bytes"] for r in s]) / 2**20
    kv = np.array([r["cache_bytes_read"] for r in s]) / 2**20
    ax.stackplot(p, w, kv, labels=["weights", "KV cache"], colors=["tab:gray", "tab:blue"], alpha=0.6)
    ax.set_xlabel("position of the decoded token"), ax.set_ylabel("MiB read per decode step")
    ax2 = ax.twinx()
    ax2.plot(p, [r["step_s"] * 1e3 for r in s], "o-", color="tab:red", label="measured step time")
    rate = (s[0]["weights_bytes"] + s[0]["cache_bytes_read"]) / s[0]["step_s"]  # bytes/s at the first position
    ax2.plot(p, (w + kv) * 2**20 / rate * 1e3, ":", color="tab:red", label="the bytes at the first position's rate")
    ax2.set_ylabel("ms per step", color="tab:red")
    ax2.set_ylim(0, max(r["step_s"] for r in s) * 1e3 * 1.1)  # from 0, as the bytes are
    ax.set_title("SmolLM2-135M: bytes one decode step reads (float32)")
    h1, l1 = ax.get_legend_handles_labels()
    h2, l2 = ax2.get_legend_handles_labels()
    ax.legend(h1 + h2, l1 + l2, loc="upper left", fontsize=8), ax.grid(alpha=0.3)
    fig.tight_layout(), fig.savefig(out / "smollm2_bytes_per_step.png", dpi=110), plt.close(fig)


SIZES = {"full": {"lengths": [16, 32, 64, 128, 256], "rounds": 3,
                  "step_positions": [16, 512, 1024, 2048, 4096, 6144, 8000], "memory_positions": [1024, 2048, 4096, 8192]},
         "small": {"lengths": [8, 16], "rounds": 1, "step_positions": [16, 128, 256], "memory_positions": [256, 512]}}


def run(sizes: dict) -> dict:
    """Every measurement of this file, at the given sizes (SIZES["full"] or ["small"])."""
    model = kvcache.load("smollm2")
    c = model.config
    ids = model.chat_ids(QUESTION)
    model.generate_ids(ids, 8)  # warm-up: page the weights in, start the threads
    results = {"model": "SmolLM2-135M-Instruct", "threads": kvcache.get_num_threads(),
               "config": {k: getattr(c, k) for k in ("n_layer", "n_head", "n_kv_head", "head_dim", "n_ctx")},
               "weights_bytes": model.weights_nbytes, "prompt_tokens": len(ids)}
    results["steps"] = step_time_by_position(model, sizes["step_positions"])
    results["time"] = time_vs_length(model, ids, sizes["lengths"], sizes["rounds"])
    results["memory"] = memory_growth(model, sizes["memory_positions"])
    return results


def main(argv=None) -> dict:
    return script_main(__doc__, "short lengths, a minute (what the notebook's CI runs)", SIZES, run, plot, argv)


if __name__ == "__main__":
    main()
