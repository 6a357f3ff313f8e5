"""Checkpoints: from_config / save_pretrained round trips through transformers, state_dict, config.json fields,
the KV cache's size, random initialisation, and finding a model in the Hugging Face cache."""

from __future__ import annotations

import copy
import functools
import json
import os
import pickle
import shutil
from pathlib import Path

import numpy as np
import pytest
import transformers

import kvcache
from kvcache import GPT2, GPT2Config
from conftest import (FP16, LOGITS_ATOL, STRIPPED_UNTIED, TINY, UNTIED, copy_checkpoint, hf_logits, max_abs_diff,
                      random_ids, read_safetensors_raw)

# from_config draws normal(0, 0.02) weights (GPT-2's init). The smallest tensor checked has 8192 values, whose
# sample std has a relative spread of 1/sqrt(2n) ~ 0.8%: 5% is over 6 sigma, yet catches a wrong std (0.01, 0.03).
INIT_STD = 0.02
INIT_STD_RTOL = 0.05


def hf_load(path) -> transformers.GPT2LMHeadModel:
    return transformers.GPT2LMHeadModel.from_pretrained(path).float().eval()


# ---- round trips -------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("config", [
    dict(n_vocab=97, n_ctx=64, n_embd=32, n_head=2, n_layer=2),
    dict(n_vocab=500, n_ctx=128, n_embd=96, n_head=6, n_layer=3, eps=1e-4),
    dict(n_vocab=50257, n_ctx=32, n_embd=16, n_head=1, n_layer=1),  # GPT-2 vocabulary: tokenizer files saved too
], ids=["tiny", "six-heads-eps", "gpt2-vocab"])
def test_from_config_save_pretrained_loads_in_transformers(tmp_path, config):
    model = GPT2.from_config(GPT2Config(**config), seed=3)
    model.save_pretrained(tmp_path)
    hf = hf_load(tmp_path)
    assert hf.config.vocab_size == config["n_vocab"] and hf.config.n_positions == config["n_ctx"]
    assert hf.config.n_embd == config["n_embd"] and hf.config.n_head == config["n_head"]
    assert hf.config.n_layer == config["n_layer"]
    assert hf.config.layer_norm_epsilon == pytest.approx(config.get("eps", 1e-5))
    ids = random_ids(config["n_vocab"], (2, config["n_ctx"]), seed=1)
    ours = model.forward(ids)
    assert max_abs_diff(ours, hf_logits(hf, ids)) < LOGITS_ATOL

    again = GPT2.from_pretrained(tmp_path)
    assert again.config == model.config
    np.testing.assert_array_equal(again.forward(ids), ours)
    for name, value in model.state_dict().items():
        np.testing.assert_array_equal(again.state_dict()[name], value, err_msg=name)
    has_tokenizer = config["n_vocab"] == 50257
    assert (tmp_path / "vocab.json").is_file() == has_tokenizer
    if has_tokenizer:
        assert again.tokenizer is not None and again.tokenizer.encode("Hello world") == [15496, 995]


@pytest.mark.parametrize("spec", [UNTIED, FP16], ids=str)
def test_loaded_checkpoint_saves_back_to_the_same_model(checkpoint, tmp_path, spec):
    """Untied heads stay untied; 16-bit weights are written as their exact float32 values."""
    ck = checkpoint(spec)
    ck.model.save_pretrained(tmp_path)
    header, _ = read_safetensors_raw(tmp_path / "model.safetensors")
    assert {v["dtype"] for k, v in header.items() if k != "__metadata__"} == {"F32"}
    assert ("lm_head.weight" in header) == (not spec.tie)
    assert json.loads((tmp_path / "config.json").read_text())["tie_word_embeddings"] == spec.tie
    hf = hf_load(tmp_path)
    ids = random_ids(spec.vocab_size, (2, 20), seed=2)
    assert max_abs_diff(hf_logits(hf, ids), hf_logits(ck.hf, ids)) == 0.0
    assert max_abs_diff(ck.model.forward(ids), hf_logits(hf, ids)) < LOGITS_ATOL


def test_layer_norm_epsilon_is_read_from_config(tiny, tmp_path):
    """A non-default layer_norm_epsilon in config.json changes the logits exactly as in transformers."""
    path = copy_checkpoint(tiny.path, tmp_path / "eps")
    cfg = json.loads((path / "config.json").read_text())
    cfg["layer_norm_epsilon"] = 0.5
    (path / "config.json").write_text(json.dumps(cfg))
    model, hf = GPT2.from_pretrained(path), hf_load(path)
    assert model.config.eps == pytest.approx(0.5)
    ids = random_ids(TINY.vocab_size, (1, 12), seed=4)
    assert max_abs_diff(model.forward(ids), hf_logits(hf, ids)) < LOGITS_ATOL
    assert max_abs_diff(model.forward(ids), tiny.model.forward(ids)) > 1e-2  # eps really mattered


def test_legacy_n_ctx_field(tiny, tmp_path):
    """Old GPT-2 configs name the context length n_ctx."""
    path = copy_checkpoint(tiny.path, tmp_path / "legacy")
    cfg = json.loads((path / "config.json").read_text())
    cfg["n_ctx"] = cfg.pop("n_positions")
    (path / "config.json").write_text(json.dumps(cfg))
    assert GPT2.from_pretrained(path).config.n_ctx == TINY.n_positions


@pytest.mark.parametrize("spec", [TINY, STRIPPED_UNTIED, FP16], ids=str)
def test_save_pretrained_into_its_own_directory(checkpoint, tmp_path, spec):
    """Saving over the files a model was loaded from (float32 tensors are used in place from a memory map) leaves
    the model in memory and the rewritten checkpoint equal to the original."""
    path = copy_checkpoint(checkpoint(spec).path, tmp_path / "own")
    model = GPT2.from_pretrained(path)
    ids = random_ids(spec.vocab_size, (2, 16), seed=5)
    before = model.forward(ids)
    model.save_pretrained(path)
    np.testing.assert_array_equal(model.forward(ids), before)
    np.testing.assert_array_equal(GPT2.from_pretrained(path).forward(ids), before)


def test_from_pretrained_expands_the_home_directory(tiny, tmp_path, monkeypatch):
    """'~/...' is taken as a path (not a hub name), so it must be expanded like one."""
    copy_checkpoint(tiny.path, tmp_path / "my-gpt2")
    monkeypatch.setenv("HOME", str(tmp_path))
    model = GPT2.from_pretrained("~/my-gpt2")
    ids = random_ids(TINY.vocab_size, (1, 7))
    np.testing.assert_array_equal(model.forward(ids), tiny.model.forward(ids))


# ---- state_dict --------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("spec", [TINY, UNTIED], ids=str)
def test_state_dict_matches_transformers_names_shapes_values(checkpoint, spec):
    ck = checkpoint(spec)
    ours = ck.model.state_dict()
    theirs = {k.removeprefix("transformer."): v.numpy() for k, v in ck.hf.state_dict().items()
              if not k.endswith((".attn.bias", ".attn.masked_bias"))}  # buffers of old transformers
    if spec.tie:
        theirs.pop("lm_head.weight", None)
    assert set(ours) == set(theirs)
    for name, value in theirs.items():
        assert ours[name].dtype == np.float32
        np.testing.assert_array_equal(ours[name], value, err_msg=name)
    assert ck.model.weights_nbytes == sum(v.size for v in theirs.values()) * 4


def test_state_dict_is_read_only(tiny):
    wte = tiny.model.state_dict()["wte.weight"]
    with pytest.raises(ValueError, match="read-only"):
        wte[0, 0] = 1.0


# ---- the cache ---------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("config, batch, max_len", [
    (dict(n_vocab=50, n_ctx=64, n_embd=32, n_head=2, n_layer=2), 1, None),
    (dict(n_vocab=50, n_ctx=64, n_embd=32, n_head=2, n_layer=2), 3, 17),
    (dict(n_vocab=10, n_ctx=128, n_embd=48, n_head=3, n_layer=5), 2, 128),
    (dict(n_vocab=10, n_ctx=300, n_embd=64, n_head=8, n_layer=1), 4, 1),
])
def test_cache_nbytes_formula(config, batch, max_len):
    model = GPT2.from_config(GPT2Config(**config))
    cache = model.new_cache(batch_size=batch, max_seq_len=max_len)
    length = config["n_ctx"] if max_len is None else max_len
    assert cache.max_seq_len == length
    assert cache.batch_size == batch
    assert cache.n_layer == config["n_layer"]
    assert cache.seq_lens == [0] * batch
    assert cache.nbytes == 2 * config["n_layer"] * batch * length * config["n_embd"] * 4
    assert [cache.get_seq_length(r) for r in range(batch)] == [0] * batch


def test_cache_counts_positions(tiny):
    cache = tiny.model.new_cache(batch_size=2, max_seq_len=20)
    tiny.model.forward(random_ids(TINY.vocab_size, (2, 5)), cache=cache)
    tiny.model.forward(random_ids(TINY.vocab_size, (2, 1)), cache=cache)
    assert cache.seq_lens == [6, 6] and cache.get_seq_length(0) == 6
    cache.crop(100)  # longer than what is held: nothing changes
    assert cache.seq_lens == [6, 6]
    cache.crop(2)
    assert cache.seq_lens == [2, 2]
    with pytest.raises(IndexError):
        cache.get_seq_length(2)


# ---- random initialisation ---------------------------------------------------------------------------------------

def test_from_config_initialisation_statistics():
    config = GPT2Config(n_vocab=1000, n_ctx=128, n_embd=64, n_head=4, n_layer=4)
    state = GPT2.from_config(config, seed=0).state_dict()
    residual_std = INIT_STD / np.sqrt(2 * config.n_layer)  # GPT-2 scales the residual projections
    for name, value in state.items():
        if name.endswith(("ln_1.weight", "ln_2.weight", "ln_f.weight")):
            np.testing.assert_array_equal(value, 1.0, err_msg=name)
        elif name.endswith(".bias"):
            np.testing.assert_array_equal(value, 0.0, err_msg=name)
        else:
            expected = residual_std if name.endswith("c_proj.weight") else INIT_STD
            assert abs(float(value.mean())) < 3 * expected / np.sqrt(value.size) + 1e-6, name
            assert float(value.std()) == pytest.approx(expected, rel=INIT_STD_RTOL), name
    assert "lm_head.weight" not in state  # tied to wte


def test_from_config_seed_is_reproducible():
    config = GPT2Config(n_vocab=100, n_ctx=16, n_embd=16, n_head=2, n_layer=1)
    a, b, c = (GPT2.from_config(config, seed=s).state_dict()["wte.weight"] for s in (1, 1, 2))
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)


def test_config_equality():
    a, b = GPT2Config(n_embd=64, n_head=4), GPT2Config(n_embd=64, n_head=4)
    assert a == b and not (a != b)
    assert a != GPT2Config(n_embd=64, n_head=2)
    assert a != GPT2Config(n_embd=64, n_head=4, eps=1e-6)
    # comparing with another type is simply unequal (Python's NotImplemented protocol), never an error
    assert not (a == None)  # noqa: E711
    assert a != "GPT2Config(n_embd=64)"
    assert a not in [None, 3]


def test_config_is_hashable_and_pickles():
    """Immutable, so it can key a dict and cross to another process (multiprocessing, copy.deepcopy); it could not."""
    a = GPT2Config(n_embd=64, n_head=4, eps=1e-6)
    assert hash(a) == hash(GPT2Config(n_embd=64, n_head=4, eps=1e-6))
    assert {a: "x"}[GPT2Config(n_embd=64, n_head=4, eps=1e-6)] == "x"
    assert len({a, GPT2Config(n_embd=64, n_head=4), GPT2Config(n_embd=64, n_head=4, eps=1e-6)}) == 2
    for copied in (pickle.loads(pickle.dumps(a)), copy.deepcopy(a), copy.copy(a)):
        assert copied == a and copied.eps == a.eps and copied.head_dim == 16


class _ForgedConfigPickle:
    """Pickles as a GPT2Config rebuilt from the given fields, as a tampered or foreign pickle would."""

    def __init__(self, **fields):
        self.fields = fields

    def __reduce__(self):
        return functools.partial(GPT2Config, **self.fields), ()


@pytest.mark.parametrize("fields, error, pattern", [
    (dict(n_embd=64, n_head=3), ValueError, "n_head"),  # a shape the constructor refuses
    (dict(n_embd=64, n_head=4, n_layer=-1), ValueError, "n_layer"),
    (dict(n_embd=64, n_head=4, eps="x"), TypeError, "eps"),
    (dict(n_embd=64, n_head=4, heads=4), TypeError, "heads"),
])
def test_config_unpickling_checks_like_the_constructor(fields, error, pattern):
    """A pickle is data from outside: loading one runs the constructor and its checks (before, the state went to
    __setstate__ on a bare __new__, which is now refused)."""
    with pytest.raises(error, match=pattern):
        pickle.loads(pickle.dumps(_ForgedConfigPickle(**fields)))


def test_config_defaults_are_gpt2_small():
    config = GPT2Config()
    assert (config.n_vocab, config.n_ctx, config.n_embd, config.n_head, config.n_layer) == (50257, 1024, 768, 12, 12)
    assert config.head_dim == 64


# ---- the Hugging Face cache --------------------------------------------------------------------------------------

@pytest.mark.parametrize("name, env", [("gpt2", "HF_HOME"), ("openai-community/gpt2", "HF_HOME"),
                                       ("gpt2", "HF_HUB_CACHE")])
def test_from_pretrained_finds_a_model_in_the_hf_cache(tiny, tmp_path, monkeypatch, name, env):
    """HF cache layout: <hub>/models--<org>--<name>/snapshots/<hash>/..., refs/main naming the current snapshot."""
    hub = tmp_path / "hub" if env == "HF_HOME" else tmp_path / "custom-hub"
    repo = hub / ("models--" + name.replace("/", "--"))
    current, stale = "0123456789abcdef0123456789abcdef01234567", "fedcba9876543210fedcba9876543210fedcba98"
    # as huggingface_hub lays it out: snapshot files are symlinks into blobs/
    snapshot = repo / "snapshots" / current
    snapshot.mkdir(parents=True)
    (repo / "blobs").mkdir()
    for i, file in enumerate(sorted(tiny.path.iterdir())):
        shutil.copyfile(file, repo / "blobs" / f"blob{i}")
        (snapshot / file.name).symlink_to(Path("..", "..", "blobs", f"blob{i}"))
    (repo / "snapshots" / stale).mkdir(parents=True)  # an incomplete older snapshot must not be picked
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(current)
    monkeypatch.delenv("HF_HUB_CACHE", raising=False)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv(env, str(tmp_path if env == "HF_HOME" else hub))
    monkeypatch.chdir(tmp_path)  # so a relative "gpt2" path does not exist
    model = GPT2.from_pretrained(name)
    assert model.config == tiny.model.config
    ids = random_ids(TINY.vocab_size, (1, 9))
    np.testing.assert_array_equal(model.forward(ids), tiny.model.forward(ids))


def test_version_and_exports():
    assert kvcache.__version__
    for name in ("GPT2", "GPT2Config", "KVCache", "sample", "set_num_threads", "get_num_threads"):
        assert hasattr(kvcache, name)


def _rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


@pytest.mark.skipif(not os.path.exists("/proc/self/statm"), reason="reads the RSS from Linux's /proc")
def test_float32_load_keeps_one_copy_of_the_weights_in_memory(checkpoint):
    """The kernels read owned, output-major copies of the matrices (huge pages); the memory-mapped file pages
    they were copied from are released, so loading costs the weights' bytes once, not twice."""
    from conftest import GPT2_124M
    ck = checkpoint(GPT2_124M)
    before = _rss_bytes()
    model = GPT2.from_pretrained(ck.path)
    grown = _rss_bytes() - before
    assert model.weights_nbytes > 400e6
    assert grown < 1.25 * model.weights_nbytes, (grown, model.weights_nbytes)
    # and the released pages are still readable: the file is read again where a view touches them
    np.testing.assert_array_equal(model.state_dict()["wte.weight"], ck.hf.transformer.wte.weight.detach().numpy())


def test_saves_to_one_directory_from_two_threads_leave_one_whole_checkpoint(tmp_path):
    """Two threads saving into one directory shared the temporary file name (the process id): they truncated and
    removed each other's files, leaving an empty config.json or weights file. Now saves to one directory take
    turns, and the directory always holds one of the two models whole."""
    import threading

    models = [GPT2.from_config(GPT2Config(n_vocab=300, n_ctx=64, n_embd=128, n_head=4, n_layer=n), seed=n)
              for n in (2, 3)]  # different layer counts: one's weights beside the other's config would not load
    tokens = np.array([[1, 2, 3, 4]])
    expected = [m.forward(tokens) for m in models]
    directory = tmp_path / "shared"
    models[0].save_pretrained(directory)
    for trial in range(10):
        errors = []

        def save(model):
            try:
                model.save_pretrained(directory)
            except Exception as e:  # noqa: BLE001 - any failure fails the test below
                errors.append(repr(e))

        threads = [threading.Thread(target=save, args=(m,)) for m in models]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert errors == [], f"trial {trial}"
        loaded = GPT2.from_pretrained(directory).forward(tokens)
        assert any(np.array_equal(loaded, e) for e in expected), f"trial {trial}: neither model"
        assert sorted(os.listdir(directory)) == ["config.json", "model.safetensors"], f"trial {trial}"
