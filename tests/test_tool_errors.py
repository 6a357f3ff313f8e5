"""Bad input to the tools around the model (saving, tokenizer files, the demo and benchmark command lines, the
benchmark library): a clear exception before any work, and nothing already on disk damaged."""

from __future__ import annotations

import json
import os
import re
import shutil

import numpy as np
import pytest

import kvcache
from kvcache import GPT2, GPT2Config, demo
from conftest import TOKENIZER_DIR
# benchmarks/ (on sys.path by conftest): the scripts and their library
import make_report
import speed
from kvbench import bench, machine
from kvbench.engine_benchmarks import benchmark_generation
from kvbench.kv_memory import kv_cache_bytes

SMALL = dict(n_layer=1, n_head=2, n_embd=16)


def test_a_failed_save_leaves_the_checkpoint_there_loadable(tmp_path, monkeypatch):
    """config.json was written before the weights: a failing weights write left a new config beside old weights."""
    GPT2.from_config(GPT2Config(n_vocab=50, n_ctx=32, **SMALL), seed=1).save_pretrained(tmp_path)
    before = sorted(os.listdir(tmp_path)), (tmp_path / "config.json").read_bytes()
    import safetensors.numpy

    def failing_save(*args, **kwargs):
        raise Exception("I/O error: Permission denied (os error 13)")  # as safetensors' SafetensorError reads
    monkeypatch.setattr(safetensors.numpy, "save_file", failing_save)
    with pytest.raises(OSError, match=r"could not write .*model\.safetensors: I/O error"):
        GPT2.from_config(GPT2Config(n_vocab=60, n_ctx=32, **SMALL), seed=2).save_pretrained(tmp_path)
    assert (sorted(os.listdir(tmp_path)), (tmp_path / "config.json").read_bytes()) == before  # no temporary left
    assert GPT2.from_pretrained(tmp_path).config.n_vocab == 50


def test_saving_a_model_without_a_tokenizer_over_a_checkpoint_removes_the_old_tokenizer(tmp_path):
    """The old vocab.json and merges.txt stayed: the saved checkpoint then failed to load (a 50257-token tokenizer
    for a 50304-token model)."""
    GPT2.from_config(GPT2Config(n_vocab=50257, n_ctx=32, **SMALL)).save_pretrained(tmp_path)
    assert (tmp_path / "vocab.json").exists()
    GPT2.from_config(GPT2Config(n_vocab=50304, n_ctx=32, **SMALL)).save_pretrained(tmp_path)
    assert sorted(os.listdir(tmp_path)) == ["config.json", "model.safetensors"]
    assert GPT2.from_pretrained(tmp_path).tokenizer is None


def test_saving_over_a_checkpoint_leaves_no_other_tokenizer_beside_the_model_s(tmp_path):
    """A tokenizer.json (and added_tokens.json ...) written by transformers into the directory stayed after a
    save, and was loaded as the model's tokenizer, with a token the model's does not have."""
    from transformers import GPT2TokenizerFast
    config = GPT2Config(n_vocab=50257, n_ctx=32, **SMALL)
    GPT2.from_config(config, seed=0).save_pretrained(tmp_path)
    hf = GPT2TokenizerFast.from_pretrained(tmp_path)
    hf.add_tokens(["<|pad|>"])
    hf.save_pretrained(tmp_path)
    assert (tmp_path / "tokenizer.json").exists() and (tmp_path / "tokenizer_config.json").exists()
    (tmp_path / "added_tokens.json").write_text('{"<|pad|>": 50257}')  # as older transformers write it
    model = GPT2.from_config(config, seed=1)
    model.save_pretrained(tmp_path)
    assert sorted(os.listdir(tmp_path)) == ["config.json", "merges.txt", "model.safetensors", "vocab.json"]
    loaded = GPT2.from_pretrained(tmp_path)
    assert loaded.encode("a<|pad|>") == model.encode("a<|pad|>") and loaded.tokenizer.vocab_size == 50257
    assert GPT2TokenizerFast.from_pretrained(tmp_path)("a<|pad|>")["input_ids"] == model.encode("a<|pad|>")


def test_saving_back_into_the_checkpoint_directory_keeps_its_tokenizer(tmp_path):
    from transformers import GPT2TokenizerFast
    GPT2.from_config(GPT2Config(n_vocab=50257, n_ctx=32, **SMALL)).save_pretrained(tmp_path)
    GPT2TokenizerFast.from_pretrained(tmp_path).save_pretrained(tmp_path)  # tokenizer.json + side files
    files = sorted(os.listdir(tmp_path))
    model = GPT2.from_pretrained(tmp_path)
    model.save_pretrained(tmp_path)
    assert sorted(os.listdir(tmp_path)) == files
    assert GPT2.from_pretrained(tmp_path).encode("Hello world") == model.encode("Hello world")


def test_save_pretrained_rejects_bytes_paths(tmp_path):
    with pytest.raises(TypeError, match=r"directory must be a str or os\.PathLike of str, got bytes"):
        GPT2.from_config(GPT2Config(n_vocab=50, n_ctx=32, **SMALL)).save_pretrained(os.fsencode(tmp_path / "b"))
    assert not (tmp_path / "b").exists()


def test_a_padded_vocabulary_gets_no_gpt2_tokenizer(tmp_path):
    """GPT-2's 50257-token tokenizer on a 50304-token model let generate() fail at the end, on an id it lacks."""
    model = GPT2.from_config(GPT2Config(n_vocab=50304, n_ctx=32, **SMALL))
    assert model.tokenizer is None
    assert GPT2.from_config(GPT2Config(n_vocab=50257, n_ctx=32, **SMALL)).tokenizer is not None
    model.save_pretrained(tmp_path)
    for name in ("vocab.json", "merges.txt"):
        shutil.copy(TOKENIZER_DIR / name, tmp_path / name)
    with pytest.raises(ValueError, match=r"has 50257 tokens, fewer than the model's vocab_size=50304"):
        GPT2.from_pretrained(tmp_path)


@pytest.mark.parametrize("name, content, pattern", [
    ("tokenizer.json", "{", r"tokenizer\.json: not a valid tokenizer\.json"),
    ("tokenizer.json", "[1, 2]", r"tokenizer\.json: not a valid tokenizer\.json"),
    ("vocab.json", "{}x", r"vocab\.json \+ .*merges\.txt: not a valid GPT-2 vocabulary and merges"),
    ("vocab.json", "[]", r"vocab\.json \+ .*merges\.txt: not a valid GPT-2 vocabulary and merges"),
], ids=["json-cut", "json-list", "vocab-garbage", "vocab-list"])
def test_corrupt_tokenizer_files_are_named(tmp_path, name, content, pattern):
    GPT2.from_config(GPT2Config(n_vocab=50257, n_ctx=32, **SMALL)).save_pretrained(tmp_path)
    (tmp_path / name).write_text(content)
    with pytest.raises(ValueError, match=pattern):
        GPT2.from_pretrained(tmp_path)


def test_text_with_a_lone_surrogate_is_named():
    model = GPT2.from_config(GPT2Config(n_vocab=50257, n_ctx=32, **SMALL))
    with pytest.raises(ValueError, match=r"not valid Unicode: '\\ud800' at index 2"):
        model.generate("ab\ud800", max_new_tokens=1)
    with pytest.raises(TypeError, match=r"one str"):
        model.tokenizer.encode_batch("abc")


def test_demo_warm_up_fits_a_short_context(tmp_path, capsys):
    """The warm-up asked for 4 new tokens whatever --max-new-tokens said, beyond a 16-token context."""
    GPT2.from_config(GPT2Config(n_vocab=50257, n_ctx=16, **SMALL)).save_pretrained(tmp_path)
    prompt = "a b c d e f g h i j k l m"  # 13 tokens: 13 + 2 fits in 16, 13 + 4 does not
    demo.main(["--model", str(tmp_path), "--max-new-tokens", "2", "--prompt", prompt])
    assert "with KV cache" in capsys.readouterr().out


def _precision_main(argv):
    import precision
    return precision.main(argv)


@pytest.mark.parametrize("main, argv", [(bench.main, ["plot", "--out", "unused"]), (speed.main, []), (demo.main, []),
                                        (_precision_main, [])], ids=["bench", "speed", "demo", "precision"])
@pytest.mark.parametrize("threads, pattern", [("0", "must be >= 1, got 0"), ("-1", "must be >= 1, got -1"),
                                              ("257", "must be <= 256, got 257"), ("2.5", "expected an integer")])
def test_command_lines_reject_a_bad_thread_count(main, argv, threads, pattern, capsys):
    """--threads 0 was taken as "the default" and the run went ahead on every core; then it ended in a traceback."""
    before = kvcache.get_num_threads()
    with pytest.raises(SystemExit) as exit_:
        main(argv + ["--threads", threads])
    assert exit_.value.code == 2 and f"--threads: {pattern}" in capsys.readouterr().err
    assert kvcache.get_num_threads() == before


@pytest.mark.parametrize("main, argv", [(bench.main, ["generate"]), (speed.main, []), (demo.main, []),
                                        (_precision_main, [])], ids=["bench", "speed", "demo", "precision"])
@pytest.mark.parametrize("problem", ["missing", "no-weights", "bad-config"])
def test_command_lines_name_a_bad_model_in_one_line(main, argv, problem, tmp_path, capsys):
    """A missing or malformed --model ended in a traceback; now a usage error (exit 2) naming the problem."""
    directory = tmp_path / "model"
    if problem != "missing":
        GPT2.from_config(GPT2Config(n_vocab=50, n_ctx=32, **SMALL)).save_pretrained(directory)
    if problem == "no-weights":
        (directory / "model.safetensors").unlink()
    if problem == "bad-config":
        (directory / "config.json").write_text('{"n_layer": -1}')
    expected = {"missing": "model directory not found", "no-weights": "model.safetensors",
                "bad-config": "config.json: missing required field"}[problem]
    with pytest.raises(SystemExit) as exit_:
        main(argv + ["--model", str(directory)])
    err = capsys.readouterr().err
    assert exit_.value.code == 2 and expected in err.splitlines()[-1] and "Traceback" not in err


@pytest.mark.parametrize("main, argv, pattern", [
    (bench.main, ["generate", "--prompt-tokens", "30", "--new-tokens", "3"],
     "--prompt-tokens 30 + --new-tokens 3 exceed the model's context of 32 positions"),
    (demo.main, ["--max-new-tokens", "40"], "--max-new-tokens 40 exceed the model's context of 32 positions"),
    (_precision_main, ["--positions", "33"], "--positions 33 exceeds the model's context of 32"),
    (_precision_main, ["--positions", "32", "--greedy-tokens", "17"],
     "--greedy-tokens 17 + the 16-token prompt exceed"),
    # the lengths a tool runs whatever its options: speed.py's step at position 1000, precision.py's cache decode
    # after 900 positions, a bench suite's longest generation (their probes and timings ran first, then a traceback)
    (speed.main, [], "the model's context of 32 positions is too short: this benchmark runs sequences of up to 1017"),
    (_precision_main, ["--positions", "32", "--greedy-tokens", "8"],
     "the model's context of 32 positions is too short: the cache's decode is timed after 900 cached positions"),
    (bench.main, ["speedup", "--small"], "speedup generates sequences of up to 40 positions, beyond the model's "
                                         "context of 32"),
    (bench.main, ["all", "--small"], "all generates sequences of up to 40 positions"),
], ids=["bench", "demo", "precision-positions", "precision-greedy", "speed", "precision-deep", "bench-speedup",
        "bench-all"])
def test_command_lines_refuse_lengths_beyond_the_context_before_any_work(main, argv, pattern, tmp_path, capsys,
                                                                          monkeypatch):
    GPT2.from_config(GPT2Config(n_vocab=50257, n_ctx=32, **SMALL)).save_pretrained(tmp_path / "model")
    if main is bench.main:
        argv = argv + ["--out", str(tmp_path / "out")]
    def probe_too_early(*args, **kwargs):
        pytest.fail("a probe ran before the lengths were checked")

    monkeypatch.setattr(speed, "bandwidth_probe", probe_too_early)
    monkeypatch.setattr(bench, "machine_info", probe_too_early)
    with pytest.raises(SystemExit) as exit_:
        main(argv + ["--model", str(tmp_path / "model")])
    assert exit_.value.code == 2 and pattern in capsys.readouterr().err


def test_make_report_keeps_the_page_when_there_are_no_results(tmp_path):
    page = tmp_path / "keep.md"
    page.write_text("the last report")
    with pytest.raises(SystemExit, match="no results"):
        make_report.main(["--results", str(tmp_path / "none"), "--out", str(page)])
    assert page.read_text() == "the last report"


@pytest.mark.parametrize("call, error, pattern", [
    (lambda: kv_cache_bytes("gpt2", "100"), TypeError, r"seq_len must be an int, got str"),
    (lambda: kv_cache_bytes("gpt2", -1), ValueError, r"seq_len must be >= 0, got -1"),
    (lambda: kv_cache_bytes("gpt2", 10, batch_size=0), ValueError, r"batch_size must be >= 1, got 0"),
    (lambda: machine.measure_read_bandwidth(0), ValueError, r"nbytes must be >= 1048576, got 0"),
    (lambda: machine.measure_read_bandwidth(1 << 20, repeats=0), ValueError, r"repeats must be >= 1, got 0"),
    (lambda: machine.measure_matmul_flops(0), ValueError, r"n must be >= 1, got 0"),
], ids=["str-length", "negative-length", "zero-batch", "zero-bytes", "zero-repeats", "zero-matmul"])
def test_bench_library_rejects_nonsense(call, error, pattern):
    with pytest.raises(error, match=pattern):
        call()


@pytest.mark.parametrize("prompt, error, pattern", [
    (True, TypeError, r"prompt must be text, a length or a list of ids, got bool"),
    (0, ValueError, r"prompt length must be >= 1, got 0"),
    ([1, 2.5], TypeError, r"token ids must be ints, got float"),
    ([1, 10 ** 6], ValueError, r"token id 1000000 is outside the vocabulary"),
], ids=["bool", "zero-length", "float-id", "id-beyond-vocabulary"])
def test_benchmark_generation_checks_its_prompt(prompt, error, pattern):
    model = GPT2.from_config(GPT2Config(n_vocab=50, n_ctx=32, **SMALL))
    with pytest.raises(error, match=pattern):
        benchmark_generation(model, prompt, 2)


@pytest.mark.parametrize("argv, pattern", [
    (["generate", "--batch-size", "0"], r"--batch-size: must be >= 1, got 0"),
    (["generate", "--prompt-tokens", "-5"], r"--prompt-tokens: must be >= 1, got -5"),
    (["generate", "--new-tokens", "x"], r"--new-tokens: expected an integer, got 'x'"),
], ids=["zero-batch", "negative-prompt", "not-a-number"])
def test_bench_command_line_counts_are_usage_errors(argv, pattern, capsys):
    with pytest.raises(SystemExit) as exit_:
        bench.main(argv)
    assert exit_.value.code == 2 and re.search(pattern, capsys.readouterr().err)


def test_bench_plot_without_results_is_a_usage_error(tmp_path, capsys):
    """It did nothing and exited 0."""
    with pytest.raises(SystemExit) as exit_:
        bench.main(["plot", "--out", str(tmp_path / "none")])
    assert exit_.value.code == 2 and "no results to plot in" in capsys.readouterr().err


def test_precision_script_counts_are_usage_errors(capsys):
    """--sequences 0 ended in an IndexError after loading three models."""
    import precision
    with pytest.raises(SystemExit) as exit_:
        precision.main(["--sequences", "0"])
    assert exit_.value.code == 2 and "--sequences: must be >= 1, got 0" in capsys.readouterr().err


def test_saved_files_look_like_any_new_file(tmp_path):
    """model.safetensors came out 0600 (safetensors' temporary file), and eps as 9.999999747378752e-06."""
    GPT2.from_config(GPT2Config(n_vocab=50, n_ctx=32, **SMALL)).save_pretrained(tmp_path)
    probe = tmp_path / "probe"
    probe.write_text("")
    expected = probe.stat().st_mode & 0o777
    assert (tmp_path / "model.safetensors").stat().st_mode & 0o777 == expected
    assert (tmp_path / "config.json").stat().st_mode & 0o777 == expected
    assert json.loads((tmp_path / "config.json").read_text())["layer_norm_epsilon"] == 1e-05
