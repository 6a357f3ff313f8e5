"""Loading LLaMA-family checkpoints: Hugging Face directories (config.json + model.safetensors, or shards listed in
model.safetensors.index.json, found by checkpoint_files.py; tokenizer.json) and GGUF files (kvcache.gguf). Each gives
a LlamaConfig and float32 tensors named and laid out as transformers' LlamaForCausalLM holds them; the core
(LlamaWeights) checks every name and shape. Anything we would compute differently from transformers is refused by
name, before any weight is read."""

from __future__ import annotations

import json
import math
import os
from typing import Dict, NamedTuple, Optional

import numpy as np

from ._core import LlamaConfig, read_safetensors
from .arguments import INT32_MAX
from .checkpoint_files import CONFIG_NAME, weight_files
from .gguf import GGUFFile, read_gguf
from .hf_tokenizer import HFTokenizer


class LoadedLlama(NamedTuple):
    config: LlamaConfig
    tensors: Dict[str, np.ndarray]  # float32, C-contiguous, transformers' names
    tokenizer: Optional[HFTokenizer]
    eos_token_id: Optional[int]
    pad_token_id: Optional[int] = None


def is_gguf(path: str) -> bool:
    if not os.path.isfile(path):
        return False
    with open(path, "rb") as f:
        return f.read(4) == b"GGUF"


# ---- Hugging Face directories -------------------------------------------------------------------------------------
def _int_field(raw: dict, name: str, path: str, default=None) -> int:
    value = raw.get(name, default)
    if value is None:
        raise ValueError(f"{path}: missing required field {name!r}")
    if isinstance(value, bool) or not isinstance(value, int) or not 0 < value <= INT32_MAX:
        raise ValueError(f"{path}: field {name!r} must be a positive 32-bit integer, got {value!r}")
    return value


def _float_field(raw: dict, name: str, path: str, default: float) -> float:
    value = raw.get(name, default)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value <= 0:
        raise ValueError(f"{path}: field {name!r} must be a positive finite number, got {value!r}")
    return float(value)


def _bool_field(raw: dict, name: str, path: str, default: bool) -> bool:
    value = raw.get(name, default)
    if not isinstance(value, bool):
        raise ValueError(f"{path}: field {name!r} must be true or false, got {value!r}")
    return value


def _eos_id(raw: dict, path: str) -> Optional[int]:
    eos = raw.get("eos_token_id")
    if isinstance(eos, list):  # several stop ids (Llama 3): the first; the rest are not yet supported
        eos = eos[0] if eos else None
    if eos is not None and (isinstance(eos, bool) or not isinstance(eos, int) or eos < 0):
        raise ValueError(f"{path}: eos_token_id must be a non-negative integer, got {eos!r}")
    return eos


def _pad_id(value, path: str, key: str) -> Optional[int]:
    if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 0):
        raise ValueError(f"{path}: {key} must be a non-negative integer or null, got {value!r}")
    return value


def config_from_hf(raw: dict, path: str) -> LlamaConfig:
    """config.json of a LlamaForCausalLM -> LlamaConfig, refusing what would compute otherwise."""
    if not isinstance(raw, dict):
        raise ValueError(f"{path}: expected a JSON object")
    if raw.get("model_type") != "llama":
        raise ValueError(f"{path}: model_type is {raw.get('model_type')!r}, expected 'llama'")
    act = raw.get("hidden_act", "silu")
    if act != "silu":
        raise ValueError(f"{path}: hidden_act {act!r} is not supported (LLaMA uses 'silu')")
    if raw.get("pretraining_tp", 1) != 1:
        raise ValueError(f"{path}: pretraining_tp={raw['pretraining_tp']!r} is not supported (only 1)")
    # transformers 5 writes rope_parameters (rope_theta inside); earlier versions rope_theta and rope_scaling
    rope = raw.get("rope_parameters")
    if rope is not None:
        if not isinstance(rope, dict):
            raise ValueError(f"{path}: rope_parameters must be an object, got {rope!r}")
        theta = _float_field(rope, "rope_theta", path, 10000.0)
        scaling = None if rope.get("rope_type", "default") == "default" else rope
    else:
        theta = _float_field(raw, "rope_theta", path, 10000.0)
        scaling = raw.get("rope_scaling")
    n_embd = _int_field(raw, "hidden_size", path)
    n_head = _int_field(raw, "num_attention_heads", path)
    head_dim = raw.get("head_dim")
    try:
        return LlamaConfig(
            n_vocab=_int_field(raw, "vocab_size", path), n_ctx=_int_field(raw, "max_position_embeddings", path),
            n_embd=n_embd, n_head=n_head, n_kv_head=_int_field(raw, "num_key_value_heads", path, n_head),
            n_layer=_int_field(raw, "num_hidden_layers", path),
            head_dim=None if head_dim is None else _int_field(raw, "head_dim", path),
            n_ff=_int_field(raw, "intermediate_size", path), eps=_float_field(raw, "rms_norm_eps", path, 1e-6),
            rope_theta=theta, rope_scaling=scaling,
            attention_bias=_bool_field(raw, "attention_bias", path, False),
            mlp_bias=_bool_field(raw, "mlp_bias", path, False),
            tie_word_embeddings=_bool_field(raw, "tie_word_embeddings", path, False))
    except (TypeError, ValueError) as e:
        raise ValueError(f"{path}: {e}") from None


def _as_float32(dtype: str, stored: np.ndarray) -> np.ndarray:
    if dtype == "BF16":  # bfloat16 is the high half of a float32
        return (stored.astype(np.uint32) << 16).view(np.float32)
    return np.ascontiguousarray(stored, dtype=np.float32)  # F32 (aligned copy) or F16 (widened)


def read_hf_tensors(directory: str) -> Dict[str, np.ndarray]:
    """Every tensor of model.safetensors, or of the shards model.safetensors.index.json lists, as float32."""
    tensors: Dict[str, np.ndarray] = {}
    for path in weight_files(directory, "LlamaForCausalLM"):  # no tensor in two shards: checked there
        for name, (dtype, stored) in read_safetensors(path).items():
            tensors[name] = _as_float32(dtype, stored)
    return tensors


def load_hf_dir(directory: str) -> LoadedLlama:
    config_path = os.path.join(directory, CONFIG_NAME)
    try:
        with open(config_path, encoding="utf-8") as f:
            raw = json.load(f)
    except FileNotFoundError:
        raise FileNotFoundError(f"no {CONFIG_NAME} in {directory!r}") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ValueError(f"{config_path}: not valid JSON ({e})") from None
    config = config_from_hf(raw, config_path)
    tensors = read_hf_tensors(directory)
    # buffers older checkpoints saved, recomputed from the config; a tied head saved anyway must be the embedding
    for name in [n for n in tensors if n.endswith("rotary_emb.inv_freq")]:
        del tensors[name]
    if config.tie_word_embeddings and "lm_head.weight" in tensors:
        if not np.array_equal(tensors["lm_head.weight"], tensors.get("model.embed_tokens.weight")):
            raise ValueError(f"{config_path}: tie_word_embeddings is true, but lm_head.weight differs from the "
                             f"embedding: transformers would use the embedding")
        del tensors["lm_head.weight"]
    tokenizer = None
    tokenizer_json = os.path.join(directory, "tokenizer.json")
    if os.path.isfile(tokenizer_json):
        side = os.path.join(directory, "tokenizer_config.json")
        tokenizer = HFTokenizer.from_file(tokenizer_json, side if os.path.isfile(side) else None)
    return LoadedLlama(config, tensors, tokenizer, _eos_id(raw, config_path),
                       _pad_id(raw.get("pad_token_id"), config_path, "pad_token_id"))


# ---- GGUF ---------------------------------------------------------------------------------------------------------
# GGUF tensor names -> transformers' (per layer: blk.{i}.X -> model.layers.{i}.Y)
_GGUF_GLOBAL = {"token_embd.weight": "model.embed_tokens.weight", "output_norm.weight": "model.norm.weight",
                "output.weight": "lm_head.weight"}
_GGUF_LAYER = {"attn_norm": "input_layernorm", "attn_q": "self_attn.q_proj", "attn_k": "self_attn.k_proj",
               "attn_v": "self_attn.v_proj", "attn_output": "self_attn.o_proj", "ffn_norm": "post_attention_layernorm",
               "ffn_gate": "mlp.gate_proj", "ffn_up": "mlp.up_proj", "ffn_down": "mlp.down_proj"}


def hf_name(gguf_name: str, path: str) -> str:
    if gguf_name in _GGUF_GLOBAL:
        return _GGUF_GLOBAL[gguf_name]
    parts = gguf_name.split(".")
    if len(parts) == 4 and parts[0] == "blk" and parts[1].isdigit() and parts[2] in _GGUF_LAYER \
            and parts[3] in ("weight", "bias"):
        return f"model.layers.{int(parts[1])}.{_GGUF_LAYER[parts[2]]}.{parts[3]}"
    raise ValueError(f"{path}: tensor {gguf_name!r} is not one a LLaMA model uses (it would compute something else)")


def _meta(metadata: dict, key: str, path: str, kind, default=None):
    value = metadata.get(key, default)
    if value is None:
        raise ValueError(f"{path}: missing metadata {key!r}")
    if kind is int and (isinstance(value, bool) or not isinstance(value, int)):
        raise ValueError(f"{path}: metadata {key!r} must be an integer, got {value!r}")
    if kind is float and (isinstance(value, bool) or not isinstance(value, (int, float))):
        raise ValueError(f"{path}: metadata {key!r} must be a number, got {value!r}")
    return value


def config_from_gguf(gguf: GGUFFile) -> LlamaConfig:
    """The llama.* metadata -> LlamaConfig, each value checked against the tensors it describes."""
    path, md = gguf.path or "<buffer>", gguf.metadata
    arch = md.get("general.architecture")
    if arch != "llama":
        raise ValueError(f"{path}: general.architecture is {arch!r}; supported: 'llama'")
    scaling = md.get("llama.rope.scaling.type", "none")
    if scaling != "none" or "rope_freqs.weight" in gguf.tensors:
        raise ValueError(f"{path}: rope scaling ({scaling!r}, rope_freqs) in a GGUF file is not supported")
    n_head = _meta(md, "llama.attention.head_count", path, int)
    n_embd = _meta(md, "llama.embedding_length", path, int)
    tokens = md.get("tokenizer.ggml.tokens")
    n_vocab = md.get("llama.vocab_size", len(tokens) if isinstance(tokens, list) else None)
    n_layer = _meta(md, "llama.block_count", path, int)
    blocks = {int(n.split(".")[1]) for n in gguf.tensors if n.startswith("blk.") and n.split(".")[1].isdigit()}
    if blocks and max(blocks) >= n_layer:
        raise ValueError(f"{path}: tensors of block {max(blocks)} but llama.block_count={n_layer}")
    try:
        return LlamaConfig(
            n_vocab=_meta({"v": n_vocab}, "v", path, int), n_ctx=_meta(md, "llama.context_length", path, int),
            n_embd=n_embd, n_head=n_head, n_kv_head=_meta(md, "llama.attention.head_count_kv", path, int, n_head),
            n_layer=n_layer, head_dim=md.get("llama.rope.dimension_count"),
            n_ff=_meta(md, "llama.feed_forward_length", path, int),
            eps=_meta(md, "llama.attention.layer_norm_rms_epsilon", path, float),
            rope_theta=_meta(md, "llama.rope.freq_base", path, float, 10000.0),
            attention_bias="blk.0.attn_q.bias" in gguf.tensors, mlp_bias="blk.0.ffn_gate.bias" in gguf.tensors,
            tie_word_embeddings="output.weight" not in gguf.tensors)
    except (TypeError, ValueError) as e:
        raise ValueError(f"{path}: {e}") from None


def _unpermute(w: np.ndarray, n_head: int) -> np.ndarray:
    """Undo llama.cpp's converter's permutation of q/k rows (it interleaves the rotary halves), exactly as
    transformers' GGUF loader does."""
    dim = w.shape[0] // n_head // 2
    return np.ascontiguousarray(w.reshape(n_head, dim, 2, *w.shape[1:]).swapaxes(2, 1).reshape(w.shape))


def load_gguf(path: str) -> LoadedLlama:
    with read_gguf(path) as gguf:
        config = config_from_gguf(gguf)
        names = {hf_name(n, path): n for n in gguf.tensors}
        tensors = {}
        for name, gguf_name in names.items():
            w = gguf.array(gguf_name)
            if ".self_attn.q_proj." in name:
                w = _unpermute(w, config.n_head)
            elif ".self_attn.k_proj." in name:
                w = _unpermute(w, config.n_kv_head)
            tensors[name] = np.ascontiguousarray(w, dtype=np.float32)
        tokenizer = HFTokenizer.from_gguf_metadata(gguf.metadata, source=path) \
            if "tokenizer.ggml.tokens" in gguf.metadata else None
        eos = gguf.metadata.get("tokenizer.ggml.eos_token_id")
        pad = gguf.metadata.get("tokenizer.ggml.padding_token_id")
    if eos is not None and (isinstance(eos, bool) or not isinstance(eos, int) or eos < 0):
        raise ValueError(f"{path}: tokenizer.ggml.eos_token_id must be a non-negative integer, got {eos!r}")
    return LoadedLlama(config, tensors, tokenizer, eos, _pad_id(pad, path, "tokenizer.ggml.padding_token_id"))
