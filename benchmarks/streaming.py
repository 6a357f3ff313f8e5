"""A sliding window with attention sinks (StreamingLLM) on a real model: SmolLM2-135M-Instruct.

    python benchmarks/streaming.py [--small] [--out results/streaming.json] [--figures results/figures]

1. latency: per-token decode time against tokens generated, greedy, batch 1: a cache of 1020 window + 4 sinks
   positions (evict_chunk = window // 8 = 127) generating 20000 tokens from a 16-token prompt, past n_ctx = 8192, in
   1024 positions of memory; and a dense cache of n_ctx positions, filled by prefilling the text 1024 tokens at a
   time, with 48 decode steps timed at each fill level (a dense cache cannot go past n_ctx).
2. evict_chunk: the same windowed cache, full, for several evict_chunk values (1 = evicting one position per step),
   their generators stepping in turn: mean, median and largest step time, and ratios to evict_chunk = 1.
3. perplexity: tinyshakespeare.txt streamed through forward(chunk, cache, logits="all") 64 tokens at a time,
   summing -log p(next token): dense attention up to n_ctx, a plain window of 1024 (sinks=0) and window 1020 +
   4 sinks over the same tokens: the StreamingLLM figure.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np

import kvcache
from kvbench.script import script_main
from kvbench.texts import shakespeare



def text_ids(model, n_tokens: int) -> list:
    """The first n_tokens tokens of tinyshakespeare.txt (or of a stand-in where the file is missing)."""
    ids = model.encode(shakespeare(8 * n_tokens))  # a token is at least one character: 8 per token leaves room
    if len(ids) < n_tokens:
        raise ValueError(f"the text gives {len(ids)} tokens, fewer than the {n_tokens} asked")
    return ids[:n_tokens]


def windowed(model, window: int, sinks: int, evict_chunk=None):
    return model.new_cache(1, window=window, sinks=sinks, evict_chunk=evict_chunk)


def generation_latency(model, prompt: list, cache, new_tokens: int, bin_size: int) -> dict:
    """Times every step of a greedy generation over the cache; per bin of steps, the median step in ms."""
    g = kvcache._core.Generator(model._core, [prompt], max_new_tokens=new_tokens, eos_token_ids=[], cache=cache)
    times = []
    while True:
        start = time.perf_counter()
        more = g.step()
        times.append(time.perf_counter() - start)
        if not more:
            break
    steps = np.array(times[1:-1])  # the first step is the prefill, the last one finds nothing to do
    bins = [steps[i:i + bin_size] for i in range(0, len(steps), bin_size)]
    return {"prompt_tokens": len(prompt), "new_tokens": new_tokens,
            "tokens": [len(prompt) + i * bin_size + len(b) // 2 for i, b in enumerate(bins)],
            "median_ms": [float(np.median(b)) * 1e3 for b in bins],
            "cache_positions_at_end": cache.seq_lens[0], "evicted": cache.evicted(0), "cache_nbytes": cache.nbytes,
            "mean_ms": float(steps.mean()) * 1e3}


def dense_latency(model, ids: list, every: int, steps: int, until: int) -> dict:
    """A dense cache of n_ctx positions filled by prefills of `every` tokens, then `steps` greedy steps timed, up to
    `until` positions."""
    cache = model.new_cache(1, model.config.n_ctx)
    tokens, medians = [], []
    fed = 0
    while fed + every + steps <= until:
        model.forward(np.array([ids[fed:fed + every]]), cache=cache, logits="last")
        fed += every
        g = kvcache._core.Generator(model._core, [ids[fed:fed + 1]], max_new_tokens=steps, eos_token_ids=[],
                                    cache=cache)
        g.step()  # the one-token prompt
        times = []
        for _ in range(steps - 1):
            start = time.perf_counter()
            g.step()
            times.append(time.perf_counter() - start)
        fed = cache.seq_lens[0]
        tokens.append(fed - steps // 2)
        medians.append(float(np.median(times)) * 1e3)
        print("dense", tokens[-1], f"{medians[-1]:.2f} ms", flush=True)
    return {"tokens": tokens, "median_ms": medians, "steps_per_point": steps, "cache_nbytes": cache.nbytes}


def evict_chunks(model, ids: list, window: int, sinks: int, chunks: list, steps: int, rounds: int) -> dict:
    """Per evict_chunk: a full cache (window + sinks - 1 tokens prefilled once, copied in) and its generator; the
    generators step in turn, one step each (the order reversed every round), so that the machine's slower and faster
    phases fall on all of them alike. Mean, median, largest step, and per-step ratios to the first C's step of the same
    turn."""
    S = window + sinks
    filled = model.new_cache(1, S)
    model.forward(np.array([ids[:S - 1]]), cache=filled, logits="last")
    times = {c: [] for c in chunks}
    for r in range(rounds):
        generators = {}
        for c in chunks:
            cache = windowed(model, window, sinks, c)
            filled.copy_row(0, 0, dst=cache)
            g = kvcache._core.Generator(model._core, [ids[S - 1:S]], max_new_tokens=steps + 1, eos_token_ids=[],
                                        cache=cache)
            g.step()  # fills the row: every later step finds it full or after an eviction
            generators[c] = (g, cache)
        order = chunks if r % 2 == 0 else chunks[::-1]
        for _ in range(steps):
            for c in order:
                start = time.perf_counter()
                generators[c][0].step()
                times[c].append(time.perf_counter() - start)
        assert all(cache.evicted(0) == -(-steps // c) * c for c, (_, cache) in generators.items())
        print("evict_chunk round", r, {c: f"{np.mean(t[-steps:]) * 1e3:.2f} ms" for c, t in times.items()}, flush=True)
    base = np.array(times[chunks[0]])
    return {"window": window, "sinks": sinks, "steps": steps, "rounds": rounds,
            "chunks": [{"evict_chunk": c, "mean_ms": float(np.mean(t)) * 1e3, "median_ms": float(np.median(t)) * 1e3,
                        "max_ms": float(np.max(t)) * 1e3, "evictions_per_round": -(-steps // c),
                        f"median_ratio_to_chunk_{chunks[0]}": float(np.median(np.array(t) / base)),
                        f"mean_ratio_to_chunk_{chunks[0]}": float(np.mean(t) / np.mean(base))}
                       for c, t in times.items()]}


def stream_nll(model, ids: list, cache, chunk: int) -> np.ndarray:
    """-log p(ids[i + 1] | what the cache holds) for every i, feeding ids through the cache `chunk` at a time."""
    nll = np.empty(len(ids) - 1)
    for start in range(0, len(ids) - 1, chunk):
        piece = ids[start:min(start + chunk, len(ids) - 1)]
        logits = model.forward(np.array([piece]), cache=cache, logits="all")[0].astype(np.float64)
        top = logits.max(axis=1, keepdims=True)
        log_z = top[:, 0] + np.log(np.exp(logits - top).sum(axis=1))
        targets = np.array(ids[start + 1:start + 1 + len(piece)])
        nll[start:start + len(piece)] = log_z - logits[np.arange(len(piece)), targets]
    return nll


def run_names(window: int, sinks: int) -> tuple:
    return "dense", f"window {window + sinks}", f"window {window} + {sinks} sinks"


def perplexity(model, ids: list, n_dense: int, chunk: int, bin_size: int, window: int, sinks: int) -> dict:
    """Dense attention over the first n_dense tokens, a plain window of window + sinks and window + sinks, over ids."""
    out = {"chunk": chunk, "bin": bin_size, "tokens": len(ids), "runs": {}}
    dense, plain, sunk = run_names(window, sinks)
    runs = [(dense, model.new_cache(1, n_dense), ids[:n_dense]),
            (plain, windowed(model, window + sinks, 0), ids),
            (sunk, windowed(model, window, sinks), ids)]
    for name, cache, tokens in runs:
        start = time.perf_counter()
        nll = stream_nll(model, tokens, cache, chunk)
        seconds = time.perf_counter() - start
        bins = [nll[i:i + bin_size] for i in range(0, len(nll), bin_size)]
        out["runs"][name] = {
            "max_seq_len": cache.max_seq_len, "window": cache.window, "sinks": cache.sinks,
            "evict_chunk": cache.evict_chunk, "evicted": cache.evicted(0), "seconds": seconds,
            "bin_end": [min((i + 1) * bin_size, len(nll)) for i in range(len(bins))],
            "bin_ppl": [float(np.exp(b.mean())) for b in bins],
            "ppl": float(np.exp(nll.mean())),
            "ppl_first_n_dense": float(np.exp(nll[:n_dense - 1].mean())),
            "ppl_after_first_eviction": float(np.exp(nll[cache.max_seq_len:].mean())) if len(nll) > cache.max_seq_len
            else None}
        print("perplexity", name, {k: v for k, v in out["runs"][name].items() if not isinstance(v, list)}, flush=True)
    reference = out["runs"][dense]["bin_ppl"]
    for name in (plain, sunk):
        mine = out["runs"][name]["bin_ppl"][:len(reference)]
        ratios = [m / d for m, d, end in zip(mine, reference, out["runs"][dense]["bin_end"]) if end > window + sinks]
        out["runs"][name]["bin_ratio_to_dense_past_window"] = {"max": max(ratios), "median": float(np.median(ratios)),
                                                               "bins": len(ratios)}
    return out


def plot(results: dict, out: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out.mkdir(parents=True, exist_ok=True)
    lat = results["latency"]
    fig, (a, b) = plt.subplots(1, 2, figsize=(12, 4.2), gridspec_kw={"width_ratios": [3, 2]})
    w, d = lat["window"], lat["dense"]
    a.plot(d["tokens"], d["median_ms"], "o-", color="tab:red", label=f"dense cache (to n_ctx={results['n_ctx']})")
    a.plot(w["tokens"], w["median_ms"], "-", color="tab:blue",
           label=f"window {w['window']} + {w['sinks']} sinks ({w['cache_nbytes'] / 2**20:.0f} MiB)")
    a.set_ylim(0, max(d["median_ms"] + w["median_ms"]) * 1.12)
    if w["tokens"][-1] > results["n_ctx"]:
        a.axvline(results["n_ctx"], color="gray", ls=":", lw=1)
        a.text(results["n_ctx"], a.get_ylim()[1] * 0.97, " n_ctx", color="gray", va="top")
    a.set_xlabel("tokens generated (dense: held in the cache)"), a.set_ylabel("ms per decode step (median)")
    a.set_title("SmolLM2: decode latency, dense against a sliding window"), a.legend(loc="lower right")
    a.grid(alpha=0.3)
    ec = results["evict_chunk"]["chunks"]
    labels = [str(c["evict_chunk"]) for c in ec]
    bars = b.bar(labels, [c["mean_ms"] for c in ec], color="tab:blue")
    b.bar_label(bars, fmt="%.1f")
    b.set_xlabel("evict_chunk (positions evicted at once)"), b.set_ylabel("ms per token (mean)")
    b.set_title(f"window {results['evict_chunk']['window']} + {results['evict_chunk']['sinks']} sinks, full")
    b.grid(alpha=0.3, axis="y")
    fig.tight_layout(), fig.savefig(out / "streaming_latency.png", dpi=110), plt.close(fig)

    p = results["perplexity"]
    fig, (a, b) = plt.subplots(1, 2, figsize=(13, 4.5))
    for (name, run), color in zip(p["runs"].items(), ("tab:red", "tab:orange", "tab:blue")):
        ends = np.array(run["bin_end"])
        sizes = np.diff(np.concatenate([[0], ends]))
        so_far = np.exp(np.cumsum(np.log(run["bin_ppl"]) * sizes) / ends)  # exp(mean -log p of every token so far)
        a.plot(ends, run["bin_ppl"], "-", color=color, lw=1.5, label=name)
        b.plot(ends, so_far, "-", color=color, lw=1.5, label=f"{name} (all: {run['ppl']:.1f})")
    for axis in (a, b):
        axis.axvline(p["window"] + p["sinks"], color="gray", ls=":", lw=1)
        axis.set_xlabel("tokens processed"), axis.grid(alpha=0.3, which="both")
    a.set_yscale("log")
    a.set_ylabel(f"perplexity of each {p['bin']} tokens (log scale)")
    a.set_title("SmolLM2 on tinyshakespeare: streaming past the window"), a.legend()
    b.set_ylabel("perplexity of all tokens so far"), b.set_title("the same, cumulative"), b.legend()
    fig.tight_layout(), fig.savefig(out / "streaming_perplexity.png", dpi=110), plt.close(fig)


SIZES = {"full": {"window": 1020, "sinks": 4, "new_tokens": 20000, "bin": 250, "dense_every": 1024,
                  "dense_steps": 48, "dense_until": 8192, "chunks": [1, 16, 64, 127, 255], "chunk_steps": 256,
                  "rounds": 2, "ppl_tokens": 12288, "ppl_dense": 8192, "ppl_chunk": 64, "ppl_bin": 256},
         "small": {"window": 60, "sinks": 4, "new_tokens": 150, "bin": 25, "dense_every": 64, "dense_steps": 6,
                   "dense_until": 200, "chunks": [1, 7], "chunk_steps": 8, "rounds": 1,
                   "ppl_tokens": 300, "ppl_dense": 200, "ppl_chunk": 32, "ppl_bin": 32}}


def run(sizes: dict) -> dict:
    model = kvcache.load("smollm2")
    n_ctx = model.config.n_ctx
    window, sinks = sizes["window"], sizes["sinks"]
    ids = text_ids(model, max(sizes["ppl_tokens"], sizes["dense_until"]))
    model.generate_ids(ids[:8], 4)  # warm-up
    w = generation_latency(model, ids[:16], windowed(model, window, sinks), sizes["new_tokens"], sizes["bin"])
    w.update(window=window, sinks=sinks)
    print("window latency", {k: v for k, v in w.items() if not isinstance(v, list)}, flush=True)
    d = dense_latency(model, ids, sizes["dense_every"], sizes["dense_steps"], min(sizes["dense_until"], n_ctx))
    ec = evict_chunks(model, ids, window, sinks, sizes["chunks"], sizes["chunk_steps"], sizes["rounds"])
    ppl = perplexity(model, ids[:sizes["ppl_tokens"]], min(sizes["ppl_dense"], n_ctx), sizes["ppl_chunk"],
                     sizes["ppl_bin"], window, sinks)
    ppl.update(window=window, sinks=sinks)
    return {"model": "SmolLM2-135M-Instruct", "threads": kvcache.get_num_threads(), "n_ctx": n_ctx, "sizes": sizes,
            "latency": {"window": w, "dense": d}, "evict_chunk": ec, "perplexity": ppl}


def main(argv=None) -> dict:
    return script_main(__doc__, "a short generation and text, seconds (tests)", SIZES, run, plot, argv)


if __name__ == "__main__":
    main()
