"""What a KV cache buys and what it costs, measured: time, speedup, per-step latency, memory, batch, and
transformers' GPT-2 side by side on the same weights.

    from kvcache import GPT2, GPT2Config
    from kvbench import bench  # benchmarks/ on sys.path
    model = GPT2.from_config(GPT2Config(), seed=0)
    rows = bench.compare_cache_performance(model, prompt=8, lengths=(20, 50, 100))
    print(bench.format_table(bench.speedup_table(rows)))

Command line (every subcommand writes JSON + CSV under --out and re-draws the figures under --out/figures):

    python benchmarks/bench.py all --out results           # the full run (~10 min on 2 cores)
    python benchmarks/bench.py all --small --out /tmp/r    # tiny model, seconds (also: KVCACHE_SMALL=1)
    python benchmarks/bench.py plot --out results          # figures again from the JSON, nothing re-run

Every timing is one call of the engine timed with time.perf_counter: after a warm-up run that is not counted,
`repeats` runs (fewer once `time_budget_s` is spent, never fewer than one), median kept. Generation always runs
to the full length (no stop at end-of-text), so the cached and uncached runs do the same number of steps.

This module owns the runs (sizes, the run context, the suites) and the command line; the pieces live beside it
and are re-exported here, so `bench.<name>` reaches all of them: kv_memory (shapes, the formula, measured cache
memory), process_memory (RSS), prompts, timing (the timed-run harness, GenerationRecord), engine_benchmarks
(this engine, cached and uncached, by length and batch), peers (transformers on the same weights), claims (the
write-ups' figures), tables (Markdown tables), results (Suite on disk as JSON + CSV).
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import sys
import time
from dataclasses import asdict, dataclass, field
from typing import Callable, Dict, List, Optional, Sequence, Tuple

from kvcache import get_num_threads, set_num_threads
from kvcache._core import GPT2Config
from kvcache.arguments import positive_int, thread_count, usage_errors
from kvcache.model import GPT2

from .claims import CLAIMED_SECONDS_100, CLAIMED_SPEEDUP, claims_table, memory_claims
from .engine_benchmarks import (SpeedupRow, benchmark_batch, benchmark_generation, compare_cache_performance,
                                uncached_step_cost)
from .kv_memory import (DTYPE_BYTES, MEASURE_VOCAB, SHAPES, KVMemoryProfile, ModelShape, as_shape, kv_cache_bytes,
                        measure_cache_memory, measure_memory_growth, profile_kv_cache_memory, shape_of)
from .machine import describe_machine, measure_matmul_flops, measure_read_bandwidth
from .peers import PEER_MODES, Unavailable, benchmark_transformers, compare_peers, load_transformers_peer
from .process_memory import rss_bytes
from .prompts import PROMPT_TEXT, make_prompt, prompt_ids
from .results import RECORD_TYPES, Suite, load_results, load_suite, save_suite
from .tables import batch_table, format_table, formula_table, memory_table, peer_table, speedup_table
from .timing import WARMUP_TOKENS, GenerationRecord, Runner, Tick

__all__ = [
    # the runs and the command line (this module)
    "GPT2_124M", "SMALL_MODEL", "small_mode", "Sizes", "machine_info", "RunContext", "SUITES", "suite_table", "main",
    # kv_memory, process_memory
    "DTYPE_BYTES", "ModelShape", "SHAPES", "as_shape", "shape_of", "kv_cache_bytes", "KVMemoryProfile",
    "measure_cache_memory", "profile_kv_cache_memory", "MEASURE_VOCAB", "measure_memory_growth", "rss_bytes",
    # prompts, timing, engine_benchmarks
    "PROMPT_TEXT", "make_prompt", "prompt_ids", "Tick", "Runner", "WARMUP_TOKENS", "GenerationRecord",
    "benchmark_generation", "SpeedupRow", "compare_cache_performance", "uncached_step_cost", "benchmark_batch",
    # peers
    "PEER_MODES", "load_transformers_peer", "benchmark_transformers", "Unavailable", "compare_peers",
    # claims, tables
    "CLAIMED_SPEEDUP", "CLAIMED_SECONDS_100", "claims_table", "memory_claims", "format_table", "speedup_table",
    "peer_table", "batch_table", "memory_table", "formula_table",
    # results
    "Suite", "RECORD_TYPES", "save_suite", "load_suite", "load_results",
]

# ---- the runs: sizes, suites, command line -----------------------------------------------------------------------

GPT2_124M = {"n_layer": 12, "n_head": 12, "n_embd": 768}
SMALL_MODEL = {"n_layer": 2, "n_head": 4, "n_embd": 128, "n_ctx": 256}


def small_mode() -> bool:
    """KVCACHE_SMALL=1 (CI) asks the notebooks and the command line for the tiny sizes."""
    return os.environ.get("KVCACHE_SMALL", "") not in ("", "0")


@dataclass
class Sizes:
    """How big a run is. The defaults are the full run (about 10 minutes on 2 cores); small() is CI's."""
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

    def positions_needed(self, suites: Sequence[str]) -> int:
        """The longest sequence (prompt + new tokens) the suites generate on the model: checked against its context
        before any of them runs (the memory suite builds its own shapes)."""
        longest = {"speedup": max(prompt + n for prompt, lengths in self.speedup for n in lengths),
                   "batch": self.prompt_tokens + self.batch_new_tokens,
                   "peers": self.prompt_tokens + self.peer_new_tokens, "memory": 0}
        return max(longest[name] for name in suites)

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
    p = argparse.ArgumentParser(prog="python benchmarks/bench.py", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("command", choices=["all", *SUITES, "plot", "generate"],
                   help="all: every suite; speedup/batch/peers/memory: one; plot: figures from saved JSON; "
                        "generate: time one generation and print it")
    p.add_argument("--out", default="results", help="folder for JSON/CSV; figures go to OUT/figures")
    p.add_argument("--small", action="store_true", default=small_mode(), help="tiny model and lengths (CI)")
    p.add_argument("--model", help="checkpoint folder (config.json + model.safetensors); default: random GPT-2")
    p.add_argument("--threads", type=thread_count, help="engine and torch threads (default: the engine's default)")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.add_argument("--no-figures", action="store_true", help="write data only")
    g = p.add_argument_group("generate")
    g.add_argument("--prompt-tokens", type=positive_int, default=8)
    g.add_argument("--new-tokens", type=positive_int, default=100)
    g.add_argument("--batch-size", type=positive_int, default=1)
    g.add_argument("--no-cache", action="store_true")
    g.add_argument("--repeats", type=positive_int, default=3)
    return p


def _plot(out: str) -> None:
    import matplotlib
    matplotlib.use("Agg")
    from . import plots
    for path in plots.plot_all(out, os.path.join(out, "figures")).values():
        print("wrote", path)


def main(argv: Optional[Sequence[str]] = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = _parser()
    args = parser.parse_args(argv)
    if args.threads is not None:
        set_num_threads(args.threads)
    if args.command == "plot":
        if not load_results(args.out):
            parser.error(f"no results to plot in {args.out!r}: run a suite with --out {args.out} first")
        _plot(args.out)
        return 0
    if args.command != "generate":  # before the suites run, not after: a run can take an hour
        os.makedirs(args.out, exist_ok=True)
        if not os.access(args.out, os.W_OK):
            parser.error(f"cannot write to --out {args.out!r}")
    sizes = Sizes.small() if args.small else Sizes()
    with usage_errors(parser):  # a missing or malformed --model
        model, source = _load_model(args.model, sizes)
    if args.command == "generate":
        if args.prompt_tokens + args.new_tokens > model.config.n_ctx:
            parser.error(f"--prompt-tokens {args.prompt_tokens} + --new-tokens {args.new_tokens} exceed the model's "
                         f"context of {model.config.n_ctx} positions")
        record = benchmark_generation(model, args.prompt_tokens, args.new_tokens, not args.no_cache, args.batch_size,
                                      args.repeats, progress=not args.no_progress)
        print(format_table([{k: v for k, v in asdict(record).items() if k != "step_s"}]))
        return 0
    suites = list(SUITES) if args.command == "all" else [args.command]
    needed = sizes.positions_needed(suites)
    if needed > model.config.n_ctx:
        parser.error(f"{args.command} generates sequences of up to {needed} positions, beyond the model's context "
                     f"of {model.config.n_ctx}")
    start = time.perf_counter()
    ctx = RunContext(model, sizes, machine_info(sizes), source, args.model, not args.no_progress)
    for name in suites:
        suite = SUITES[name](ctx)
        print(f"\n## {name}  ({save_suite(suite, args.out)})\n\n{format_table(suite_table(suite))}", flush=True)
    if not args.no_figures:
        _plot(args.out)
    run = {"command": shlex.join(["python", "benchmarks/bench.py", *argv]), "wall_s": time.perf_counter() - start,
           "machine": ctx.machine}
    with open(os.path.join(args.out, f"run_{args.command}.json"), "w") as f:
        json.dump(run, f, indent=1)
    print(f"\n{args.command}: {run['wall_s']:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
