"""The benchmark module: the memory formula, the measured cache against it, the shape of a benchmark record, and
results that survive JSON and re-plot without re-running. Tiny models only; no assertion on speed, ever."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import matplotlib
import pytest

matplotlib.use("Agg")

from kvcache import GPT2, GPT2Config  # noqa: E402
from kvbench import bench, machine, plots  # noqa: E402  (benchmarks/, on sys.path by conftest)
from conftest import BENCHMARKS  # noqa: E402

KiB, MiB, GiB = 2 ** 10, 2 ** 20, 2 ** 30
TINY = GPT2Config(n_layer=2, n_head=4, n_embd=64, n_ctx=128)  # real vocabulary: the end-of-text id exists


@pytest.fixture(scope="module")
def model() -> GPT2:
    return GPT2.from_config(TINY, seed=0)


# ---- the formula ---------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("config", ["gpt2", GPT2Config()], ids=["name", "GPT2Config"])
def test_gpt2_keeps_36_kib_per_token_in_16_bit_and_72_in_32(config):
    assert bench.kv_cache_bytes(config, 1, dtype="float16") == 36 * KiB == 2 * 12 * 768 * 2
    assert bench.kv_cache_bytes(config, 1, dtype="float32") == 72 * KiB
    assert bench.kv_cache_bytes(config, 100, batch_size=3, dtype="float16") == 3 * 100 * 36 * KiB


def test_llama_7b_at_2048_tokens_is_2_gib_in_32_bit_and_1_gib_in_16():
    assert bench.kv_cache_bytes("llama-7b", 2048, dtype="float32") == 2 * GiB
    assert bench.kv_cache_bytes("llama-7b", 2048, dtype="float16") == 1 * GiB


@pytest.mark.parametrize("name", list(bench.SHAPES))
def test_formula_is_the_product_for_every_known_shape(name):
    s = bench.SHAPES[name]
    assert bench.kv_cache_bytes(name, 7, 3, "bfloat16") == 2 * s.n_layer * 3 * s.n_head * 7 * s.head_dim * 2


def test_profile_splits_the_total_evenly_over_layers():
    p = bench.profile_kv_cache_memory("gpt2-medium", 512, batch_size=2, dtype="float16")
    assert p.model == "gpt2-medium" and len(p.per_layer_bytes) == 24
    assert sum(p.per_layer_bytes) == p.total_bytes == bench.kv_cache_bytes("gpt2-medium", 512, 2, "float16")
    assert p.bytes_per_token == bench.kv_cache_bytes("gpt2-medium", 1, 1, "float16")
    assert p.measured_nbytes is None and p.measured_rss_bytes is None


def test_unknown_names_and_dtypes_are_refused():
    with pytest.raises(ValueError, match="unknown model"):
        bench.kv_cache_bytes("gpt5", 1)
    with pytest.raises(ValueError, match="unknown dtype"):
        bench.kv_cache_bytes("gpt2", 1, dtype="float8")


def test_a_config_is_named_after_the_known_shape_it_matches():
    assert bench.as_shape(GPT2Config(n_vocab=256, n_ctx=2048)).name == "gpt2"
    assert bench.as_shape(TINY).name == "2L-4H-16D"


def test_corrected_claims_state_the_right_sizes():
    rows = {r["claim"]: r for r in bench.memory_claims()}
    assert rows["GPT-2 124M, per token"]["formula, 16-bit"] == "36 KiB"
    assert rows["LLaMA-7B, 2048 tokens, 1 sample"]["formula, 32-bit"] == "2 GiB"


# ---- measured memory -----------------------------------------------------------------------------------------------

@pytest.mark.parametrize("dtype", ["float32", "float16", "bfloat16"])
@pytest.mark.parametrize("batch_size, seq_len", [(1, 1), (3, 100), (8, 128)])
def test_measured_cache_nbytes_equals_the_formula(model, batch_size, seq_len, dtype):
    p = bench.profile_kv_cache_memory(TINY, seq_len, batch_size, dtype, model=model)
    assert p.measured_nbytes == p.total_bytes == bench.kv_cache_bytes(TINY, seq_len, batch_size, dtype)


@pytest.mark.parametrize("dtype, mib", [("float32", 8), ("float16", 4)])
def test_rss_grows_by_the_cache_size(model, dtype, mib):
    """The cache is zero-filled when allocated: the process must grow by its size (8 or 4 MiB here), to a page."""
    p = bench.profile_kv_cache_memory(TINY, 128, 64, dtype, model=model)
    if p.measured_rss_bytes is None:
        pytest.skip("no /proc/self/status on this system")
    assert p.total_bytes == mib * MiB
    assert abs(p.measured_rss_bytes - p.total_bytes) <= 0.05 * p.total_bytes


def test_measuring_a_shape_the_model_does_not_have_is_refused(model):
    with pytest.raises(ValueError, match="own shape"):
        bench.profile_kv_cache_memory("gpt2", 16, model=model)
    with pytest.raises(ValueError, match="own shape"):
        bench.profile_kv_cache_memory(TINY, 16, dtype="int8", model=model)


def test_memory_growth_measures_every_shape_and_length():
    profiles = bench.measure_memory_growth(["distilgpt2"], [16, 32], progress=False)
    assert [(p.model, p.seq_len) for p in profiles] == [("distilgpt2", 16), ("distilgpt2", 32)]
    assert all(p.measured_nbytes == p.total_bytes for p in profiles)


# ---- benchmark records ---------------------------------------------------------------------------------------------

def test_generation_runs_to_full_length_even_when_eos_would_stop_it(model):
    prompt = bench.make_prompt(model, 5)
    first = model.generate_ids(prompt, max_new_tokens=1, eos_token_id=None)[-1]
    assert len(model.generate_ids(prompt, max_new_tokens=6, eos_token_id=first)) == 6  # 5 + 1: EOS stops at once
    model.eos_token_id, saved = first, model.eos_token_id
    try:
        for use_cache in (True, False):
            record = bench.benchmark_generation(model, prompt, 6, use_cache=use_cache, repeats=2)
            assert record.new_tokens == 6 and len(record.step_s) == 5
    finally:
        model.eos_token_id = saved


@pytest.mark.parametrize("use_cache", [True, False], ids=["cache", "no-cache"])
@pytest.mark.parametrize("batch_size", [1, 3])
def test_record_is_sane(model, use_cache, batch_size):
    r = bench.benchmark_generation(model, 7, 5, use_cache=use_cache, batch_size=batch_size, repeats=2)
    assert (r.engine, r.mode, r.model) == ("kvcache", "cache" if use_cache else "no cache", "2L-4H-16D")
    assert (r.prompt_tokens, r.new_tokens, r.batch_size, r.repeats) == (7, 5, batch_size, 2)
    assert r.total_s > 0 and r.prefill_s > 0 and all(s > 0 for s in r.step_s)
    assert r.total_s >= r.prefill_s + sum(r.step_s) * 0.5  # medians of parts need not add up exactly
    assert r.tokens_per_s == pytest.approx(batch_size * 5 / r.total_s)
    assert r.kv_cache_bytes == r.kv_formula_bytes == bench.kv_cache_bytes(TINY, 7 + 5, batch_size)
    assert r.weights_nbytes == model.weights_nbytes
    assert r.bandwidth_bytes_per_s > 0 and r.decode_tokens_per_s > 0


def test_prompts_are_text_ids_or_a_length(model):
    assert len(bench.prompt_ids(model, 12)) == 12
    assert bench.prompt_ids(model, "Hello world") == model.encode("Hello world")
    assert bench.prompt_ids(model, (1, 2, 3)) == [1, 2, 3]
    assert bench.benchmark_generation(model, "Hello world", 2, repeats=1).prompt_tokens == 2


def test_time_budget_stops_repeating_but_keeps_one_run(model):
    assert bench.benchmark_generation(model, 4, 3, repeats=5, time_budget_s=0.0).repeats == 1


def test_compare_cache_performance_gives_one_row_per_length(model):
    rows = bench.compare_cache_performance(model, 4, lengths=(2, 5), repeats=1, progress=False)
    assert [(r.prompt_tokens, r.new_tokens) for r in rows] == [(4, 2), (4, 5)]
    for r in rows:
        assert (r.cached.mode, r.uncached.mode) == ("cache", "no cache")
        assert r.speedup == pytest.approx(r.uncached.total_s / r.cached.total_s)
    table = bench.claims_table(rows)
    assert [line["new tokens"] for line in table] == [2, 5, 20, 50, 100, 500]
    assert table[-1] == {"new tokens": 500, "claimed": "30-50x", "ours, prompt 4": "not run"}


def test_batch_records_grow_the_cache_linearly(model):
    records = bench.benchmark_batch(model, 4, 3, batch_sizes=(1, 2, 4), repeats=1, progress=False)
    assert [r.kv_cache_bytes for r in records] == [b * records[0].kv_cache_bytes for b in (1, 2, 4)]


def test_peers_run_on_the_same_weights(tiny):
    records, unavailable = bench.compare_peers(tiny.model, 5, 4, checkpoint_dir=str(tiny.path), repeats=1,
                                               progress=False)
    assert unavailable == []
    assert [(r.engine, r.mode) for r in records] == [("kvcache", "cache"), ("kvcache", "no cache"),
                                                     ("transformers", "cache"), ("transformers", "static cache"),
                                                     ("transformers", "no cache")]
    assert all(r.new_tokens == 4 and r.weights_nbytes == tiny.model.weights_nbytes for r in records)
    assert records[-1].kv_cache_bytes == 0  # no cache kept
    rows = bench.peer_table(records, read_bandwidth=1e10)
    assert rows[0]["time vs kvcache cache"] == "1.00x"


# ---- results on disk, re-plotted ------------------------------------------------------------------------------------

def test_results_round_trip_through_json_and_replot_without_rerunning(model, tmp_path, monkeypatch):
    ctx = bench.RunContext(model, bench.Sizes.small(), {"cpu": "test", "read_bandwidth_bytes_per_s": 1e10},
                           "tiny", progress=False)
    rows = bench.compare_cache_performance(model, 4, lengths=(2, 3), repeats=1, progress=False)
    suites = [ctx.suite("speedup", rows),
              ctx.suite("batch", bench.benchmark_batch(model, 4, 3, (1, 2), repeats=1, progress=False)),
              ctx.suite("peers", [rows[0].cached, rows[0].uncached], unavailable=[]),
              ctx.suite("memory", [bench.profile_kv_cache_memory(TINY, 8, model=model)])]
    for suite in suites:
        bench.save_suite(suite, str(tmp_path))
        assert bench.load_suite(str(tmp_path / f"{suite.name}.json")) == suite
        assert (tmp_path / f"{suite.name}.csv").read_text().count("\n") == len(suite.records) + 1
    json.loads((tmp_path / "speedup.json").read_text())  # plain JSON

    for name in ("benchmark_generation", "compare_cache_performance", "measure_memory_growth"):
        monkeypatch.setattr(bench, name, lambda *a, **k: pytest.fail("re-plotting must not re-run"))
    paths = plots.plot_all(str(tmp_path), str(tmp_path / "figures"))
    assert set(paths) == {"generation_time", "speedup", "step_latency", "kv_memory", "kv_layers", "batch", "peers"}
    assert all((tmp_path / "figures" / f"{name}.png").stat().st_size > 1000 for name in paths)


def test_command_line_small_run_writes_data_and_figures(tmp_path):
    assert bench.main(["all", "--small", "--no-progress", "--out", str(tmp_path)]) == 0
    for name in ("speedup", "batch", "peers", "memory"):
        assert bench.load_suite(str(tmp_path / f"{name}.json")).records
    assert len(list((tmp_path / "figures").glob("*.png"))) == 7
    run = json.loads((tmp_path / "run_all.json").read_text())
    assert run["command"].startswith("python benchmarks/bench.py all") and run["wall_s"] > 0
    assert bench.main(["plot", "--out", str(tmp_path)]) == 0


def test_machine_description_and_probes():
    info = machine.describe_machine()
    assert info["threads"] >= 1 and info["versions"]["numpy"]
    assert machine.measure_read_bandwidth(8 * MiB, threads=1, repeats=1) > 0
    assert machine.measure_matmul_flops(64, repeats=1) > 0


# ---- the package and the benchmarks, apart ------------------------------------------------------------------------

def test_importing_kvcache_pulls_in_no_benchmark_library(tmp_path):
    """The benchmark library (kvbench) and its dependencies are not the product: a fresh `import kvcache` loads none
    of them, and the product extension carries no kernel test bindings (those are kvcache_kernels)."""
    code = ("import sys, kvcache, kvcache._core; "
            "print(sorted(set(sys.modules) & {'matplotlib', 'tqdm', 'psutil', 'kvbench', 'kvcache_kernels'})); "
            "print(hasattr(kvcache._core, 'kernels'))")
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    out = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True,
                         check=True, timeout=120).stdout.split("\n")
    assert out[:2] == ["[]", "False"]


@pytest.mark.parametrize("command, cwd", [(["benchmarks/bench.py"], ".."), (["-m", "kvbench.bench"], ".")],
                         ids=["script", "module"])
def test_documented_bench_command_lines_start(command, cwd):
    """`python benchmarks/bench.py` from the repository root (what README and docs/benchmarks.md say), and
    `python -m kvbench.bench` from benchmarks/."""
    run = subprocess.run([sys.executable, *command, "-h"], cwd=os.path.join(BENCHMARKS, cwd), capture_output=True,
                         text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    assert "usage: python benchmarks/bench.py" in run.stdout and "plot" in run.stdout
