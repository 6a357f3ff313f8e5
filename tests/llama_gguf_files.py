"""GGUF files of random-init LLaMA models, written with the gguf package's GGUFWriter as llama.cpp's converter
writes them (q and k rows permuted, llama.* metadata), for the loading tests."""

from __future__ import annotations

from pathlib import Path
from typing import Dict, Optional

import numpy as np

gguf = __import__("gguf")

TYPES = {"F32": gguf.GGMLQuantizationType.F32, "F16": gguf.GGMLQuantizationType.F16,
         "BF16": gguf.GGMLQuantizationType.BF16, "Q8_0": gguf.GGMLQuantizationType.Q8_0,
         "Q4_0": gguf.GGMLQuantizationType.Q4_0, "Q4_1": gguf.GGMLQuantizationType.Q4_1}
_LAYER = {"input_layernorm": "attn_norm", "self_attn.q_proj": "attn_q", "self_attn.k_proj": "attn_k",
          "self_attn.v_proj": "attn_v", "self_attn.o_proj": "attn_output", "post_attention_layernorm": "ffn_norm",
          "mlp.gate_proj": "ffn_gate", "mlp.up_proj": "ffn_up", "mlp.down_proj": "ffn_down"}


def permute(w: np.ndarray, n_head: int) -> np.ndarray:
    """llama.cpp's convert_hf_to_gguf permutation of q/k rows (interleaving the rotary halves)."""
    return w.reshape(n_head, 2, w.shape[0] // n_head // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def gguf_name(hf_name: str) -> str:
    if hf_name == "model.embed_tokens.weight":
        return "token_embd.weight"
    if hf_name == "model.norm.weight":
        return "output_norm.weight"
    if hf_name == "lm_head.weight":
        return "output.weight"
    _, _, layer, rest = hf_name.split(".", 3)
    module, kind = rest.rsplit(".", 1)
    return f"blk.{layer}.{_LAYER[module]}.{kind}"


def write_llama_gguf(path: Path, hf_model, matrix_type: str = "F32", metadata: Optional[Dict] = None,
                     drop: tuple = (), extra: Optional[Dict[str, np.ndarray]] = None, tokenizer: bool = False) -> Path:
    """The model's tensors as GGUF: 2-D matrices in matrix_type (1-D ones in F32), metadata overridable by key
    (value None removes the key)."""
    c = hf_model.config
    n_head, n_kv = c.num_attention_heads, c.num_key_value_heads
    head_dim = getattr(c, "head_dim", None) or c.hidden_size // n_head
    meta = {"llama.block_count": c.num_hidden_layers, "llama.context_length": c.max_position_embeddings,
            "llama.embedding_length": c.hidden_size, "llama.feed_forward_length": c.intermediate_size,
            "llama.attention.head_count": n_head, "llama.attention.head_count_kv": n_kv,
            "llama.rope.freq_base": float(c.rope_parameters["rope_theta"]),
            "llama.attention.layer_norm_rms_epsilon": float(c.rms_norm_eps),
            "llama.rope.dimension_count": head_dim, "llama.vocab_size": c.vocab_size}
    meta.update(metadata or {})
    writer = gguf.GGUFWriter(str(path), "llama")
    for key, value in meta.items():
        if value is None:
            continue
        if isinstance(value, str):
            writer.add_string(key, value)
        elif isinstance(value, float):
            writer.add_float32(key, value)
        else:
            writer.add_uint32(key, value)
    if tokenizer:  # a byte-level BPE of single bytes, enough for transformers to build its tokenizer
        tokens = [f"<{i}>" for i in range(c.vocab_size)]
        writer.add_tokenizer_model("gpt2")
        writer.add_token_list(tokens)
        writer.add_token_merges([])
    tensors = {k: v.detach().float().numpy() for k, v in hf_model.state_dict().items()}
    if c.tie_word_embeddings:
        tensors.pop("lm_head.weight", None)
    for name, w in tensors.items():
        if name in drop:
            continue
        if ".q_proj." in name:
            w = permute(w, n_head)
        elif ".k_proj." in name:
            w = permute(w, n_kv)
        qtype = TYPES[matrix_type] if w.ndim == 2 else TYPES["F32"]
        add(writer, gguf_name(name), w, qtype)
    for name, w in (extra or {}).items():
        add(writer, name, w, TYPES["F32"])
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return Path(path)


def add(writer, name: str, w: np.ndarray, qtype) -> None:
    w = np.ascontiguousarray(w, dtype=np.float32)
    if qtype == TYPES["F32"]:
        writer.add_tensor(name, w)
    elif qtype == TYPES["F16"]:
        writer.add_tensor(name, w.astype(np.float16))
    elif qtype == TYPES["BF16"]:
        writer.add_tensor(name, gguf.quants.quantize(w, qtype), raw_dtype=qtype)
    else:
        writer.add_tensor(name, gguf.quants.quantize(w, qtype), raw_dtype=qtype)
