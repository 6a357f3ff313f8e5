"""bfloat16, float16 and int8 weight storage (weights_dtype): exact float32 math on the stored values, and what it
costs.

The reference is transformers in float32 on weights rounded exactly as the engine stores them: bf16 and float16 by
round-to-nearest-even (torch's own conversions), int8 symmetric with one scale per output channel. The body's
Conv1D weights (in, out) are scaled per column; the lm_head (tied wte, (V, C)) per row, while the embedding
lookup keeps wte in float32. So the engine's reduced-precision logits must equal that reference to the same 1e-4
as float32 does: any error beyond the storage format's own is a bug."""

from __future__ import annotations

import copy
import shutil

import numpy as np
import pytest
import torch

import kvcache
from kvcache import GPT2, LlamaConfig
from conftest import FP16, LOGITS_ATOL, MEDIUM, UNTIED, max_abs_diff, random_ids

CONV1D = ("attn.c_attn.weight", "attn.c_proj.weight", "mlp.c_fc.weight", "mlp.c_proj.weight")


def bf16(w: torch.Tensor) -> torch.Tensor:
    return w.to(torch.bfloat16).to(torch.float32)


def f16(w: torch.Tensor) -> torch.Tensor:
    return w.to(torch.float16).to(torch.float32)


ROUNDING = {"bfloat16": bf16, "float16": f16}


def int8(w: torch.Tensor, dim: int) -> torch.Tensor:
    """Symmetric int8 with one scale per slice along `dim` (the output channel), rounded half to even, computed in
    float32 exactly as the engine does (a scale one ulp off would flip values sitting on a rounding boundary)."""
    scale = w.abs().amax(dim=dim, keepdim=True) / 127.0
    scale[scale == 0] = 1.0
    return torch.round(w / scale).clamp(-127, 127) * scale


def reference_logits(hf, ids, dtype: str) -> np.ndarray:
    """transformers' float32 forward with the matrices rounded as the engine stores them."""
    hf = copy.deepcopy(hf)
    rounding = ROUNDING.get(dtype)
    with torch.no_grad():
        for block in hf.transformer.h:
            for name in CONV1D:
                module = block.get_submodule(name.rsplit(".", 1)[0])
                module.weight.copy_(rounding(module.weight) if rounding else int8(module.weight, dim=0))
        hidden = hf.transformer(torch.as_tensor(ids)).last_hidden_state  # embeddings stay float32
        head = hf.lm_head.weight  # (V, C): tied to wte or explicit
        head = rounding(head) if rounding else int8(head, dim=1)
        return (hidden @ head.T).numpy()


@pytest.mark.parametrize("dtype", ["bfloat16", "float16", "int8"])
@pytest.mark.parametrize("spec", [MEDIUM, UNTIED], ids=str)
@pytest.mark.parametrize("batch, length", [(1, 1), (2, 7), (1, 40)])  # <= 8 rows: streaming kernels; more: BLAS
def test_logits_equal_float32_math_on_the_stored_weights(checkpoint, spec, dtype, batch, length):
    ck = checkpoint(spec)
    model = GPT2.from_pretrained(ck.path, weights_dtype=dtype)
    ids = random_ids(spec.vocab_size, (batch, length), seed=batch + length)
    assert max_abs_diff(model.forward(ids), reference_logits(ck.hf, ids, dtype)) < LOGITS_ATOL


@pytest.mark.parametrize("dtype", ["bfloat16", "float16", "int8"])
def test_decode_through_the_cache_equals_the_full_forward(checkpoint, dtype):
    model = GPT2.from_pretrained(checkpoint(MEDIUM).path, weights_dtype=dtype)
    ids = random_ids(MEDIUM.vocab_size, (2, 30), seed=3)
    full = model.forward(ids)
    cache = model.new_cache(2, 30)
    steps = [model.forward(ids[:, :10], cache)] + [model.forward(ids[:, t:t + 1], cache) for t in range(10, 30)]
    assert max_abs_diff(np.concatenate(steps, axis=1), full) < LOGITS_ATOL


@pytest.mark.parametrize("dtype", ["bfloat16", "float16", "int8"])
def test_generation_with_and_without_cache_agree(checkpoint, dtype):
    model = GPT2.from_pretrained(checkpoint(MEDIUM).path, weights_dtype=dtype)
    prompts = [[1, 2, 3], [4, 5, 6, 7, 8, 9]]
    cached = model.generate_ids(prompts, 40, eos_token_id=None)
    assert cached == model.generate_ids(prompts, 40, eos_token_id=None, use_cache=False)


def test_bytes_read_per_token_shrink_with_the_storage_type(checkpoint):
    path = checkpoint(MEDIUM).path
    sizes = {d: GPT2.from_pretrained(path, weights_dtype=d).weights_nbytes
             for d in ("float32", "bfloat16", "float16", "int8")}
    f32 = GPT2.from_pretrained(path)
    assert sizes["float32"] == sum(v.nbytes for v in f32.state_dict().values())  # tied: wte counted once
    assert sizes["float32"] / 2.1 < sizes["bfloat16"] < sizes["float32"] / 1.6
    assert sizes["float16"] == sizes["bfloat16"]  # 2 bytes per matrix element, the rest float32
    assert sizes["float32"] / 4.2 < sizes["int8"] < sizes["float32"] / 2.5
    assert GPT2.from_pretrained(path, weights_dtype="int8").weights_dtype == "int8"
    assert GPT2.from_pretrained(path, weights_dtype="float16").weights_dtype == "float16"
    assert GPT2.from_pretrained(path, weights_dtype=np.float16).weights_dtype == "float16"


def test_unknown_weights_dtype_is_rejected(checkpoint):
    with pytest.raises(ValueError, match="weights_dtype .*'float64'"):
        GPT2.from_pretrained(checkpoint(MEDIUM).path, weights_dtype="float64")


def test_a_float16_checkpoint_keeps_its_values_with_float16_weights(checkpoint):
    """A checkpoint stored in float16 (torch_dtype float16) holds values float16 represents exactly: with
    weights_dtype="float16" they are stored unchanged, and a prefill of more than 16 rows (widened to float32
    panels, summed as the float32 model sums them) gives the float32 load's logits bit for bit."""
    ck = checkpoint(FP16)
    ids = random_ids(FP16.vocab_size, (2, 20), seed=5)
    half = GPT2.from_pretrained(ck.path, weights_dtype="float16").forward(ids)
    np.testing.assert_array_equal(half, GPT2.from_pretrained(ck.path).forward(ids))
    with torch.no_grad():
        assert max_abs_diff(half, ck.hf(torch.as_tensor(ids)).logits.numpy()) < LOGITS_ATOL


def _checkpoint_with(tmp_path, source, tensor: str, index, value: float):
    from safetensors.numpy import load_file, save_file

    directory = tmp_path / "edited"
    shutil.copytree(source, directory)
    tensors = load_file(str(directory / "model.safetensors"))
    tensors[tensor][index] = value
    save_file(tensors, str(directory / "model.safetensors"), metadata={"format": "pt"})
    return directory


@pytest.mark.parametrize("value", [70000.0, -65505.0, float("inf")])
def test_a_weight_beyond_the_float16_range_is_refused_by_name(checkpoint, tmp_path, value):
    """float16 holds at most 65504: a matrix value beyond would be clamped or become infinity, a different model, so
    the load refuses it and names the tensor and the element (Conv1D's (in, out) index, as the file holds it)."""
    path = _checkpoint_with(tmp_path, checkpoint(MEDIUM).path, "transformer.h.1.mlp.c_fc.weight", (3, 5), value)
    with pytest.raises(ValueError, match=r"tensor 'h\.1\.mlp\.c_fc\.weight' \[3, 5\] is (7e\+04|-65505|inf), "
                                         r"beyond float16's range \(\+-65504\).*'bfloat16' or 'float32'"):
        GPT2.from_pretrained(path, weights_dtype="float16")
    assert GPT2.from_pretrained(path, weights_dtype="bfloat16").weights_dtype == "bfloat16"  # bf16's range holds it


def test_the_largest_float16_is_stored_exactly(checkpoint, tmp_path):
    """-65504 is a float16 (the largest in magnitude): a float16 file holding it loads, and gives the float32 load's
    prefill logits bit for bit."""
    path = _checkpoint_with(tmp_path, checkpoint(FP16).path, "transformer.h.0.attn.c_proj.weight", (2, 7), -65504.0)
    ids = random_ids(FP16.vocab_size, (1, 20), seed=2)
    np.testing.assert_array_equal(GPT2.from_pretrained(path, weights_dtype="float16").forward(ids),
                                  GPT2.from_pretrained(path).forward(ids))


def test_a_llama_weight_beyond_the_float16_range_is_refused_by_name():
    """LLaMA's q/k/v (and gate/up) are stacked into one matrix: the message still names the checkpoint's tensor and
    its own element."""
    config = LlamaConfig(n_vocab=64, n_ctx=32, n_embd=32, n_head=4, n_kv_head=2, n_layer=2, n_ff=48)
    rng = np.random.default_rng(0)
    tensors = {name: rng.normal(0, 0.2, size=shape).astype(np.float32)
               for name, shape in kvcache._core.LlamaModel.expected_tensors(config)}
    tensors["model.layers.1.self_attn.k_proj.weight"][4, 9] = 1e5
    with pytest.raises(ValueError, match=r"tensor 'model\.layers\.1\.self_attn\.k_proj\.weight' \[4, 9\] is 1e\+05, "
                                         r"beyond float16's range"):
        kvcache._core.LlamaModel.from_tensors(config, tensors, "float16")
    tensors["model.layers.1.self_attn.k_proj.weight"][4, 9] = 0.0
    tensors["model.layers.0.mlp.up_proj.weight"][47, 31] = -1e6
    with pytest.raises(ValueError, match=r"'model\.layers\.0\.mlp\.up_proj\.weight' \[47, 31\] is -1e\+06"):
        kvcache._core.LlamaModel.from_tensors(config, tensors, "float16")
    tensors["model.layers.0.mlp.up_proj.weight"][47, 31] = 65504.0
    assert kvcache._core.LlamaModel.from_tensors(config, tensors, "float16").weights_dtype == "float16"
