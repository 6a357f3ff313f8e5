"""Speed against this machine's limits, measured in one run.

    python benchmarks/speed.py                    # random-init GPT-2 124M (written once by kvcache.demo)
    python benchmarks/speed.py --model DIR --threads 2 --out results/speed.json

Decode is memory-bound: at batch 1 each token reads every weight once, so tokens/s <= read bandwidth / weight bytes
(the roofline); a batch of b rows reads them once too, so its roofline is min(b x that, FMA peak / FLOPs per token).
Prefill is compute-bound: its FLOPs are set against the FMA peak. Both limits are probed here, on
the same cores, just before the engine is timed; transformers' GPT2LMHeadModel runs on the same weights and threads.
The machine is shared and noisy: each limit is probed in alternation with the engine measurement it bounds, and
both are reported as medians; whole generations (ours and transformers') as best of three.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from typing import Optional

import kvcache
from kvcache import GPT2
from kvcache._core import Generator
from kvcache.arguments import thread_count, usage_errors
from kvcache.demo import random_checkpoint

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))  # kvbench, beside this script
from kvbench.machine import best_seconds, kernel_probes, read_bandwidth_probe  # noqa: E402

# The lengths this script measures. The longest run must fit the model's context; that is checked before any work.
PREFILL_TOKENS = 512
LATENCY_NEAR, LATENCY_FAR, LATENCY_STEPS = 10, 1000, 16
GENERATION_PROMPT, GENERATION_NEW_TOKENS = 8, 64
POSITIONS_NEEDED = max(PREFILL_TOKENS + 1, LATENCY_FAR + LATENCY_STEPS + 1, GENERATION_PROMPT + GENERATION_NEW_TOKENS)


def interleaved(rounds: int, probe, measure) -> tuple[float, float]:
    """Medians of a machine probe and an engine measurement taken in alternation, so both see the same share of a
    noisy, shared machine (a best-of-N probe against a median engine time would flatter the machine)."""
    probes, measures = [], []
    for _ in range(rounds):
        probes.append(probe())
        measures.extend(measure())
    return statistics.median(probes), statistics.median(measures)


def bandwidth_probe(buffer_mib: int = 1024):
    """A threaded read of a buffer far larger than the caches: bytes/s of one pass (kvbench.machine's probe)."""
    return read_bandwidth_probe(buffer_mib * 2**20)


def filler_prompt(model: GPT2, length: int, row: int = 0) -> list:
    """A prompt of one repeated token (" The" in GPT-2's vocabulary; another row, another token): what a step
    costs does not depend on which tokens it reads."""
    return [(464 + row) % model.config.n_vocab] * length


def step_times(model: GPT2, prompts: list, steps: int, **options) -> list:
    """Seconds of each decode step after the prefill (the generator's first step)."""
    generator = Generator(model._core, prompts, max_new_tokens=steps + 1, **options)
    generator.step()
    times = []
    while True:
        start = time.perf_counter()
        if not generator.step():
            break
        times.append(time.perf_counter() - start)
    return times


def decode_tokens_per_s(model: GPT2, batch: int, steps: int = 48, prompt_len: int = 8) -> float:
    times = step_times(model, [filler_prompt(model, prompt_len, r) for r in range(batch)], steps)
    return batch / statistics.median(times)


def in_rounds(measures: dict, rounds: int) -> dict:
    """Median of each measurement (a function returning a list of seconds), the measurements taken one after
    another in rounds, so that their ratios are taken under the same share of a shared machine (one after the
    other, a whole measurement at a time, they drifted apart by tens of percent)."""
    times = {name: [] for name in measures}
    for _ in range(rounds):
        for name, measure in measures.items():
            times[name] += measure()
    return {name: statistics.median(t) for name, t in times.items()}


def forward_flops(config, rows: int, attended: float) -> float:
    """Multiply-adds x 2 of a forward pass over `rows` tokens that together attend to `attended` (query, key)
    pairs (q.k and p.v), with the lm_head over one row: the logits generation computes."""
    C, L = config.n_embd, config.n_layer
    return L * (24 * rows * C * C + 4 * attended * C) + 2 * C * config.n_vocab


def decode_flops_per_token(config, position: int) -> float:
    """One decoded token, attending to `position` cached positions."""
    return forward_flops(config, 1, position)


def batch_step_cycles(model: GPT2, probe, fma_probe, batches, chunks: int, steps: int, prompt_len: int):
    """Decode-step seconds of every batch size, stepped in alternation (a cycle: one step of each size in turn,
    about 0.1 s for GPT-2 124M), with both probes before each chunk of `steps` cycles. Each chunk starts new
    generators, so the cache stays near `prompt_len` positions. Returns the cycles ({batch: seconds} each) and
    the probes' samples."""
    cycles, bandwidths, fma_peaks = [], [], []
    for _ in range(chunks):
        bandwidths.append(probe())
        fma_peaks.append(fma_probe())
        generators = {b: Generator(model._core, [filler_prompt(model, prompt_len, r) for r in range(b)],
                                   max_new_tokens=steps + 1) for b in batches}
        cycles += alternating_step_cycles(generators, steps)
    return cycles, bandwidths, fma_peaks


def scaling_of(cycles: list, weights_bytes: int, compute_limit: float, engine_limit: Optional[float] = None) -> dict:
    """Per batch size, over the given cycles: the median of its ratio to batch 1's tokens/s within each cycle,
    and that ratio against linear growth until compute-bound, min(batch, compute limit / batch 1's tokens/s).
    engine_limit (tokens/s), where given: the same against the FLOP rate this engine itself sustains when only
    the FMAs bound it (its prefill's): the probe's FMA peak comes from a loop whose operands never leave the
    registers, which no product we measured reaches from memory."""
    batch_1_step = statistics.median(c[1] for c in cycles)
    knee = compute_limit * batch_1_step  # the batch at which linear growth would reach the FMA peak
    engine_knee = None if engine_limit is None else engine_limit * batch_1_step
    rows = {}
    for b in cycles[0]:
        ratio = statistics.median(b * c[1] / c[b] for c in cycles)
        rows[b] = {"tokens_per_s": b / statistics.median(c[b] for c in cycles), "vs_batch_1": ratio,
                   "of_linear_until_compute_bound": ratio / min(b, knee)}
        if engine_knee is not None:
            rows[b]["of_linear_until_engine_compute_bound"] = ratio / min(b, engine_knee)
    result = {"cycles": len(cycles), "batch_1_read_GBps": weights_bytes / batch_1_step / 1e9,
              "compute_bound_from_batch": knee, "batches": rows}
    if engine_knee is not None:
        result["engine_compute_bound_from_batch"] = engine_knee
    return result


def batch_scaling(model: GPT2, probe, fma_probe, batches=(1, 2, 4, 6, 8), chunks: int = 8, steps: int = 10,
                  prompt_len: int = 8, engine_flops: Optional[float] = None) -> dict:
    """Decode tokens/s per batch size against that batch's roofline, min(batch x bandwidth / weight bytes,
    FMA peak / FLOPs per token): a step reads the weights once whatever the batch, so throughput can grow
    linearly with the batch until the FMAs, not the memory, are the limit.

    The sizes are stepped in alternation and each ratio to batch 1 is taken within one cycle: this machine's
    memory swings between about 33 and 55 GB/s within seconds, and whole measurements taken one after another
    (even in rounds) mixed the two states. The cycles are also split at the median batch-1 step into the slower
    and the faster half (slow and fast memory, where the machine has both): with fast memory the FMAs become the
    limit at a smaller batch, so each half is set against its own knee. Both probes run between chunks of cycles:
    the FMAs a core gives us swing too (the same register tile, run on our two cores at once, ran 13-33% slower
    on one of them than on the other). engine_flops (FLOP/s, where given): the rate this engine sustains when
    compute-bound (its prefill's), a second knee for each half (scaling_of)."""
    cycles, bandwidths, fma_peaks = batch_step_cycles(model, probe, fma_probe, batches, chunks, steps, prompt_len)
    bandwidth, fma_peak = statistics.median(bandwidths), statistics.median(fma_peaks)
    flops = decode_flops_per_token(model.config, prompt_len + steps // 2)
    memory_limit, compute_limit = bandwidth / model.weights_nbytes, fma_peak / flops
    engine_limit = None if engine_flops is None else engine_flops / flops
    overall = scaling_of(cycles, model.weights_nbytes, compute_limit)
    rows = {}
    for b, row in overall["batches"].items():
        roofline = min(b * memory_limit, compute_limit)
        rows[b] = {**row, "roofline_tokens_per_s": roofline, "fraction_of_roofline": row["tokens_per_s"] / roofline,
                   "fraction_of_fma_peak": row["tokens_per_s"] * flops / fma_peak}
    by_batch_1 = sorted(cycles, key=lambda c: c[1])
    half = len(by_batch_1) // 2
    return {"read_bandwidth_GBps": bandwidth / 1e9, "fma_peak_GFLOPs": fma_peak / 1e9, "flops_per_token": flops,
            "compute_bound_from_batch": compute_limit / memory_limit, "batches": rows,
            "engine_compute_GFLOPs": None if engine_flops is None else engine_flops / 1e9,
            "slower_memory_half": scaling_of(by_batch_1[half:], model.weights_nbytes, compute_limit, engine_limit),
            "faster_memory_half": scaling_of(by_batch_1[:max(half, 1)], model.weights_nbytes, compute_limit,
                                             engine_limit)}


def alternating_step_cycles(generators: dict, steps: int) -> list:
    """Decode-step seconds of each generator after its prefill, the generators stepped in alternation, one step
    each in turn, so that all see the same share of a shared machine whose bandwidth drifts: one {name: seconds}
    per cycle."""
    for g in generators.values():
        g.step()  # the prefill
    cycles = []
    for _ in range(steps):
        cycle = {}
        for name, g in generators.items():
            start = time.perf_counter()
            g.step()
            cycle[name] = time.perf_counter() - start
        cycles.append(cycle)
    return cycles


def alternating_step_times(generators: dict, steps: int) -> dict:
    """Median decode-step seconds of each generator, stepped in alternation (alternating_step_cycles)."""
    cycles = alternating_step_cycles(generators, steps)
    return {name: statistics.median(c[name] for c in cycles) for name in generators}


def step_latencies(model: GPT2, near: int, far: int, steps: int = LATENCY_STEPS) -> tuple[float, float]:
    """Median decode-step latencies with `near` and with `far` tokens already in the cache, stepped in alternation."""
    generators = {n: Generator(model._core, [filler_prompt(model, n)], max_new_tokens=steps + 1)
                  for n in (near, far)}
    medians = alternating_step_times(generators, steps)
    return medians[near], medians[far]


def kv_bytes_read(config, positions: int) -> int:
    """Bytes of K and V one decode step reads at batch 1 with `positions` tokens in the cache (float32)."""
    return 2 * config.n_layer * positions * config.n_embd * 4


def prefill_seconds(model: GPT2, prompt_len: int) -> list:
    """One prefill pass (logits of the last position only, as generation computes them), in a list."""
    generator = Generator(model._core, [filler_prompt(model, prompt_len)], max_new_tokens=1)
    start = time.perf_counter()
    generator.step()
    return [time.perf_counter() - start]


def prefill_flops(config, T: int) -> float:
    """A causal prefill of T tokens: attention over the causal half of the (T, T) pairs."""
    return forward_flops(config, T, T * T / 2)


def generation_seconds_ours(model: GPT2, prompt: list, n: int, repeats: int = 3) -> float:
    return best_seconds(lambda: model.generate_ids(prompt, max_new_tokens=n, eos_token_id=None), repeats)


def generation_seconds_transformers(directory: str, prompt: list, n: int, threads: int, repeats: int = 3):
    """Best time of transformers' greedy generate with its default KV cache, or None when it is not installed."""
    try:
        import torch
        from transformers import GPT2LMHeadModel
    except ImportError:
        return None
    torch.set_num_threads(threads)
    hf = GPT2LMHeadModel.from_pretrained(directory, torch_dtype=torch.float32).eval()
    ids = torch.tensor([prompt])
    mask = torch.ones_like(ids)
    run = lambda: hf.generate(ids, attention_mask=mask, max_new_tokens=n, min_new_tokens=n, do_sample=False,
                              use_cache=True, pad_token_id=0)
    with torch.no_grad():
        run()  # warm-up
        return best_seconds(run, repeats)


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", help="Hugging Face GPT-2 directory (default: random-init 124M)")
    parser.add_argument("--threads", type=thread_count, default=None)
    parser.add_argument("--out", default=None, help="write the results as JSON here")
    args = parser.parse_args(argv)
    if args.threads is not None:
        kvcache.set_num_threads(args.threads)
    threads = kvcache.get_num_threads()
    directory = args.model or random_checkpoint()
    with usage_errors(parser):  # a missing or malformed --model
        model = GPT2.from_pretrained(directory)
    if model.config.n_ctx < POSITIONS_NEEDED:
        parser.error(f"the model's context of {model.config.n_ctx} positions is too short: this benchmark runs "
                     f"sequences of up to {POSITIONS_NEEDED} (decode steps at position {LATENCY_FAR})")
    weight_bytes = model.weights_nbytes

    decode_tokens_per_s(model, 1, steps=8)  # warm-up: page the weights in, start the threads
    probe = bandwidth_probe()
    bandwidth, step_s = interleaved(7, probe, lambda: step_times(model, [filler_prompt(model, 8)], 12))
    fma_probe = lambda: kernel_probes().probe_fma_peak(0.3)
    fma_peak, prefill_s = interleaved(5, fma_probe, lambda: prefill_seconds(model, PREFILL_TOKENS))
    machine = {"read_bandwidth_GBps": bandwidth / 1e9, "fma_peak_GFLOPs": fma_peak / 1e9}
    roofline = bandwidth / weight_bytes
    prefill_rate = prefill_flops(model.config, PREFILL_TOKENS) / prefill_s  # FLOP/s
    # the prefill just timed is this engine's compute-bound rate: a second knee for the batch rows
    scaling = batch_scaling(model, probe, fma_probe, engine_flops=prefill_rate)
    near, far = step_latencies(model, LATENCY_NEAR, LATENCY_FAR)
    prompt, n_new = filler_prompt(model, GENERATION_PROMPT), GENERATION_NEW_TOKENS
    ours_s = generation_seconds_ours(model, prompt, n_new)
    hf_s = generation_seconds_transformers(directory, prompt, n_new, threads)

    results = {
        "machine": {"cpu": platform.processor() or platform.machine(), "threads": threads,
                    "python": sys.version.split()[0], "kvcache": kvcache.__version__, **machine},
        "model": {"dir": os.path.abspath(directory), "weights_bytes": weight_bytes, "config": repr(model.config)},
        "decode_tokens_per_s": {1: 1.0 / step_s},
        "batch_decode": scaling,
        "decode_roofline_tokens_per_s": roofline,
        "decode_fraction_of_roofline": 1.0 / step_s / roofline,
        "achieved_bandwidth_GBps": weight_bytes / step_s / 1e9,
        "step_latency_ms": {"position_10": near * 1e3, "position_1000": far * 1e3, "ratio": far / near,
                            # a step at position 1000 must also read 1000 positions of K and V: the least ratio
                            "bytes_read_ratio":
                                (weight_bytes + kv_bytes_read(model.config, LATENCY_FAR)) / weight_bytes},
        "prefill_512": {"seconds": prefill_s, "GFLOPs": prefill_rate / 1e9,
                        "fraction_of_fma_peak": prefill_rate / 1e9 / machine["fma_peak_GFLOPs"]},
        "generate_64_tokens_seconds": {"kvcache": ours_s, "transformers": hf_s,
                                       "speedup_vs_transformers": None if hf_s is None else hf_s / ours_s},
    }
    print(report(results))
    if args.out:
        write_json(args.out, results)
    return results


def write_json(path: str, results: dict) -> None:
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, "w") as f:
        json.dump(results, f, indent=2)


def throughput_text(batches: dict, ratio_format: str) -> str:
    """'72 / 127 tokens/s = 1.0x / 1.8x batch 1' for a batch table's rows."""
    return (" / ".join(f"{row['tokens_per_s']:.0f}" for row in batches.values()) + " tokens/s = "
            + " / ".join(f"{row['vs_batch_1']:{ratio_format}}x" for row in batches.values()) + " batch 1")


def engine_knee_text(scaling: dict, half: dict) -> str:
    """'; 84 / 80% until the engine's own compute rate (...)' for a half of the batch cycles, where measured."""
    if half.get("engine_compute_bound_from_batch") is None:
        return ""
    return ("; " + " / ".join(f"{row['of_linear_until_engine_compute_bound']:.0%}" for row in half["batches"].values())
            + f" until the engine's own compute rate ({scaling['engine_compute_GFLOPs']:.0f} GFLOP/s, its 512-token"
            + f" prefill's; from batch {half['engine_compute_bound_from_batch']:.1f})")


def report(r: dict) -> str:
    batch = r["batch_decode"]["batches"]
    m, d, lat, pre, gen = r["machine"], r["decode_tokens_per_s"], r["step_latency_ms"], r["prefill_512"], \
        r["generate_64_tokens_seconds"]
    rows = [
        ("machine: read bandwidth / FMA peak", f"{m['read_bandwidth_GBps']:.1f} GB/s / {m['fma_peak_GFLOPs']:.0f} GFLOP/s",
         f"{m['threads']} threads", ""),
        ("decode batch 1 (float32)", f"{d[1]:.1f} tokens/s = {r['achieved_bandwidth_GBps']:.1f} GB/s",
         f"{r['decode_fraction_of_roofline']:.0%} of roofline {r['decode_roofline_tokens_per_s']:.1f} tokens/s", ">= 85%"),
        ("generate 64 tokens vs transformers", f"{gen['kvcache']:.2f} s vs "
         + ("n/a" if gen["transformers"] is None else f"{gen['transformers']:.2f} s"),
         "n/a" if gen["speedup_vs_transformers"] is None else f"{gen['speedup_vs_transformers']:.2f}x faster", ">= 2x"),
        ("prefill 512 tokens", f"{pre['seconds']:.3f} s = {pre['GFLOPs']:.0f} GFLOP/s",
         f"{pre['fraction_of_fma_peak']:.0%} of FMA peak", ">= 60%"),
        ("step latency position 1000 / 10", f"{lat['position_1000']:.1f} ms / {lat['position_10']:.1f} ms",
         f"{lat['ratio']:.2f}x (bytes read: {lat['bytes_read_ratio']:.2f}x)", "<= 1.3x"),
        (f"decode batch {' / '.join(map(str, batch))} (stepped in alternation)",
         throughput_text(batch, ".1f"),
         " / ".join(f"{row['fraction_of_roofline']:.0%}" for row in batch.values())
         + f" of the batch roofline (compute-bound from batch {r['batch_decode']['compute_bound_from_batch']:.1f}"
         + f" at {r['batch_decode']['read_bandwidth_GBps']:.1f} GB/s and {r['batch_decode']['fma_peak_GFLOPs']:.0f}"
         + " GFLOP/s, both probed between the cycles);"
         + " FMAs at " + " / ".join(f"{row['fraction_of_fma_peak']:.0%}" for row in batch.values()) + " of peak",
         "~linear"),
    ]
    for name in ("slower_memory_half", "faster_memory_half"):
        h = r["batch_decode"][name]
        rows.append((f"the same, {name.replace('_', ' ')} of the cycles ({h['cycles']})",
                     f"batch 1 at {h['batch_1_read_GBps']:.1f} GB/s; " + throughput_text(h["batches"], ".2f"),
                     " / ".join(f"{row['of_linear_until_compute_bound']:.0%}" for row in h["batches"].values())
                     + f" of linear growth until compute-bound (from batch {h['compute_bound_from_batch']:.1f})"
                     + engine_knee_text(r["batch_decode"], h),
                     "~linear"))
    lines = ["| measure | value | against the limit | target |", "|---|---|---|---|"]
    lines += [f"| {a} | {b} | {c} | {t} |" for a, b, c, t in rows]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
