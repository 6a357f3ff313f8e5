"""The files of a Hugging Face checkpoint directory, for every family (GPT-2: checkpoint.py, LLaMA: llama_loading.py):
a file of the checkpoint named instead of its directory, the safetensors files that hold the weights
(model.safetensors, or the shards model.safetensors.index.json lists, checked against the index), and PyTorch-only
weights (pytorch_model.bin) refused with the command that converts them."""

from __future__ import annotations

import json
import os
from typing import List, Optional

from ._core import safetensors_names

CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"
SHARD_INDEX = "model.safetensors.index.json"
TORCH_WEIGHTS = ("pytorch_model.bin", "pytorch_model.bin.index.json")


def directory_of(path: str) -> Optional[str]:
    """The checkpoint directory of a file in one (config.json, model.safetensors, a shard or its index,
    pytorch_model.bin); None for any other file."""
    name = os.path.basename(path)
    if name == CONFIG_NAME or name.endswith((".safetensors", ".safetensors.index.json")) or name in TORCH_WEIGHTS:
        return os.path.dirname(os.path.abspath(path))
    return None


def weight_files(directory: str, model_class: str) -> List[str]:
    """The safetensors files holding a checkpoint's weights: [model.safetensors], or the shards its index lists,
    every tensor of each shard listed for that shard in the index, every listed tensor in its shard, none in two.

    Raises:
        FileNotFoundError: no weights file, or a shard the index lists is missing.
        ValueError: only PyTorch weights (pytorch_model.bin), naming the transformers command that converts them
            (model_class, such as "GPT2LMHeadModel"); a malformed index, or one that disagrees with its shards.
    """
    index_path = os.path.join(directory, SHARD_INDEX)
    if os.path.isfile(index_path):
        return _shards(directory, index_path)
    single = os.path.join(directory, WEIGHTS_NAME)
    if os.path.isfile(single):
        return [single]
    if any(os.path.isfile(os.path.join(directory, name)) for name in TORCH_WEIGHTS):
        raise ValueError(f"{directory!r} holds PyTorch weights (pytorch_model.bin) but no safetensors file; kvcache "
                         f"reads safetensors only. Convert it once with transformers: "
                         f"{model_class}.from_pretrained(dir).save_pretrained(dir, safe_serialization=True)")
    raise FileNotFoundError(f"weights file not found: {single!r} (nor {SHARD_INDEX} with shards)")


def _shards(directory: str, index_path: str) -> List[str]:
    try:
        with open(index_path, encoding="utf-8") as f:
            weight_map = json.load(f)["weight_map"]
        shards = sorted(set(weight_map.values()))
    except (json.JSONDecodeError, UnicodeDecodeError, KeyError, TypeError, AttributeError) as e:
        raise ValueError(f"{index_path}: not a valid safetensors index ({e!r})") from None
    for shard in shards:
        if not isinstance(shard, str) or os.path.basename(shard) != shard:
            raise ValueError(f"{index_path}: shard {shard!r} is not a file name in {directory}")
    paths, seen = [], set()
    for shard in shards:
        path = os.path.join(directory, shard)
        if not os.path.isfile(path):
            raise FileNotFoundError(f"weights file not found: {path!r}")
        for name in safetensors_names(path):
            if name in seen:
                raise ValueError(f"{path}: tensor {name!r} is also in another shard")
            if weight_map.get(name) != shard:
                raise ValueError(f"{path}: tensor {name!r} is not listed for this shard in {index_path}")
            seen.add(name)
        paths.append(path)
    missing = sorted(set(weight_map) - seen)
    if missing:
        raise ValueError(f"{index_path}: lists {missing[0]!r}, which no shard holds")
    return paths
