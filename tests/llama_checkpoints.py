"""Random-init LlamaForCausalLM checkpoints written by transformers' save_pretrained, built once per session, with
the float32 eval model that holds exactly their weights: the reference of the LLaMA tests."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional, Sequence

import numpy as np
import pytest
import torch
import transformers

from kvcache import Llama


@dataclass(frozen=True)
class LlamaSpec:
    name: str
    n_layer: int = 2
    n_embd: int = 48
    n_head: int = 6
    n_kv_head: int = 2
    head_dim: Optional[int] = None
    n_ff: int = 80
    vocab_size: int = 131
    n_ctx: int = 256
    rope_theta: float = 10000.0
    rope_scaling: Optional[tuple] = None  # (factor, low, high, original) of a llama3 rope
    bias: bool = False
    tie: bool = True
    seed: int = 0
    init_range: float = 0.25  # larger than 0.02 so that greedy text does not collapse into one repeated token

    def __str__(self) -> str:
        return self.name

    def hf_config(self) -> transformers.LlamaConfig:
        kwargs = {}
        if self.rope_scaling is not None:
            factor, low, high, original = self.rope_scaling
            kwargs["rope_scaling"] = {"rope_type": "llama3", "factor": factor, "low_freq_factor": low,
                                      "high_freq_factor": high, "original_max_position_embeddings": original}
        if self.head_dim is not None:
            kwargs["head_dim"] = self.head_dim
        return transformers.LlamaConfig(
            vocab_size=self.vocab_size, hidden_size=self.n_embd, intermediate_size=self.n_ff,
            num_hidden_layers=self.n_layer, num_attention_heads=self.n_head, num_key_value_heads=self.n_kv_head,
            max_position_embeddings=self.n_ctx, rope_theta=self.rope_theta, attention_bias=self.bias,
            mlp_bias=self.bias, tie_word_embeddings=self.tie, initializer_range=self.init_range, rms_norm_eps=1e-5,
            bos_token_id=None, eos_token_id=None, pad_token_id=None, **kwargs)


GQA = LlamaSpec("gqa-ratio3")                                   # 6 query heads over 2 key/value heads
MQA = LlamaSpec("mqa", n_embd=64, n_head=4, n_kv_head=1, tie=False, rope_theta=5e5, seed=1)
MHA = LlamaSpec("mha", n_embd=32, n_head=4, n_kv_head=4, seed=2)
HEAD_DIM = LlamaSpec("head-dim-explicit", n_embd=48, n_head=4, n_kv_head=2, head_dim=16, seed=3)
LLAMA3 = LlamaSpec("llama3-rope", n_embd=32, n_head=4, n_kv_head=2, n_ctx=2560, rope_theta=5e5,
                   rope_scaling=(8.0, 1.0, 4.0, 64), seed=4)
BIAS = LlamaSpec("biases-untied", n_embd=32, n_head=4, n_kv_head=2, bias=True, tie=False, seed=5)
# head_dim 12, not a multiple of 8: the scalar attention kernels, also split past 256 positions
ODD_HEAD = LlamaSpec("head-dim-12", n_embd=48, n_head=4, n_kv_head=2, n_ctx=2100, seed=7)
LONG = LlamaSpec("long2100", n_layer=1, n_embd=32, n_head=4, n_kv_head=2, n_ctx=2100, vocab_size=64, seed=6)
SPECS = [GQA, MQA, MHA, HEAD_DIM, LLAMA3, BIAS, ODD_HEAD]


def perturb_(model: torch.nn.Module, seed: int) -> None:
    """LLaMA's init leaves RMSNorm weights at 1 and biases at 0, which would hide a loader that drops or swaps them:
    give every one its own random values."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            noise = torch.randn(p.shape, generator=gen)
            if "norm" in name:
                p.add_(noise * 0.1)
            elif name.endswith("bias"):
                p.copy_(noise * 0.05)


@dataclass
class LlamaCheckpoint:
    spec: LlamaSpec
    path: Path
    hf: transformers.LlamaForCausalLM
    model: Llama


class LlamaFactory:
    def __init__(self, tmp_path_factory: pytest.TempPathFactory):
        self._tmp = tmp_path_factory
        self._built: Dict[LlamaSpec, LlamaCheckpoint] = {}

    def __call__(self, spec: LlamaSpec) -> LlamaCheckpoint:
        if spec not in self._built:
            path = self._tmp.mktemp(spec.name)
            torch.manual_seed(spec.seed)
            hf = transformers.LlamaForCausalLM(spec.hf_config()).eval()
            perturb_(hf, spec.seed)
            hf.save_pretrained(path)
            hf = transformers.LlamaForCausalLM.from_pretrained(path, dtype=torch.float32,
                                                               attn_implementation="eager").eval()
            self._built[spec] = LlamaCheckpoint(spec, Path(path), hf, Llama.from_pretrained(path))
        return self._built[spec]


def hf_logits(hf, ids) -> np.ndarray:
    with torch.no_grad():
        return hf(torch.as_tensor(np.asarray(ids), dtype=torch.long)).logits.float().numpy()


def hf_greedy(hf, prompt: Sequence[int], max_new_tokens: int) -> List[int]:
    """transformers' greedy continuation, never stopping early: prompt + max_new_tokens ids."""
    with torch.no_grad():
        out = hf.generate(torch.tensor([list(prompt)]), attention_mask=torch.ones(1, len(prompt), dtype=torch.long),
                          do_sample=False, max_new_tokens=max_new_tokens, min_new_tokens=max_new_tokens,
                          eos_token_id=None, pad_token_id=0)
    return out[0].tolist()
