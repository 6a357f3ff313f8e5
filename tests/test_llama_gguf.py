"""LLaMA models from GGUF files: random-init models written as llama.cpp's converter writes them, every supported
tensor type, against transformers loading the same file (gguf_file=, dequantized to float32); and metadata that
contradicts the tensors, refused by name."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import transformers

pytest.importorskip("gguf")

from conftest import LOGITS_ATOL, max_abs_diff, random_ids  # noqa: E402
from kvcache import Llama, load  # noqa: E402
from llama_checkpoints import LlamaSpec, perturb_  # noqa: E402
from llama_gguf_files import write_llama_gguf  # noqa: E402

# ne[0] (the inputs of every matrix) a multiple of the 32-weight quantization block
SPEC = LlamaSpec("gguf", n_layer=2, n_embd=64, n_head=4, n_kv_head=2, n_ff=96, vocab_size=96, n_ctx=128,
                 rope_theta=1e5, seed=12)
UNTIED = LlamaSpec("gguf-untied", n_layer=2, n_embd=64, n_head=4, n_kv_head=1, n_ff=64, vocab_size=64, n_ctx=64,
                   tie=False, seed=13)


@pytest.fixture(scope="module", params=[SPEC, UNTIED], ids=str)
def hf_model(request):
    torch.manual_seed(request.param.seed)
    model = transformers.LlamaForCausalLM(request.param.hf_config()).eval()
    perturb_(model, request.param.seed)
    return model


def transformers_from_gguf(path):
    return transformers.AutoModelForCausalLM.from_pretrained(path.parent, gguf_file=path.name,
                                                             dtype=torch.float32).eval()


@pytest.mark.parametrize("matrix_type", ["F32", "F16", "BF16", "Q8_0", "Q4_0", "Q4_1"])
def test_logits_equal_transformers_on_the_same_file(tmp_path, hf_model, matrix_type):
    path = write_llama_gguf(tmp_path / "model.gguf", hf_model, matrix_type)
    ours = Llama.from_pretrained(path)
    theirs = transformers_from_gguf(path)
    ids = random_ids(hf_model.config.vocab_size, (2, 20), seed=1)
    with torch.no_grad():
        ref = theirs(torch.as_tensor(ids)).logits.numpy()
    assert max_abs_diff(ours.forward(ids), ref) < LOGITS_ATOL
    if matrix_type == "F32":  # the permutation undone exactly: the original model's logits
        with torch.no_grad():
            assert max_abs_diff(ours.forward(ids), hf_model(torch.as_tensor(ids)).logits.numpy()) < LOGITS_ATOL



def test_f16_matrices_keep_their_values_with_float16_weights(tmp_path, hf_model):
    """A GGUF F16 matrix is widened to float32 at load; weights_dtype="float16" rounds it back to the same halves,
    exactly. So a prefill of more than 16 rows (the stored values widened to float32 panels, summed as float32 sums
    them) gives the float32 load's logits bit for bit, and decode agrees with transformers on the same file."""
    path = write_llama_gguf(tmp_path / "model.gguf", hf_model, "F16")
    half = Llama.from_pretrained(path, weights_dtype="float16")
    assert half.weights_dtype == "float16"
    ids = random_ids(hf_model.config.vocab_size, (2, 20), seed=4)
    np.testing.assert_array_equal(half.forward(ids), Llama.from_pretrained(path).forward(ids))
    with torch.no_grad():
        ref = transformers_from_gguf(path)(torch.as_tensor(ids)).logits.numpy()
    cache = half.new_cache(2, 20)
    steps = [half.forward(ids[:, :12], cache)] + [half.forward(ids[:, t:t + 1], cache) for t in range(12, 20)]
    assert max_abs_diff(np.concatenate(steps, axis=1), ref) < LOGITS_ATOL


def test_load_picks_the_family_from_the_file(tmp_path, hf_model):
    path = write_llama_gguf(tmp_path / "m.gguf", hf_model)
    model = load(path)
    assert isinstance(model, Llama) and model.tokenizer is None
    assert model.config.n_kv_head == hf_model.config.num_key_value_heads


@pytest.mark.parametrize("change, pattern", [
    ({"general.architecture": "mamba"}, "general.architecture is 'mamba'"),
    ({"llama.attention.head_count_kv": 3}, r"n_head \(4\) must be a multiple of n_kv_head \(3\)"),
    ({"llama.block_count": 1}, "tensors of block 1 but llama.block_count=1"),
    ({"llama.block_count": 3}, "missing tensor 'model.layers.2.input_layernorm.weight'"),
    ({"llama.embedding_length": 32}, r"tensor 'model.embed_tokens.weight' has shape \[\d+, 64\], expected \[\d+, 32\]"),
    ({"llama.context_length": None}, "missing metadata 'llama.context_length'"),
    ({"llama.attention.layer_norm_rms_epsilon": "small"}, "must be a number, got 'small'"),
    ({"llama.rope.scaling.type": "linear"}, r"rope scaling \('linear'"),
])
def test_metadata_that_contradicts_the_tensors_is_refused(tmp_path, hf_model, change, pattern):
    meta = dict(change)
    arch = meta.pop("general.architecture", None)
    path = write_llama_gguf(tmp_path / "bad.gguf", hf_model, metadata=meta)
    if arch is not None:  # GGUFWriter writes general.architecture itself: patch the bytes of the value
        length = b"\x05\x00\x00\x00\x00\x00\x00\x00"  # the string's uint64 length, then its bytes
        raw = path.read_bytes().replace(length + b"llama", length + b"mamba", 1)
        path.write_bytes(raw)
    with pytest.raises(ValueError, match=pattern):
        Llama.from_pretrained(path)


def test_a_missing_tensor_is_named(tmp_path, hf_model):
    path = write_llama_gguf(tmp_path / "bad.gguf", hf_model, drop=("model.layers.1.mlp.up_proj.weight",))
    with pytest.raises(ValueError, match="missing tensor 'model.layers.1.mlp.up_proj.weight'"):
        Llama.from_pretrained(path)


def test_a_tensor_llama_does_not_use_is_refused(tmp_path, hf_model):
    path = write_llama_gguf(tmp_path / "bad.gguf", hf_model, extra={"blk.0.attn_q_norm.weight": np.ones(16)})
    with pytest.raises(ValueError, match="tensor 'blk.0.attn_q_norm.weight' is not one a LLaMA model uses"):
        Llama.from_pretrained(path)
    path = write_llama_gguf(tmp_path / "bad2.gguf", hf_model, extra={"rope_freqs.weight": np.ones(8)})
    with pytest.raises(ValueError, match="rope_freqs"):
        Llama.from_pretrained(path)


def test_a_file_that_is_not_gguf_is_named(tmp_path):
    bad = tmp_path / "x.gguf"
    bad.write_bytes(b"GGML" + bytes(100))
    with pytest.raises(ValueError, match="neither a checkpoint directory nor a GGUF file"):
        Llama.from_pretrained(bad)
    with pytest.raises(ValueError, match="not a GGUF file"):
        load(bad)
    with pytest.raises(FileNotFoundError, match="no checkpoint directory or GGUF file"):
        Llama.from_pretrained(tmp_path / "absent.gguf")
