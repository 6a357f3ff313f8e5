"""bfloat16 and int8 weight storage (weights_dtype): exact float32 math on the stored values, and what it costs.

The reference is transformers in float32 on weights rounded exactly as the engine stores them: bf16 by
round-to-nearest-even (torch's own conversion), int8 symmetric with one scale per output channel. The body's
Conv1D weights (in, out) are scaled per column; the lm_head (tied wte, (V, C)) per row, while the embedding
lookup keeps wte in float32. So the engine's reduced-precision logits must equal that reference to the same 1e-4
as float32 does: any error beyond the storage format's own is a bug."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch

from kvcache import GPT2
from conftest import LOGITS_ATOL, MEDIUM, UNTIED, max_abs_diff, random_ids

CONV1D = ("attn.c_attn.weight", "attn.c_proj.weight", "mlp.c_fc.weight", "mlp.c_proj.weight")


def bf16(w: torch.Tensor) -> torch.Tensor:
    return w.to(torch.bfloat16).to(torch.float32)


def int8(w: torch.Tensor, dim: int) -> torch.Tensor:
    """Symmetric int8 with one scale per slice along `dim` (the output channel), rounded half to even, computed in
    float32 exactly as the engine does (a scale one ulp off would flip values sitting on a rounding boundary)."""
    scale = w.abs().amax(dim=dim, keepdim=True) / 127.0
    scale[scale == 0] = 1.0
    return torch.round(w / scale).clamp(-127, 127) * scale


def reference_logits(hf, ids, dtype: str) -> np.ndarray:
    """transformers' float32 forward with the matrices rounded as the engine stores them."""
    hf = copy.deepcopy(hf)
    rounding = bf16 if dtype == "bfloat16" else None
    with torch.no_grad():
        for block in hf.transformer.h:
            for name in CONV1D:
                module = block.get_submodule(name.rsplit(".", 1)[0])
                module.weight.copy_(rounding(module.weight) if rounding else int8(module.weight, dim=0))
        hidden = hf.transformer(torch.as_tensor(ids)).last_hidden_state  # embeddings stay float32
        head = hf.lm_head.weight  # (V, C): tied to wte or explicit
        head = rounding(head) if rounding else int8(head, dim=1)
        return (hidden @ head.T).numpy()


@pytest.mark.parametrize("dtype", ["bfloat16", "int8"])
@pytest.mark.parametrize("spec", [MEDIUM, UNTIED], ids=str)
@pytest.mark.parametrize("batch, length", [(1, 1), (2, 7), (1, 40)])  # <= 8 rows: streaming kernels; more: BLAS
def test_logits_equal_float32_math_on_the_stored_weights(checkpoint, spec, dtype, batch, length):
    ck = checkpoint(spec)
    model = GPT2.from_pretrained(ck.path, weights_dtype=dtype)
    ids = random_ids(spec.vocab_size, (batch, length), seed=batch + length)
    assert max_abs_diff(model.forward(ids), reference_logits(ck.hf, ids, dtype)) < LOGITS_ATOL


@pytest.mark.parametrize("dtype", ["bfloat16", "int8"])
def test_decode_through_the_cache_equals_the_full_forward(checkpoint, dtype):
    model = GPT2.from_pretrained(checkpoint(MEDIUM).path, weights_dtype=dtype)
    ids = random_ids(MEDIUM.vocab_size, (2, 30), seed=3)
    full = model.forward(ids)
    cache = model.new_cache(2, 30)
    steps = [model.forward(ids[:, :10], cache)] + [model.forward(ids[:, t:t + 1], cache) for t in range(10, 30)]
    assert max_abs_diff(np.concatenate(steps, axis=1), full) < LOGITS_ATOL


@pytest.mark.parametrize("dtype", ["bfloat16", "int8"])
def test_generation_with_and_without_cache_agree(checkpoint, dtype):
    model = GPT2.from_pretrained(checkpoint(MEDIUM).path, weights_dtype=dtype)
    prompts = [[1, 2, 3], [4, 5, 6, 7, 8, 9]]
    cached = model.generate_ids(prompts, 40, eos_token_id=None)
    assert cached == model.generate_ids(prompts, 40, eos_token_id=None, use_cache=False)


def test_bytes_read_per_token_shrink_with_the_storage_type(checkpoint):
    path = checkpoint(MEDIUM).path
    sizes = {d: GPT2.from_pretrained(path, weights_dtype=d).weights_nbytes for d in ("float32", "bfloat16", "int8")}
    f32 = GPT2.from_pretrained(path)
    assert sizes["float32"] == sum(v.nbytes for v in f32.state_dict().values())  # tied: wte counted once
    assert sizes["float32"] / 2.1 < sizes["bfloat16"] < sizes["float32"] / 1.6
    assert sizes["float32"] / 4.2 < sizes["int8"] < sizes["float32"] / 2.5
    assert GPT2.from_pretrained(path, weights_dtype="int8").weights_dtype == "int8"


def test_unknown_weights_dtype_is_rejected(checkpoint):
    with pytest.raises(ValueError, match="weights_dtype .*'float64'"):
        GPT2.from_pretrained(checkpoint(MEDIUM).path, weights_dtype="float64")
