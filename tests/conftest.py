"""Shared fixtures and helpers: Hugging Face checkpoints with random weights, built once per session.

The reference everywhere is transformers' GPT2LMHeadModel in float32, eval mode, under torch.no_grad().
"""

from __future__ import annotations

import json
import shutil
import struct
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional, Sequence

import numpy as np
import pytest
import torch
import transformers

import kvcache
from kvcache import GPT2

# The benchmark scripts and their library (kvbench), which are not part of the installed package: importable by
# every test as `import speed`, `import precision`, `from kvbench import bench`.
BENCHMARKS = str(Path(__file__).resolve().parents[1] / "benchmarks")
if BENCHMARKS not in sys.path:
    sys.path.insert(0, BENCHMARKS)

transformers.logging.set_verbosity_error()  # random test configs trip harmless "eos outside vocab" log lines
transformers.logging.disable_progress_bar()

# Largest absolute difference allowed between our float32 logits and transformers' float32 logits. Both compute
# the same float32 graph; only summation order differs, which moves logits by ~1e-6 on these models.
LOGITS_ATOL = 1e-4

# The real GPT-2 tokenizer files: ../shared/gpt2 beside the repository (CI too), else the copy the package ships.
SHARED_GPT2 = Path(__file__).resolve().parents[2] / "shared" / "gpt2"
PACKAGE_GPT2 = Path(kvcache.__file__).resolve().parent / "data"
TOKENIZER_DIR = SHARED_GPT2 if (SHARED_GPT2 / "vocab.json").is_file() else PACKAGE_GPT2

TORCH_DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


# ---------------------------------------------------------------------------------------------------------------------
# checkpoints


@dataclass(frozen=True)
class Spec:
    """One test checkpoint. layout: 'lm_head' = GPT2LMHeadModel.save_pretrained (keys under 'transformer.'),
    'body' = GPT2Model.save_pretrained (no prefix, no head: tied), 'stripped' = the LMHead file with the
    'transformer.' prefix removed from every key (lm_head.weight kept when untied)."""

    name: str
    n_layer: int = 2
    n_head: int = 2
    n_embd: int = 32
    n_positions: int = 160
    vocab_size: int = 101
    tie: bool = True
    dtype: str = "float32"
    layout: str = "lm_head"
    tokenizer: bool = False
    seed: int = 0
    init_range: float = 0.3  # std of the random weights: larger than GPT-2's 0.02, so greedy text does not collapse
                             # into one repeated token and top-1/top-2 logit margins stay far above float32 noise

    def __str__(self) -> str:  # the pytest id
        return self.name


TINY = Spec("tiny")  # 2 layers, 2 heads, C=32, n_ctx 160
SHORT = Spec("short64", n_positions=64, vocab_size=77, seed=1)  # decode to n_ctx = 64
MEDIUM = Spec("medium", n_layer=4, n_head=4, n_embd=128, n_positions=256, vocab_size=1000, seed=2, init_range=0.2)
ODD = Spec("odd", n_layer=3, n_head=3, n_embd=48, n_positions=96, vocab_size=211, seed=3)  # 3 heads of 16
UNTIED = Spec("untied", n_head=4, n_embd=64, vocab_size=150, tie=False, seed=4)
FP16 = Spec("fp16", n_head=4, n_embd=64, vocab_size=300, dtype="float16", seed=5)
BF16 = Spec("bf16", n_head=4, n_embd=64, vocab_size=300, dtype="bfloat16", seed=6)
BODY = Spec("body-no-prefix", vocab_size=120, layout="body", seed=7)
STRIPPED_UNTIED = Spec("stripped-untied", n_embd=48, vocab_size=90, tie=False, layout="stripped", seed=8)
LONG = Spec("long1024", n_positions=1024, vocab_size=64, seed=9)  # decode to n_ctx = 1024
TEXT = Spec("text", n_embd=64, n_positions=256, vocab_size=50257, tokenizer=True, seed=10)  # the real vocabulary
GPT2_124M = Spec("gpt2-124m", n_layer=12, n_head=12, n_embd=768, n_positions=1024, vocab_size=50257,
                 tokenizer=True, seed=11, init_range=0.02)  # GPT-2 small's shape and its own initialisation


def perturb_(model: torch.nn.Module, seed: int) -> None:
    """GPT-2's init leaves biases at 0 and LayerNorm weights at 1, which would hide a loader that drops or swaps
    them: give every parameter its own random values."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            noise = torch.randn(p.shape, generator=gen)
            if ".ln_" in name:  # transformer.h.{i}.ln_1 / ln_2, transformer.ln_f
                p.add_(noise * (0.1 if name.endswith("weight") else 0.05))
            elif name.endswith("bias"):
                p.copy_(noise * 0.05)
            else:
                p.add_(noise * 0.01)


def make_checkpoint(tmp: Path, n_layer: int, n_head: int, n_embd: int, n_positions: int, vocab_size: int,
                    tie: bool = True, dtype: torch.dtype = torch.float32, seed: int = 0, layout: str = "lm_head",
                    tokenizer: bool = False, init_range: float = 0.02):
    """Write a Hugging Face GPT-2 checkpoint with random weights into tmp; return (dir, reference) where reference
    is a float32 eval GPT2LMHeadModel holding exactly the weights of the file (16-bit files: rounded the same way,
    by loading the file back into float32). The weights are normal(0, init_range), every bias and LayerNorm
    parameter randomised too (see perturb_)."""
    tmp = Path(tmp)
    tmp.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(seed)
    config = transformers.GPT2Config(vocab_size=vocab_size, n_positions=n_positions, n_embd=n_embd, n_head=n_head,
                                     n_layer=n_layer, tie_word_embeddings=tie,
                                     initializer_range=init_range)
    model = transformers.GPT2LMHeadModel(config).eval()
    perturb_(model, seed)
    if not tie:
        assert model.lm_head.weight.data_ptr() != model.transformer.wte.weight.data_ptr()
    if layout == "body":
        assert tie, "a GPT2Model body has no lm_head: only a tied head can be rebuilt from it"
        model.transformer.to(dtype).save_pretrained(tmp)
    else:
        model.to(dtype).save_pretrained(tmp)
    if layout == "stripped":
        from safetensors.numpy import load_file, save_file

        assert dtype == torch.float32, "numpy has no bfloat16: the stripped layout is built for float32 only"
        path = tmp / "model.safetensors"
        tensors = load_file(str(path))
        save_file({k.removeprefix("transformer."): v for k, v in tensors.items()}, str(path),
                  metadata={"format": "pt"})
    if tokenizer:
        for name in ("vocab.json", "merges.txt"):
            shutil.copyfile(TOKENIZER_DIR / name, tmp / name)
    if dtype == torch.float32:
        reference = model.float()
    else:
        # widening 16-bit values to float32 is exact, whatever dtype from_pretrained picks by default
        reference = transformers.GPT2LMHeadModel.from_pretrained(tmp).float()
        assert reference.transformer.wte.weight.dtype == torch.float32
    reference.eval()
    return tmp, reference


@dataclass
class Checkpoint:
    spec: Spec
    path: Path
    hf: transformers.GPT2LMHeadModel
    model: GPT2


class CheckpointFactory:
    """Builds each Spec once per session."""

    def __init__(self, tmp_path_factory: pytest.TempPathFactory):
        self._tmp = tmp_path_factory
        self._built: Dict[Spec, Checkpoint] = {}

    def __call__(self, spec: Spec) -> Checkpoint:
        if spec not in self._built:
            path, hf = make_checkpoint(self._tmp.mktemp(spec.name), spec.n_layer, spec.n_head, spec.n_embd,
                                       spec.n_positions, spec.vocab_size, tie=spec.tie,
                                       dtype=TORCH_DTYPES[spec.dtype], seed=spec.seed, layout=spec.layout,
                                       tokenizer=spec.tokenizer, init_range=spec.init_range)
            self._built[spec] = Checkpoint(spec, path, hf, GPT2.from_pretrained(path))
        return self._built[spec]


@pytest.fixture(scope="session")
def checkpoint(tmp_path_factory) -> CheckpointFactory:
    return CheckpointFactory(tmp_path_factory)


@pytest.fixture(scope="session")
def tiny(checkpoint) -> Checkpoint:
    return checkpoint(TINY)


@pytest.fixture(scope="session")
def text_ckpt(checkpoint) -> Checkpoint:
    return checkpoint(TEXT)


@pytest.fixture(scope="session")
def tokenizer_dir() -> Path:
    return TOKENIZER_DIR


# ---------------------------------------------------------------------------------------------------------------------
# references and helpers


def random_ids(vocab_size: int, shape, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, vocab_size, size=shape, dtype=np.int64)


def hf_logits(hf: transformers.GPT2LMHeadModel, ids) -> np.ndarray:
    """Full-sequence logits (B, T, V) of transformers, positions from 0."""
    with torch.no_grad():
        return hf(torch.as_tensor(np.asarray(ids), dtype=torch.long)).logits.float().numpy()


def hf_greedy(hf: transformers.GPT2LMHeadModel, prompt: Sequence[int], max_new_tokens: int) -> List[int]:
    """transformers' greedy continuation of one prompt, never stopping early: prompt + max_new_tokens ids."""
    with torch.no_grad():
        out = hf.generate(torch.tensor([list(prompt)]), attention_mask=torch.ones(1, len(prompt), dtype=torch.long),
                          do_sample=False, max_new_tokens=max_new_tokens, min_new_tokens=max_new_tokens,
                          eos_token_id=None, pad_token_id=0)
    ids = out[0].tolist()
    assert len(ids) == len(prompt) + max_new_tokens
    return ids


def max_abs_diff(a, b) -> float:
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    assert a.shape == b.shape, (a.shape, b.shape)
    return float(np.max(np.abs(a - b)))


def write_safetensors(path: Path, header: dict, data: bytes, header_len: Optional[int] = None) -> None:
    """A safetensors file from a raw header dict and data bytes; header_len overrides the 8-byte length field."""
    blob = json.dumps(header).encode()
    Path(path).write_bytes(struct.pack("<Q", len(blob) if header_len is None else header_len) + blob + data)


def read_safetensors_raw(path: Path):
    """(header dict, data bytes) of a safetensors file."""
    raw = Path(path).read_bytes()
    (n,) = struct.unpack("<Q", raw[:8])
    return json.loads(raw[8:8 + n]), raw[8 + n:]


def copy_checkpoint(src: Path, dst: Path) -> Path:
    """A private, writable copy of a checkpoint directory (tests that corrupt files work on copies)."""
    shutil.copytree(src, dst)
    return dst
