"""kvbench: the benchmark library behind benchmarks/ and notebooks/, not part of the kvcache package.

It measures the engine (time, speedup, per-step latency, KV cache memory, batch, transformers side by side) and
writes, tabulates and plots the results; `bench` owns the runs and the command line (benchmarks/bench.py) and
re-exports the rest: kv_memory, process_memory, prompts, timing, engine_benchmarks, peers, claims, tables,
results, machine, plots. It needs tqdm and matplotlib (requirements.txt, or the `bench` extra), and its machine
probes the kvcache_kernels test module (`pip install . -Ccmake.define.KVCACHE_KERNEL_TESTS=ON`, as .ci/setup.sh).

It is not installed: put benchmarks/ on sys.path (the scripts there do it themselves), then `from kvbench import
bench`.
"""
