"""Sessions: a conversation on one cache. Each call computes only the tokens the cache does not hold, and its tokens
equal those of one uncached call over the whole history; rewind, fork, the room check, and save/load (into a new
process too) with every kind of bad file refused."""

from __future__ import annotations

import json
import os
import struct
import subprocess
import sys

import numpy as np
import pytest

from conftest import ODD
from llama_checkpoints import GQA, LlamaFactory

SAMPLING = dict(do_sample=True, temperature=1.2, top_k=30, top_p=0.9)


@pytest.fixture(scope="module")
def llama(tmp_path_factory) -> LlamaFactory:
    return LlamaFactory(tmp_path_factory)


@pytest.fixture(params=["gpt2", "llama"])
def model(request, checkpoint, llama):
    return checkpoint(ODD).model if request.param == "gpt2" else llama(GQA).model


def _ids(model, n, seed):
    return np.random.default_rng(seed).integers(0, model.config.n_vocab, size=n).tolist()


@pytest.mark.parametrize("options", [{}, dict(SAMPLING, seed=3)], ids=["greedy", "sampled"])
def test_each_turn_equals_one_uncached_call_over_the_history(model, options):
    chat = model.session(max_seq_len=90)
    history = []
    for turn, n_new in enumerate([12, 1, 7, 20]):
        new = _ids(model, n_new, turn)
        chat.append(new)
        held_before = chat.cache.get_seq_length()
        out = chat.generate(6, **options)
        history += new
        expected = model.generate_ids(history, 6, use_cache=False, **options)[len(history):]
        assert out == expected
        history += out
        assert chat.tokens == history
        assert chat.stats == {"prefilled": 1, "reused": held_before, "generated": 6}
        assert chat.cache.get_seq_length() == len(history) - 1


def test_append_prefills_all_but_the_last_token(tiny):
    chat = tiny.model.session(max_seq_len=64)
    chat.append([1, 2, 3, 4, 5])
    assert chat.stats == {"prefilled": 4, "reused": 0, "generated": 0} and chat.cache.seq_lens == [4]
    chat.append([6])
    assert chat.stats == {"prefilled": 1, "reused": 4, "generated": 0} and chat.cache.seq_lens == [5]
    chat.append(np.array([7, 8]))
    assert chat.tokens == [1, 2, 3, 4, 5, 6, 7, 8] and len(chat) == 8


def test_text_sessions(text_ckpt):
    chat = text_ckpt.model.session(max_seq_len=200)
    chat.append("The quick brown fox")
    reply = chat.generate(8)
    assert isinstance(reply, str)
    assert text_ckpt.model.generate("The quick brown fox", 8) == "The quick brown fox" + reply


def test_rewind_crops_the_cache_and_continues_correctly(model):
    chat = model.session(max_seq_len=80)
    chat.append(_ids(model, 20, 1))
    chat.generate(10)
    chat.rewind(7)
    assert len(chat) == 23 and chat.cache.get_seq_length() == 23  # every kept token is held
    out = chat.generate(5)
    assert chat.stats == {"prefilled": 1, "reused": 22, "generated": 5}  # the last one fed again
    assert out == model.generate_ids(chat.tokens[:23], 5, use_cache=False)[23:]
    chat.rewind(0)
    with pytest.raises(ValueError, match="n must be <= 28"):
        chat.rewind(29)
    chat.rewind(28)
    assert chat.tokens == [] and chat.cache.get_seq_length() == 0
    with pytest.raises(ValueError, match="the session is empty"):
        chat.generate(3)


def test_fork_diverges_without_touching_the_parent(model):
    chat = model.session(max_seq_len=80)
    chat.append(_ids(model, 15, 2))
    chat.generate(5)
    parent_tokens, parent_cache = chat.tokens, np.asarray(chat.cache).copy()
    fork = chat.fork()
    a = fork.generate(10, **SAMPLING, seed=1)
    b = fork.fork().generate(10, **SAMPLING, seed=2)
    assert chat.tokens == parent_tokens
    np.testing.assert_array_equal(np.asarray(chat.cache), parent_cache)
    assert a == model.generate_ids(parent_tokens, 10, use_cache=False, **SAMPLING, seed=1)[len(parent_tokens):]
    assert fork.cache.get_seq_length() == len(parent_tokens) + 9 and b != a


def test_a_session_refuses_to_grow_past_max_seq_len_before_changing(tiny):
    chat = tiny.model.session(max_seq_len=20)
    chat.append(list(range(1, 15)))
    before = (chat.tokens, chat.cache.seq_lens)
    with pytest.raises(ValueError, match=r"14 tokens plus max_new_tokens=7 = 21, beyond its max_seq_len=20"):
        chat.generate(7)
    with pytest.raises(ValueError, match=r"21 tokens plus max_new_tokens=0 = 21"):
        chat.append(list(range(7)))
    assert (chat.tokens, chat.cache.seq_lens) == before
    assert len(chat.generate(6)) == 6


def test_session_argument_errors(tiny):
    chat = tiny.model.session(max_seq_len=20)
    with pytest.raises(ValueError, match="token id 500 is outside the vocabulary"):
        chat.append([1, 500])
    with pytest.raises(TypeError, match="expected text"):
        chat.append(3.5)
    with pytest.raises(ValueError, match="no tokenizer"):
        chat.append("text for a model without a tokenizer")
    chat.append([1, 2])
    with pytest.raises(TypeError, match="unexpected keyword argument 'num_beams' \(a session generates one sequence"):
        chat.generate(2, num_beams=2)
    with pytest.raises(ValueError, match="has no chat template"):
        chat.say("hello")
    with pytest.raises(ValueError, match="max_seq_len must be <= 160|max_seq_len must be in"):
        tiny.model.session(max_seq_len=1000)
    assert chat.tokens == [1, 2]


# ---- save / load --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", ["float32", "float16", "bfloat16"])
def test_save_load_continues_as_if_uninterrupted(model, tmp_path, dtype):
    chat = model.session(max_seq_len=80, dtype=dtype)
    chat.append(_ids(model, 17, 4))
    chat.generate(6)
    path = tmp_path / "chat.kv"
    chat.save(path)
    loaded = model.load_session(path)
    assert loaded.tokens == chat.tokens and loaded.max_seq_len == 80 and loaded.cache.dtype == dtype
    np.testing.assert_array_equal(np.asarray(loaded.cache)[..., :22, :], np.asarray(chat.cache)[..., :22, :])
    assert loaded.generate(9, **SAMPLING, seed=5) == chat.generate(9, **SAMPLING, seed=5)
    # the file holds the filled positions only
    layer_bytes = 2 * model.new_cache(1, 1).n_kv_head * 22 * model.new_cache(1, 1).head_dim * (4 if dtype == "float32" else 2)
    assert os.path.getsize(path) < model.config.n_layer * layer_bytes + 4096
    assert model.load_session(path, max_seq_len=40).max_seq_len == 40


def test_a_new_process_continues_the_saved_session(checkpoint, tmp_path):
    ckpt = checkpoint(ODD)
    chat = ckpt.model.session(max_seq_len=90)
    chat.append(_ids(ckpt.model, 30, 5))
    chat.generate(5)
    chat.save(tmp_path / "s.kv")
    uninterrupted = chat.generate(12)
    script = (f"import kvcache, json; m = kvcache.GPT2.from_pretrained({str(ckpt.path)!r}); "
              f"s = m.load_session({str(tmp_path / 's.kv')!r}); print(json.dumps(s.generate(12)))")
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True)
    assert json.loads(out.stdout) == uninterrupted


def _saved(tiny, tmp_path, name="s.kv"):
    chat = tiny.model.session(max_seq_len=40)
    chat.append([5, 6, 7, 8, 9, 10])
    chat.generate(3)
    path = tmp_path / name
    chat.save(path)
    return path


def _edited(path, name, edit):
    """A copy of the safetensors file at path, named name beside it, with edit(header dict, data bytes) ->
    (header, data) applied."""
    raw = path.read_bytes()
    n = struct.unpack("<Q", raw[:8])[0]
    header, data = edit(json.loads(raw[8:8 + n]), raw[8 + n:])
    text = json.dumps(header).encode()
    copy = path.with_name(name)
    copy.write_bytes(struct.pack("<Q", len(text)) + text + data)
    return copy


def test_bad_session_files_are_refused(tiny, tmp_path):
    model = tiny.model
    path = _saved(tiny, tmp_path)

    truncated = tmp_path / "truncated.kv"
    truncated.write_bytes(path.read_bytes()[:-100])
    with pytest.raises(ValueError, match="not a readable session file"):
        model.load_session(truncated)

    with pytest.raises(ValueError, match="saved from another model"):
        type(model).from_config(model.config, seed=123).load_session(path)
    with pytest.raises(ValueError, match="with float32 weights; this is a GPT2 with int8 weights"):
        type(model).from_pretrained(tiny.path, weights_dtype="int8").load_session(path)
    from kvcache import Llama, LlamaConfig

    llama = Llama.from_config(LlamaConfig(n_vocab=101, n_ctx=64, n_embd=32, n_head=2, n_kv_head=1, n_layer=2, n_ff=40))
    with pytest.raises(ValueError, match="saved from a GPT2 with float32 weights; this is a Llama"):
        llama.load_session(path)

    def forge(field, value):
        return _edited(path, f"forged-{field}.kv",
                       lambda h, d: ({**h, "__metadata__": {**h["__metadata__"], field: value}}, d))

    for field, value, match in [("format", "other", "not a kvcache session file"),
                                ("version", "9", "version '9' is not supported"),
                                ("cache_dtype", "int4", "cache_dtype 'int4' is not one of"),
                                ("held", "99", "the cache holds 99 positions, more than the 9 tokens"),
                                ("held", "-1", "held='-1' is not an integer"),
                                ("n_layer", "3", "n_layer=3 differs"),
                                ("messages", "[{", "messages is not valid JSON"),
                                ("max_seq_len", "4", "holds 9 tokens, more than max_seq_len=4")]:
        with pytest.raises(ValueError, match=match):
            model.load_session(forge(field, value))

    def lengthen_keys(h, d):  # a header whose shape disagrees with its own byte range
        h["layers.0.keys"]["shape"][1] += 1
        return h, d

    with pytest.raises(ValueError, match="not a readable session file"):
        model.load_session(_edited(path, "bad-shape.kv", lengthen_keys))

    def drop_tensor(h, d):
        del h["layers.1.values"]
        return h, d

    with pytest.raises(ValueError, match="not a readable session file|do not match its metadata"):
        model.load_session(_edited(path, "missing.kv", drop_tensor))

    with pytest.raises(FileNotFoundError, match="no session file"):
        model.load_session(tmp_path / "absent.kv")
    junk = tmp_path / "junk.kv"
    junk.write_bytes(b"\x00" * 64)
    with pytest.raises(ValueError, match="not a readable session file"):
        model.load_session(junk)


def test_forged_token_ids_and_values_are_refused(tiny, tmp_path):
    from safetensors.numpy import load_file, save_file
    from safetensors import safe_open

    path = _saved(tiny, tmp_path)
    with safe_open(str(path), framework="numpy") as f:
        meta = f.metadata()
    tensors = load_file(str(path))
    bad_ids = dict(tensors, tokens=np.array([5, 6, 7, 999, 9, 10, 1, 2, 3], np.int64))
    save_file(bad_ids, str(tmp_path / "ids.kv"), metadata=meta)
    with pytest.raises(ValueError, match="token id 999 is outside the vocabulary"):
        tiny.model.load_session(tmp_path / "ids.kv")
    nan = dict(tensors)
    nan["layers.0.keys"] = nan["layers.0.keys"].copy()
    nan["layers.0.keys"][0, 0, 0] = np.nan
    save_file(nan, str(tmp_path / "nan.kv"), metadata=meta)
    with pytest.raises(ValueError, match="non-finite"):
        tiny.model.load_session(tmp_path / "nan.kv")
    f16 = dict(tensors)
    f16["layers.0.keys"] = f16["layers.0.keys"].astype(np.float16)
    save_file(f16, str(tmp_path / "f16.kv"), metadata=meta)
    with pytest.raises(ValueError, match="layers.0.keys is float16"):
        tiny.model.load_session(tmp_path / "f16.kv")
