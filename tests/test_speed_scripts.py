"""benchmarks/speed.py and benchmarks/precision.py run end to end (on a tiny checkpoint: these are not timings, only
proof that the scripts behind README's speed and precision tables work and report what they say), and
benchmarks/step_products.cc, the C++ benchmark behind README's kernel figures, builds and runs."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess

import pytest

import kvcache

from conftest import LONG
from kvcache_kernels import available_isas
# benchmarks/ (on sys.path by conftest)
import precision
import speed

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_speed_script_reports_every_measure_against_its_limit(checkpoint, tmp_path):
    ck = checkpoint(LONG)  # n_ctx 1024: room for the 512-token prefill and the step at position 1000
    out = tmp_path / "speed.json"
    results = speed.main(["--model", str(ck.path), "--out", str(out)])
    assert json.loads(out.read_text()) == json.loads(json.dumps(results))
    assert results["machine"]["read_bandwidth_GBps"] > 0 and results["machine"]["fma_peak_GFLOPs"] > 0
    assert results["decode_fraction_of_roofline"] == pytest.approx(
        results["decode_tokens_per_s"][1] / results["decode_roofline_tokens_per_s"])
    batch = results["batch_decode"]
    assert set(batch["batches"]) == {1, 2, 4, 6, 8}
    memory_limit = batch["read_bandwidth_GBps"] * 1e9 / results["model"]["weights_bytes"]
    assert batch["read_bandwidth_GBps"] > 0 and batch["fma_peak_GFLOPs"] > 0  # probed in the batch rounds
    compute_limit = batch["fma_peak_GFLOPs"] * 1e9 / batch["flops_per_token"]
    assert batch["compute_bound_from_batch"] == pytest.approx(compute_limit / memory_limit)
    for b, row in batch["batches"].items():
        assert row["tokens_per_s"] > 0
        assert row["roofline_tokens_per_s"] == pytest.approx(min(b * memory_limit, compute_limit))
        assert row["fraction_of_roofline"] == pytest.approx(row["tokens_per_s"] / row["roofline_tokens_per_s"])
        assert row["fraction_of_fma_peak"] == pytest.approx(
            row["tokens_per_s"] * batch["flops_per_token"] / (batch["fma_peak_GFLOPs"] * 1e9))
        assert row["vs_batch_1"] > 0  # the median of its ratios to batch 1 within each cycle
    assert batch["batches"][1]["vs_batch_1"] == 1.0
    slow, fast = batch["slower_memory_half"], batch["faster_memory_half"]
    assert slow["cycles"] + fast["cycles"] == 8 * 10  # chunks x steps, every cycle in one half
    assert slow["batch_1_read_GBps"] <= fast["batch_1_read_GBps"]
    for h in (slow, fast):
        assert set(h["batches"]) == {1, 2, 4, 6, 8}
        batch_1_rate = h["batch_1_read_GBps"] * 1e9 / results["model"]["weights_bytes"]
        assert h["compute_bound_from_batch"] == pytest.approx(compute_limit / batch_1_rate)
        # the second knee: the engine's own compute rate, the 512-token prefill's FLOPs per second
        engine_limit = results["prefill_512"]["GFLOPs"] / batch["flops_per_token"] * 1e9
        assert batch["engine_compute_GFLOPs"] == pytest.approx(results["prefill_512"]["GFLOPs"])
        assert h["engine_compute_bound_from_batch"] == pytest.approx(engine_limit / batch_1_rate)
        for b, row in h["batches"].items():
            assert row["of_linear_until_compute_bound"] == pytest.approx(
                row["vs_batch_1"] / min(b, h["compute_bound_from_batch"]))
            assert row["of_linear_until_engine_compute_bound"] == pytest.approx(
                row["vs_batch_1"] / min(b, h["engine_compute_bound_from_batch"]))
    lat = results["step_latency_ms"]
    assert lat["ratio"] == pytest.approx(lat["position_1000"] / lat["position_10"])
    assert lat["bytes_read_ratio"] > 1.0
    assert 0 < results["prefill_512"]["fraction_of_fma_peak"]
    assert results["generate_64_tokens_seconds"]["speedup_vs_transformers"] > 0


def test_batch_ratios_are_medians_of_ratios_within_each_cycle():
    # two cycles on slow memory (batch 1 takes 2 s), two on fast (1 s); batch 2 takes 2 s in every cycle
    cycles = [{1: 2.0, 2: 2.0}, {1: 2.0, 2: 2.0}, {1: 1.0, 2: 2.0}, {1: 1.0, 2: 2.0}, {1: 1.0, 2: 2.0}]
    result = speed.scaling_of(cycles, weights_bytes=10**9, compute_limit=1.5)
    two = result["batches"][2]
    assert result["cycles"] == 5
    assert result["batch_1_read_GBps"] == pytest.approx(1.0)  # the median batch-1 step: 1 s for 1 GB
    assert two["vs_batch_1"] == pytest.approx(1.0)  # ratios 2, 2, 1, 1, 1
    assert two["tokens_per_s"] == pytest.approx(1.0)
    assert result["compute_bound_from_batch"] == pytest.approx(1.5)  # 1.5 tokens/s at most, batch 1 gives 1
    assert two["of_linear_until_compute_bound"] == pytest.approx(1.0 / 1.5)
    assert "engine_compute_bound_from_batch" not in result  # no engine limit given
    engine = speed.scaling_of(cycles, weights_bytes=10**9, compute_limit=1.5, engine_limit=1.2)
    assert engine["engine_compute_bound_from_batch"] == pytest.approx(1.2)  # 1.2 tokens/s over batch 1's 1
    assert engine["batches"][2]["of_linear_until_engine_compute_bound"] == pytest.approx(1.0 / 1.2)
    assert engine["batches"][2]["of_linear_until_compute_bound"] == pytest.approx(1.0 / 1.5)
    slow = speed.scaling_of(cycles[:2], weights_bytes=10**9, compute_limit=1.5)
    assert slow["batches"][2]["vs_batch_1"] == pytest.approx(2.0)  # linear within the slow cycles
    assert slow["batches"][2]["of_linear_until_compute_bound"] == pytest.approx(1.0)  # knee at batch 3
    # where the median of ratios and the ratio of medians part: ratios 2, 4, 0.75 -> 2; medians 3 and 2 -> 3
    mixed = [{1: 1.0, 2: 1.0}, {1: 4.0, 2: 2.0}, {1: 3.0, 2: 8.0}]
    assert speed.scaling_of(mixed, 10**9, 100.0)["batches"][2]["vs_batch_1"] == pytest.approx(2.0)


def test_precision_script_compares_every_format_with_float32(checkpoint, tmp_path):
    ck = checkpoint(LONG)
    out = tmp_path / "precision.json"
    before = kvcache.get_num_threads()
    try:
        results = precision.main(["--model", str(ck.path), "--positions", "64", "--greedy-tokens", "8",
                                  "--threads", "1", "--out", str(out)])
    finally:
        kvcache.set_num_threads(before)
    assert json.loads(out.read_text()) == json.loads(json.dumps(results))
    assert results["threads"] == 1
    f32, bf16, f16, i8 = (results["dtypes"][d] for d in ("float32", "bfloat16", "float16", "int8"))
    assert f32["max_abs_logit_diff"] == 0.0 and f32["top1_agreement"] == 1.0 and f32["greedy_tokens_agreeing"] == 8
    assert f32["weights_bytes"] > bf16["weights_bytes"] == f16["weights_bytes"] > i8["weights_bytes"]
    for r in (bf16, f16, i8):
        assert 0 < r["max_abs_logit_diff"] < 0.5
        assert 0.0 <= r["top1_agreement"] <= 1.0 and r["decode_speedup_vs_float32"] > 0
    caches = results["cache_dtypes"]
    assert set(caches) == {"float32", "float16", "bfloat16"}
    assert caches["float32"]["max_abs_logit_diff"] == 0.0 and caches["float32"]["greedy_tokens_agreeing"] == 8
    assert caches["float32"]["cache_bytes_per_position"] == 2 * caches["float16"]["cache_bytes_per_position"]
    for r in (caches["float16"], caches["bfloat16"]):
        assert 0 < r["max_abs_logit_diff"] < 0.5 and 0.0 <= r["top1_agreement"] <= 1.0
        assert r["deep_decode_batch1_speedup_vs_float32"] > 0 and r["deep_decode_batch4_speedup_vs_float32"] > 0


@pytest.mark.skipif(shutil.which("g++") is None or os.uname().machine != "x86_64", reason="needs g++ on x86-64")
def test_step_products_benchmark_builds_and_reports_each_batch(tmp_path):
    """benchmarks/step_products.cc (README's C++ benchmark of a step's 49 products) builds with the commands in its
    header and prints one row per batch size, on the best kernel build or the one --isa= names; a bad batch size or
    build name is refused."""
    exe = tmp_path / "step_products"
    kernels = ("isa", "panel_gemm", "panel_gemm_avx2", "gemv", "gemv_avx2", "probes")
    sources = [os.path.join(ROOT, "benchmarks", "step_products.cc"), os.path.join(ROOT, "csrc", "huge_pages.cc")] + [
        os.path.join(ROOT, "csrc", "kernels", f + ".cc") for f in kernels]
    flags = ["-O3", "-std=c++17", "-mavx2", "-mfma", "-mf16c", "-I" + os.path.join(ROOT, "csrc"),
             "-DKVCACHE_AVX2_KERNELS", "-DKVCACHE_AVX512_KERNELS"]
    avx512 = os.path.join(ROOT, "csrc", "kernels", "panel_gemm_avx512.cc")
    # the header's two commands, compiled file by file in parallel (the panel files take ~16 s each)
    objects = [str(tmp_path / f"{i}.o") for i in range(len(sources) + 1)]
    commands = [["g++", *flags, "-fopenmp", "-c", src, "-o", obj] for src, obj in zip(sources, objects)]
    commands.append(["g++", *flags, "-fopenmp", "-mavx512f", "-mavx512vl", "-c", avx512, "-o", objects[-1]])
    compiles = [subprocess.Popen(command) for command in commands]
    assert [c.wait() for c in compiles] == [0] * len(compiles)
    subprocess.run(["g++", "-fopenmp", "-o", str(exe), *objects], check=True)
    env = dict(os.environ, OMP_NUM_THREADS="2")
    for isa_args, build in (([], available_isas()[-1]),
                            (["--isa=avx2"], "avx2" if "avx2" in available_isas() else "portable")):
        run = subprocess.run([str(exe), *isa_args, "1", "3"], env=env, capture_output=True, text=True, timeout=300,
                             check=True)
        assert f"2 threads, {build} kernels" in run.stdout
        rows = re.findall(r"batch +(\d+): +([\d.]+) ms +([\d.]+) GB/s +([\d.]+) GFLOP/s +([\d.]+)x", run.stdout)
        assert [int(r[0]) for r in rows] == [1, 3], run.stdout
        assert all(float(v) > 0 for r in rows for v in r[1:4])
        assert float(rows[0][4]) == 1.0
    bad = subprocess.run([str(exe), "17"], env=env, capture_output=True, text=True, timeout=60)
    assert bad.returncode == 2 and "got 17" in bad.stderr
    bad = subprocess.run([str(exe), "--isa=sse", "1"], env=env, capture_output=True, text=True, timeout=60)
    assert bad.returncode == 2 and "got sse" in bad.stderr
