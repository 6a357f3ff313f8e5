"""Every bad input raises a clear exception whose message names the offending value."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest
from safetensors.numpy import load_file, save_file

import kvcache
from kvcache import GPT2, GPT2Config
from conftest import TINY, copy_checkpoint, random_ids, read_safetensors_raw, write_safetensors

V = TINY.vocab_size  # 101
N_CTX = TINY.n_positions  # 160


@pytest.fixture
def bad_dir(tiny, tmp_path):
    """A private copy of the tiny checkpoint to corrupt."""
    return copy_checkpoint(tiny.path, tmp_path / "ckpt")


def weights(path):
    return path / "model.safetensors"


def edit_tensors(path, fn):
    """Rewrite model.safetensors through safetensors.numpy: fn(dict of arrays) edits the dict in place."""
    tensors = load_file(str(weights(path)))
    fn(tensors)
    save_file(tensors, str(weights(path)), metadata={"format": "pt"})


def edit_header(path, fn):
    """Rewrite the raw JSON header (data bytes unchanged): fn(header dict, data bytes) edits the header."""
    header, data = read_safetensors_raw(weights(path))
    fn(header, data)
    write_safetensors(weights(path), header, data)


def edit_config(path, fn):
    cfg = json.loads((path / "config.json").read_text())
    fn(cfg)
    (path / "config.json").write_text(json.dumps(cfg))


# ---- directories -------------------------------------------------------------------------------------------------

def test_missing_directory(tmp_path):
    missing = tmp_path / "no" / "such" / "model"
    with pytest.raises(FileNotFoundError, match=re.escape(str(missing))):
        GPT2.from_pretrained(missing)


def test_directory_without_weights(bad_dir):
    weights(bad_dir).unlink()
    with pytest.raises(FileNotFoundError, match="model.safetensors"):
        GPT2.from_pretrained(bad_dir)


def test_directory_without_config(bad_dir):
    (bad_dir / "config.json").unlink()
    with pytest.raises(FileNotFoundError, match="config.json"):
        GPT2.from_pretrained(bad_dir)


def test_name_not_in_hf_cache_offline(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path))
    monkeypatch.delenv("HF_HUB_CACHE", raising=False)
    monkeypatch.chdir(tmp_path)
    try:  # huggingface_hub reads HF_HUB_OFFLINE once, at import: make sure nothing goes online
        from huggingface_hub import constants
        monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    except ImportError:
        pass  # without huggingface_hub nothing can be downloaded anyway
    with pytest.raises(FileNotFoundError, match="some-name-not-cached"):
        GPT2.from_pretrained("some-name-not-cached")


def test_a_failed_download_is_one_line(tmp_path, monkeypatch):
    """huggingface_hub's messages run over several lines; a command line prints ours as its one-line usage error."""
    huggingface_hub = pytest.importorskip("huggingface_hub")

    def no_network(*args, **kwargs):
        raise OSError("An error happened while trying to locate the files on the Hub.\nCheck your connection.")

    monkeypatch.setenv("HF_HOME", str(tmp_path))
    monkeypatch.delenv("HF_HUB_CACHE", raising=False)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(huggingface_hub, "snapshot_download", no_network)
    with pytest.raises(FileNotFoundError, match=r"'gpt2' is neither.*downloading it failed: OSError: An error.*Hub\. "
                                                r"Check your connection\.") as info:
        GPT2.from_pretrained("gpt2")
    assert "\n" not in str(info.value)


def test_from_pretrained_rejects_non_paths():
    with pytest.raises(TypeError, match="int"):
        GPT2.from_pretrained(123)


# ---- corrupt safetensors -----------------------------------------------------------------------------------------

def truncate_half(path):
    data = weights(path).read_bytes()
    weights(path).write_bytes(data[:len(data) // 2])


def shorter_than_8_bytes(path):
    weights(path).write_bytes(b"\x10\x00\x00")


def header_length_beyond_file(path):
    header, data = read_safetensors_raw(weights(path))
    write_safetensors(weights(path), header, data, header_len=10 ** 9)


def header_not_json(path):
    blob = b"{this is not json"
    weights(path).write_bytes(len(blob).to_bytes(8, "little") + blob + b"\x00" * 64)


def header_not_an_object(path):
    blob = b"[1, 2, 3]"
    weights(path).write_bytes(len(blob).to_bytes(8, "little") + blob)


def offsets_past_data(path):
    def fn(header, data):
        entry = header["transformer.wpe.weight"]
        size = entry["data_offsets"][1] - entry["data_offsets"][0]
        entry["data_offsets"] = [len(data) - size + 8, len(data) + 8]
    edit_header(path, fn)


def overlapping_tensors(path):
    def fn(header, data):  # two (C,) tensors made to share their bytes
        weight = header["transformer.h.0.ln_1.weight"]
        header["transformer.h.0.ln_1.bias"]["data_offsets"] = list(weight["data_offsets"])
    edit_header(path, fn)


def partial_overlap(path):
    def fn(header, data):
        begin, end = header["transformer.h.1.ln_2.weight"]["data_offsets"]
        header["transformer.h.1.ln_2.bias"]["data_offsets"] = [begin + 4, end + 4]
    edit_header(path, fn)


def offsets_disagree_with_shape(path):
    def fn(header, data):
        header["transformer.ln_f.bias"]["shape"] = [TINY.n_embd + 1]
    edit_header(path, fn)


def unknown_dtype(path):
    def fn(header, data):
        header["transformer.ln_f.weight"]["dtype"] = "Q4_K"
    edit_header(path, fn)


def shape_product_overflows(path):
    # 2**62 x 4 floats wraps an int64 element count to 0, which an empty data range would then match.
    def fn(header, data):
        header["junk"] = {"dtype": "F32", "shape": [2 ** 62, 4], "data_offsets": [len(data), len(data)]}
    edit_header(path, fn)


CORRUPTIONS = [
    (truncate_half, r"truncated|outside the data section"),
    (shorter_than_8_bytes, r"3 bytes.*too short|too short.*3 bytes"),
    (header_length_beyond_file, r"header length 1000000000 .*beyond"),
    (header_not_json, r"not a JSON object"),
    (header_not_an_object, r"not a JSON object"),
    (offsets_past_data, r"'transformer\.wpe\.weight'.*outside the data section"),
    (overlapping_tensors, r"h\.0\.ln_1\.(weight|bias)'.*h\.0\.ln_1\.(weight|bias)' overlap"),
    (partial_overlap, r"h\.1\.ln_2\.(weight|bias)'.*h\.1\.ln_2\.(weight|bias)' overlap"),
    (offsets_disagree_with_shape, r"'transformer\.ln_f\.bias' has \d+ bytes"),
    (unknown_dtype, r"'transformer\.ln_f\.weight'.*unknown dtype 'Q4_K'"),
    (shape_product_overflows, r"'junk' has a shape \[4611686018427387904,4\] too large"),
]


@pytest.mark.parametrize("corrupt, pattern", CORRUPTIONS, ids=[c.__name__ for c, _ in CORRUPTIONS])
def test_corrupt_safetensors_file(bad_dir, corrupt, pattern):
    corrupt(bad_dir)
    with pytest.raises(ValueError, match=pattern) as info:
        GPT2.from_pretrained(bad_dir)
    assert str(weights(bad_dir)) in str(info.value)  # the message says which file


# ---- wrong tensors -----------------------------------------------------------------------------------------------

def test_missing_tensor_is_named(bad_dir):
    edit_tensors(bad_dir, lambda t: t.pop("transformer.h.1.attn.c_attn.weight"))
    with pytest.raises(ValueError, match=r"missing tensor 'h\.1\.attn\.c_attn\.weight'"):
        GPT2.from_pretrained(bad_dir)


def test_misshapen_tensor_names_both_shapes(bad_dir):
    def transpose(t):
        t["transformer.h.0.mlp.c_fc.weight"] = np.ascontiguousarray(t["transformer.h.0.mlp.c_fc.weight"].T)
    edit_tensors(bad_dir, transpose)
    C = TINY.n_embd
    with pytest.raises(ValueError, match=rf"'h\.0\.mlp\.c_fc\.weight' has shape \[{4 * C}, {C}\], "
                                         rf"expected \[{C}, {4 * C}\]"):
        GPT2.from_pretrained(bad_dir)


def test_misshapen_lm_head(bad_dir):
    edit_tensors(bad_dir, lambda t: t.__setitem__("lm_head.weight", np.zeros((V + 1, TINY.n_embd), np.float32)))
    with pytest.raises(ValueError, match=rf"'lm_head\.weight' has shape \[{V + 1}, {TINY.n_embd}\]"):
        GPT2.from_pretrained(bad_dir)


def test_checkpoint_smaller_than_config(bad_dir):
    """config.json says 3 layers, the file holds 2: the first missing tensor of layer 2 is named."""
    edit_config(bad_dir, lambda c: c.__setitem__("n_layer", 3))
    with pytest.raises(ValueError, match=r"missing tensor 'h\.2\."):
        GPT2.from_pretrained(bad_dir)


@pytest.mark.parametrize("name, dtype, code", [("transformer.wpe.weight", np.float64, "F64"),
                                               ("transformer.h.0.ln_1.bias", np.int32, "I32"),
                                               ("transformer.ln_f.weight", np.int8, "I8")])
def test_unsupported_dtype(bad_dir, name, dtype, code):
    edit_tensors(bad_dir, lambda t: t.__setitem__(name, t[name].astype(dtype)))
    short = re.escape(name.removeprefix("transformer."))
    with pytest.raises(ValueError, match=rf"'{short}' has unsupported dtype {code}"):
        GPT2.from_pretrained(bad_dir)


# ---- bad config.json ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("edit, pattern", [
    (lambda c: c.pop("n_embd"), r"missing required field 'n_embd'"),
    (lambda c: c.pop("vocab_size"), r"missing required field 'vocab_size'"),
    (lambda c: c.update(n_head="2"), r"'n_head' must be an integer, got '2'"),
    (lambda c: c.update(n_head=3), r"n_embd \(32\) must be divisible by n_head \(3\)"),
    (lambda c: c.update(n_layer=0), r"n_layer must be positive, got 0"),
    (lambda c: c.update(model_type="llama"), r"model_type is 'llama'"),
    (lambda c: c.update(activation_function="relu"), r"activation_function 'relu'"),
    (lambda c: c.update(n_inner=100), r"n_inner=100"),
], ids=["no-n_embd", "no-vocab_size", "string-n_head", "indivisible-heads", "zero-layers", "model_type",
        "activation", "n_inner"])
def test_bad_config(bad_dir, edit, pattern):
    edit_config(bad_dir, edit)
    with pytest.raises(ValueError, match=pattern):
        GPT2.from_pretrained(bad_dir)


def test_config_not_json(bad_dir):
    (bad_dir / "config.json").write_text('{"n_embd": 32,')
    with pytest.raises(ValueError, match=r"config\.json: not valid JSON"):
        GPT2.from_pretrained(bad_dir)


@pytest.mark.parametrize("kwargs, pattern", [
    (dict(n_head=0), r"n_head must be positive, got 0"),
    (dict(n_embd=10, n_head=3), r"n_embd \(10\) must be divisible by n_head \(3\)"),
    (dict(n_vocab=-5), r"n_vocab must be positive, got -5"),
    (dict(eps=0.0), r"epsilon must be a positive finite float32"),
    (dict(eps=float("inf")), r"epsilon must be a positive finite float32"),
    (dict(eps=float("nan")), r"epsilon must be a positive finite float32"),
    # float32 would make these 0 and inf, and the message named those rather than the value given
    (dict(eps=1e-50), r"eps must fit a float32, got 1e-50"),
    (dict(eps=1e50), r"eps must fit a float32, got 1e\+50"),
])
def test_bad_gpt2config(kwargs, pattern):
    with pytest.raises(ValueError, match=pattern):
        GPT2Config(**kwargs)


def test_from_config_needs_a_config():
    with pytest.raises(TypeError, match="GPT2Config"):
        GPT2.from_config({"n_embd": 32})


# ---- generation arguments ----------------------------------------------------------------------------------------

@pytest.mark.parametrize("kwargs, pattern", [
    (dict(max_new_tokens=-1), r"max_new_tokens must be >= 0, got -1"),
    (dict(temperature=-0.5), r"temperature .*got -0\.5"),
    (dict(temperature=float("nan")), r"temperature .*got nan"),
    (dict(top_k=-3), r"top_k .*got -3"),
    (dict(top_p=0.0), r"top_p .*got 0(\.0*)?$"),
    (dict(top_p=1.5), r"top_p .*got 1\.50*$"),
    (dict(seed=-1), r"seed must be >= 0, got -1"),
    (dict(seed=2 ** 64), r"seed .*18446744073709551616"),  # beyond the 64-bit generator's seeds
    (dict(eos_token_id=V), rf"eos_token_id {V} is outside the vocabulary"),
    (dict(eos_token_id=-2), r"eos_token_id must be >= 0, got -2"),
], ids=["neg-max_new_tokens", "neg-temperature", "nan-temperature", "neg-top_k", "top_p-0", "top_p-1.5",
        "neg-seed", "huge-seed", "eos-out-of-vocab", "neg-eos"])
@pytest.mark.parametrize("do_sample", [False, True], ids=["greedy", "sampled"])
def test_bad_generation_value(tiny, kwargs, pattern, do_sample):
    with pytest.raises(ValueError, match=pattern):
        tiny.model.generate_ids([1, 2, 3], **{"max_new_tokens": 4, "do_sample": do_sample, **kwargs})


@pytest.mark.parametrize("kwargs, pattern", [
    (dict(temperature=-1.0), r"temperature .*got -1"),
    (dict(top_k=-1), r"top_k .*got -1"),
    (dict(top_p=0.0), r"top_p .*got 0"),
    (dict(top_p=1.01), r"top_p .*got 1\.01"),
])
def test_bad_sample_value(kwargs, pattern):
    with pytest.raises(ValueError, match=pattern):
        kvcache.sample(np.zeros(8, np.float32), seed=0, **kwargs)


@pytest.mark.parametrize("seed, error, pattern", [(-1, ValueError, r"seed.*-1"), (2 ** 64, ValueError, r"seed.*"),
                                                  (1.5, TypeError, r"seed.*float")], ids=["negative", "2**64", "float"])
def test_bad_sample_seed(seed, error, pattern):
    """generate_ids rejects these seeds with a clear message; kvcache.sample must too."""
    with pytest.raises(error, match=pattern):
        kvcache.sample(np.zeros(8, np.float32), seed=seed)


def test_bad_sample_logits():
    with pytest.raises(ValueError, match="3 dimensions"):
        kvcache.sample(np.zeros((2, 2, 2), np.float32))
    with pytest.raises(ValueError, match="empty"):
        kvcache.sample(np.zeros((0,), np.float32))


@pytest.mark.parametrize("call, error, pattern", [
    (lambda m: m.generate(123), TypeError, r"prompt must be a str.*int"),
    (lambda m: m.generate(["ok", 5]), TypeError, r"every prompt must be a str, got int"),
    (lambda m: m.generate("Hello", max_new_tokens=1.5), TypeError, r"max_new_tokens must be an int, got float 1\.5"),
    (lambda m: m.generate("Hello", max_new_tokens="3"), TypeError, r"max_new_tokens must be an int, got str"),
    (lambda m: m.generate("Hello", temperature="hot"), TypeError, r"temperature must be a number, got str"),
    (lambda m: m.generate("Hello", top_k=2.0), TypeError, r"top_k must be an int, got float"),
    (lambda m: m.generate("Hello", do_sample="yes"), TypeError, r"do_sample"),
    (lambda m: m.generate_ids("1 2 3"), TypeError, r"token ids .*str"),
    (lambda m: m.generate_ids([1, 2.5]), TypeError, r"token ids must be ints, got float 2\.5"),
    (lambda m: m.generate_ids(np.array([1.0, 2.0])), TypeError, r"dtype float64"),
    (lambda m: m.generate(""), ValueError, r"prompt is empty"),
    (lambda m: m.generate(["fine", ""]), ValueError, r"prompt is empty"),
], ids=["int-prompt", "int-in-list", "float-max_new_tokens", "str-max_new_tokens", "str-temperature",
        "float-top_k", "str-do_sample", "str-ids", "float-id", "float-array", "empty-text", "empty-text-in-list"])
def test_bad_generate_call(text_ckpt, call, error, pattern):
    with pytest.raises(error, match=pattern):
        call(text_ckpt.model)


@pytest.mark.parametrize("ids, pattern", [
    ([], r"prompt 0 is empty"),
    ([[1, 2], []], r"prompt 1 is empty"),
    ([1, V, 2], rf"token id {V} in prompt 0 is outside the vocabulary \[0, {V}\)"),
    ([[3], [1, -1]], r"token id -1 in prompt 1 is outside the vocabulary"),
    ([[4], [5, 10 ** 6]], r"token id 1000000 in prompt 1"),
], ids=["empty", "empty-row", "id-eq-vocab", "negative-id", "huge-id"])
def test_bad_prompt_ids(tiny, ids, pattern):
    with pytest.raises(ValueError, match=pattern):
        tiny.model.generate_ids(ids, max_new_tokens=2)


def nan_embedding_row(tensors, row=7):
    """Token `row`'s embedding, and so (the head is tied) its logit, becomes NaN; every other logit stays finite."""
    wte = tensors["transformer.wte.weight"].copy()
    wte[row] = np.nan
    tensors["transformer.wte.weight"] = wte


def nan_final_norm(tensors):
    tensors["transformer.ln_f.weight"] = np.full_like(tensors["transformer.ln_f.weight"], np.nan)


@pytest.mark.parametrize("edit, pattern", [(nan_embedding_row, r"logits contain NaN \(token id 7\)"),
                                           (nan_final_norm, r"logits contain NaN \(token id 0\)")],
                         ids=["one-logit", "every-logit"])
@pytest.mark.parametrize("do_sample", [False, True], ids=["greedy", "sampled"])
def test_nan_logits_stop_generation_with_the_id(bad_dir, edit, pattern, do_sample):
    """A broken checkpoint's NaN logit is an error naming its id, greedy or sampled, never a token chosen past it."""
    edit_tensors(bad_dir, edit)
    model = GPT2.from_pretrained(bad_dir)
    with pytest.raises(ValueError, match=pattern):
        model.generate_ids([1, 2, 3], 4, do_sample=do_sample, seed=0)


def test_prompt_plus_new_tokens_beyond_n_ctx(tiny):
    ok = tiny.model.generate_ids([1] * 10, max_new_tokens=N_CTX - 10, eos_token_id=None)  # exactly n_ctx: fine
    assert len(ok) == N_CTX
    with pytest.raises(ValueError, match=rf"10 tokens plus max_new_tokens={N_CTX - 9} is {N_CTX + 1} tokens, "
                                         rf"beyond n_ctx={N_CTX}"):
        tiny.model.generate_ids([1] * 10, max_new_tokens=N_CTX - 9)
    with pytest.raises(ValueError, match=rf"prompt 1 of {N_CTX + 1} tokens"):
        tiny.model.generate_ids([[1], [2] * (N_CTX + 1)], max_new_tokens=0)


def test_text_needs_a_tokenizer(tiny):
    assert tiny.model.tokenizer is None
    with pytest.raises(ValueError, match="no tokenizer"):
        tiny.model.generate("Hello")
    with pytest.raises(ValueError, match="no tokenizer"):
        list(tiny.model.stream("Hello"))


# ---- forward and the cache ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("tokens, error, pattern", [
    (np.array([[1, V]]), ValueError, rf"token id {V} is outside the vocabulary \[0, {V}\)"),
    (np.array([[-1, 2]]), ValueError, r"token id -1 is outside the vocabulary"),
    (np.array([[2 ** 40]]), ValueError, rf"token id {2 ** 40} is outside the vocabulary"),
    (np.array([[1.0, 2.0]]), TypeError, r"integer array, got dtype float64"),
    (np.zeros((1, 0), np.int64), ValueError, r"at least one token"),
    ([], ValueError, r"at least one token"),  # NumPy makes these float64: not a "wrong dtype"
    ([[]], ValueError, r"at least one token"),
    (np.zeros((1, 2, 3), np.int64), ValueError, r"2-D array .* got 3 dimensions"),
    (np.zeros((1, N_CTX + 1), np.int64), ValueError, rf"{N_CTX + 1} tokens is longer than n_ctx={N_CTX}"),
], ids=["id-eq-vocab", "negative", "huge", "float", "empty", "empty-list", "empty-rows", "3-D", "beyond-n_ctx"])
def test_bad_forward_tokens(tiny, tokens, error, pattern):
    with pytest.raises(error, match=pattern):
        tiny.model.forward(tokens)


def test_cache_of_another_model(tiny):
    twin = GPT2.from_pretrained(tiny.path)  # same shape, same weights, another model object
    cache = twin.new_cache(batch_size=1, max_seq_len=16)
    with pytest.raises(ValueError, match="another model"):
        tiny.model.forward(np.array([[1, 2]]), cache=cache)
    assert cache.seq_lens == [0]


def test_a_foreign_cache_is_named_before_its_batch_size(tiny):
    """The batch-size check ran first: a user fixed the batch, only to learn then that the cache can never work."""
    twin = GPT2.from_pretrained(tiny.path)
    with pytest.raises(ValueError, match="another model"):
        tiny.model.forward(np.array([[1, 2]]), cache=twin.new_cache(batch_size=2, max_seq_len=16))


@pytest.mark.parametrize("ids, pattern", [
    ([[1, 2], 3], r"prompt 1 must be a list of token ids .* got int 3"),
    ([[1, 2], np.array(5)], r"prompt 1 must be a list of token ids .* got ndarray array\(5\)"),
    ([np.array([1, 2]), np.zeros((2, 2), np.int64)], r"prompt 1 must be a list of token ids .* got ndarray"),
], ids=["int-row", "0-d-row", "2-d-row"])
def test_generate_ids_names_a_row_that_is_not_a_list(tiny, ids, pattern):
    """"'int' object is not iterable" and "iteration over a 0-d array" named neither the argument nor the row."""
    with pytest.raises(TypeError, match=pattern):
        tiny.model.generate_ids(ids, max_new_tokens=1)


def test_cache_with_another_batch_size(tiny):
    cache = tiny.model.new_cache(batch_size=2, max_seq_len=16)
    with pytest.raises(ValueError, match=r"1 rows does not match the cache's batch_size 2"):
        tiny.model.forward(np.array([[1, 2, 3]]), cache=cache)
    with pytest.raises(ValueError, match=r"3 rows does not match the cache's batch_size 2"):
        tiny.model.forward(np.ones((3, 1), np.int64), cache=cache)
    assert cache.seq_lens == [0, 0]


@pytest.mark.parametrize("cls, pattern", [
    (kvcache.KVCache, r"KVCache cannot be created directly; make one with GPT2\.new_cache\(\)"),
    (kvcache._core.Model, r"Model cannot be created directly"),
], ids=["cache", "model"])
def test_core_objects_cannot_be_made_without_the_core(cls, pattern):
    """cls.__new__(cls) made an instance with no C++ object behind it: its methods (crop, state_dict) crashed or
    returned garbage."""
    with pytest.raises(TypeError, match=pattern):
        cls.__new__(cls)
    with pytest.raises(TypeError, match=pattern):
        cls()


@pytest.mark.parametrize("cls, pattern", [
    (GPT2Config, r"GPT2Config\.__new__ alone makes no GPT2Config; call GPT2Config\(\.\.\.\)"),
    (kvcache._core.Generator, r"Generator\.__new__ alone makes no Generator"),
], ids=["config", "generator"])
def test_constructed_classes_refuse_a_bare_new(cls, pattern):
    """cls.__new__(cls) skipped the constructor, and pybind11 gave the methods uninitialised memory: a config with
    garbage fields, a generator whose mutex failed ("Invalid argument") and whose cache_nbytes was garbage. cls(...)
    still constructs, and the classes are final, since a subclass would take the refusal as its constructor."""
    with pytest.raises(TypeError, match=pattern):
        cls.__new__(cls)
    with pytest.raises(TypeError, match="not an acceptable base type"):
        type("Sub", (cls,), {})


def test_config_and_generator_still_construct(tiny):
    assert GPT2Config(n_embd=64, n_head=4).head_dim == 16
    generator = kvcache._core.Generator(tiny.model._core, [[1, 2]], max_new_tokens=2)
    generator.run()
    assert generator.done and len(generator.sequences[0]) == 4


def test_cache_argument_must_be_a_cache(tiny):
    with pytest.raises(TypeError, match="KVCache"):
        tiny.model.forward(np.array([[1]]), cache="cache")


@pytest.mark.parametrize("max_len", [8, N_CTX])
def test_forward_past_cache_capacity(tiny, max_len):
    cache = tiny.model.new_cache(batch_size=2, max_seq_len=max_len)
    tiny.model.forward(random_ids(V, (2, max_len - 2)), cache=cache)
    with pytest.raises(ValueError, match=rf"overflow.*holds {max_len - 2} positions and 3 more would exceed "
                                         rf"max_seq_len={max_len}"):
        tiny.model.forward(random_ids(V, (2, 3)), cache=cache)
    assert cache.seq_lens == [max_len - 2] * 2  # the failed call changed nothing
    tiny.model.forward(random_ids(V, (2, 2)), cache=cache)  # exactly to capacity still works
    assert cache.seq_lens == [max_len] * 2
    with pytest.raises(ValueError, match="overflow"):
        tiny.model.forward(random_ids(V, (2, 1)), cache=cache)
    assert cache.seq_lens == [max_len] * 2


def test_failed_forward_leaves_cache_and_results_untouched(tiny):
    """A rejected call (bad token id) neither advances the cache nor corrupts what it holds."""
    ids = random_ids(V, (1, 12), seed=6)
    expected = tiny.model.forward(ids)
    cache = tiny.model.new_cache(batch_size=1, max_seq_len=32)
    tiny.model.forward(ids[:, :6], cache=cache)
    with pytest.raises(ValueError, match=rf"token id {V}"):
        tiny.model.forward(np.array([[3, V]]), cache=cache)
    assert cache.seq_lens == [6]
    np.testing.assert_allclose(tiny.model.forward(ids[:, 6:], cache=cache), expected[:, 6:], atol=1e-5)


@pytest.mark.parametrize("kwargs, error, pattern", [
    (dict(max_seq_len=N_CTX + 1), ValueError, rf"max_seq_len must be in \[1, n_ctx={N_CTX}\], got {N_CTX + 1}"),
    (dict(max_seq_len=0), ValueError, r"max_seq_len must be >= 1, got 0"),
    (dict(batch_size=0), ValueError, r"batch_size must be >= 1, got 0"),
    (dict(batch_size=2.0), TypeError, r"batch_size must be an int, got float"),
])
def test_bad_new_cache(tiny, kwargs, error, pattern):
    with pytest.raises(error, match=pattern):
        tiny.model.new_cache(**kwargs)


def test_bad_crop(tiny):
    cache = tiny.model.new_cache(batch_size=1, max_seq_len=4)
    with pytest.raises(ValueError, match=r"crop length must be >= 0, got -1"):
        cache.crop(-1)
    with pytest.raises(TypeError, match=r"max_length must be an int, got bool True"):
        cache.crop(True)
    with pytest.raises(ValueError, match=rf"max_length must fit a 32-bit int, got {2 ** 40}"):
        cache.crop(2 ** 40)
    with pytest.raises(TypeError, match=r"row must be an int, got float"):
        cache.get_seq_length(0.0)


# ---- config.json and weights that do not belong together ----------------------------------------------------------

def test_checkpoint_larger_than_config(bad_dir):
    """config.json says 1 layer, the file holds 2: loading only the first would run another model without a word."""
    edit_config(bad_dir, lambda c: c.__setitem__("n_layer", 1))
    with pytest.raises(ValueError, match=r"holds tensor 'transformer\.h\.1\..*' of layer 1, but config\.json has "
                                         r"n_layer=1"):
        GPT2.from_pretrained(bad_dir)


def test_untied_config_needs_an_lm_head(bad_dir):
    """tie_word_embeddings false and no lm_head.weight: the head would silently be the embeddings."""
    edit_config(bad_dir, lambda c: c.__setitem__("tie_word_embeddings", False))
    with pytest.raises(ValueError, match=r"tie_word_embeddings is false, but .*model\.safetensors has no "
                                         r"lm_head\.weight"):
        GPT2.from_pretrained(bad_dir)


@pytest.mark.parametrize("edit, pattern", [
    (lambda c: c.update(eos_token_id=-1), r"eos_token_id must be null or one token id .* got -1"),
    (lambda c: c.update(eos_token_id=5.0), r"eos_token_id must be null or one token id .* got 5\.0"),
    (lambda c: c.update(eos_token_id=[5, 6]), r"eos_token_id must be null or one token id .* got \[5, 6\]"),
    (lambda c: c.update(eos_token_id="5"), r"eos_token_id must be null or one token id .* got '5'"),
    (lambda c: c.update(tie_word_embeddings="yes"), r"tie_word_embeddings must be true or false, got 'yes'"),
    (lambda c: c.update(vocab_size=2 ** 31), rf"'vocab_size' must fit a 32-bit integer, got {2 ** 31}"),
    (lambda c: c.update(layer_norm_epsilon="abc"), r"layer_norm_epsilon must be a positive number .* got 'abc'"),
    (lambda c: c.update(layer_norm_epsilon=None), r"layer_norm_epsilon must be a positive number .* got None"),
    (lambda c: c.update(layer_norm_epsilon=1e300), r"layer_norm_epsilon must be a positive number .* got 1e\+300"),
    (lambda c: c.update(layer_norm_epsilon=1e-50), r"layer_norm_epsilon must be a positive number .* got 1e-50"),
    (lambda c: c.update(scale_attn_weights=1), r"scale_attn_weights must be true .* got 1"),
], ids=["eos-negative", "eos-float", "eos-list", "eos-str", "tie-str", "vocab-beyond-int32", "eps-str", "eps-null",
        "eps-beyond-float32", "eps-rounds-to-0", "scale-int"])
def test_bad_config_values_name_the_file(bad_dir, edit, pattern):
    edit_config(bad_dir, edit)
    with pytest.raises(ValueError, match=r"config\.json: .*" + pattern):
        GPT2.from_pretrained(bad_dir)


def test_config_not_utf8(bad_dir):
    (bad_dir / "config.json").write_bytes(b'{"n_embd": "\xff\xfe"}')
    with pytest.raises(ValueError, match=r"config\.json: not valid JSON"):
        GPT2.from_pretrained(bad_dir)


def test_no_eos_survives_save_and_load(bad_dir, tmp_path):
    edit_config(bad_dir, lambda c: c.update(eos_token_id=None))
    model = GPT2.from_pretrained(bad_dir)
    assert model.eos_token_id is None
    model.save_pretrained(tmp_path / "again")
    assert json.loads((tmp_path / "again" / "config.json").read_text())["eos_token_id"] is None
    assert GPT2.from_pretrained(tmp_path / "again").eos_token_id is None


def test_weights_dtype_takes_numpy_dtypes_and_names_bad_ones(tiny):
    assert GPT2.from_pretrained(tiny.path, weights_dtype=np.float32).weights_dtype == "float32"
    assert GPT2.from_config(GPT2Config(n_layer=1, n_head=1, n_embd=8, n_vocab=10, n_ctx=8),
                            weights_dtype=np.dtype("float32")).weights_dtype == "float32"
    with pytest.raises(ValueError, match=r"weights_dtype must be 'float32', 'bfloat16', 'float16' or 'int8', got 'f2'"):
        GPT2.from_pretrained(tiny.path, weights_dtype="f2")
    with pytest.raises(TypeError, match=r"weights_dtype must be a dtype name"):
        GPT2.from_pretrained(tiny.path, weights_dtype=None)


# ---- ids beyond int32, and ids the tokenizer does not have ---------------------------------------------------------

@pytest.mark.parametrize("ids, pattern", [
    ([2 ** 40], rf"token id {2 ** 40} in prompt 0 is outside the vocabulary \[0, {V}\)"),
    (np.array([2 ** 63 + 1], np.uint64), rf"token id {2 ** 63 + 1} in prompt 0"),
    ([[1], [-(2 ** 40)]], rf"token id {-(2 ** 40)} in prompt 1"),
], ids=["2**40", "uint64", "negative-beyond-int32"])
def test_ids_beyond_int32_are_named(tiny, ids, pattern):
    with pytest.raises(ValueError, match=pattern):
        tiny.model.generate_ids(ids, max_new_tokens=1)


def test_forward_names_large_unsigned_ids_as_they_are(tiny):
    with pytest.raises(ValueError, match=rf"token id {2 ** 64 - 5} is outside the vocabulary"):
        tiny.model.forward(np.array([[2 ** 64 - 5]], np.uint64))


def test_decode_rejects_ids_outside_the_tokenizer(text_ckpt):
    tok = text_ckpt.model.tokenizer
    assert tok.decode([15496]) == "Hello"
    for bad in (tok.vocab_size, 59999, -1):
        with pytest.raises(ValueError, match=rf"token id {bad} is outside the tokenizer's vocabulary \[0, "
                                             rf"{tok.vocab_size}\)"):
            text_ckpt.model.decode([15496, bad])
    with pytest.raises(TypeError, match=r"token ids must be ints, got float"):
        tok.decode([1.0])


def test_stream_checks_its_arguments_at_the_call(text_ckpt):
    with pytest.raises(TypeError, match=r"top_k must be an int"):
        text_ckpt.model.stream("Hello", top_k="3")
    with pytest.raises(ValueError, match=r"max_new_tokens must be >= 0"):
        text_ckpt.model.stream("Hello", max_new_tokens=-1)
    with pytest.raises(TypeError, match=r"stream\(\) got an unexpected keyword argument 'tempreature'"):
        text_ckpt.model.stream("Hello", 2, tempreature=0.5)  # named the private GPT2._generator() before


@pytest.mark.parametrize("kwargs, error, pattern", [
    (dict(n_layer=True), TypeError, r"n_layer must be an int, got bool True"),
    (dict(n_layer=np.bool_(True)), TypeError, r"n_layer must be an int, got bool"),
    (dict(n_head=2.0), TypeError, r"n_head must be an int, got float 2\.0"),
    (dict(n_vocab=2 ** 31), ValueError, rf"n_vocab must fit a 32-bit int, got {2 ** 31}"),
    (dict(eps=True), TypeError, r"eps must be a number, got bool True"),
    (dict(eps="1e-5"), TypeError, r"eps must be a number, got str"),
    (dict(eps=1e300), ValueError, r"eps must fit a float32, got 1e\+300"),  # once "got inf", not the value given
], ids=["bool-layers", "numpy-bool", "float-heads", "vocab-beyond-int32", "bool-eps", "str-eps", "eps-beyond-f32"])
def test_gpt2config_argument_types(kwargs, error, pattern):
    with pytest.raises(error, match=pattern):
        GPT2Config(**kwargs)
    assert GPT2Config(n_layer=np.int64(3), eps=np.float32(1e-5)).n_layer == 3  # NumPy scalars are numbers
