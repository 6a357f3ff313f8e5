"""Llama: the LLaMA family (SmolLM2, Llama 2/3, TinyLlama, ...) on the engine: loading Hugging Face directories and
GGUF files, and chat through the model's own template. Generation, streaming and forward over a KV cache are
CausalLM's (causal_lm.py)."""

from __future__ import annotations

import os
from typing import List, Optional, Union

import numpy as np

from . import _core
from ._core import LlamaConfig
from .arguments import SEED_MAX, check_dtype, check_int
from .causal_lm import CausalLM
from .chat_template import render_chat
from .checkpoint_files import directory_of
from .fingerprint import weights_fingerprint
from .generation_config import resolve, with_generation_options
from .llama_loading import is_gguf, load_gguf, load_hf_dir


class Llama(CausalLM):
    """A LLaMA-family model on the C++ engine. Make one with from_pretrained() (or kvcache.load())."""

    @classmethod
    def from_pretrained(cls, path: Union[str, os.PathLike], weights_dtype: str = "float32") -> "Llama":
        """Load a Hugging Face LlamaForCausalLM directory (config.json, model.safetensors or shards, tokenizer.json)
        or a GGUF file (F32, F16, BF16, Q8_0, Q4_0, Q4_1 tensors, dequantized to float32 at load). A file of a
        directory (config.json, model.safetensors, ...) stands for the directory.

        weights_dtype: how the matrices are stored for computing: "float32" (exact), "bfloat16", "float16" (a
            matrix value beyond +-65504 is refused, ValueError) or "int8". A GGUF file's F16 matrices keep their
            stored values exactly with "float16".

        Raises:
            FileNotFoundError: no such path, no config.json, no weights file.
            ValueError: a directory with PyTorch weights only (pytorch_model.bin; the message says how to convert
                them), a config or tensors we would compute differently, a malformed file."""
        weights_dtype = check_dtype("weights_dtype", weights_dtype)
        if not isinstance(path, (str, os.PathLike)):
            raise TypeError(f"path must be a str or os.PathLike, got {type(path).__name__}")
        path = os.fspath(path)
        if os.path.isdir(path):
            loaded = load_hf_dir(path)
        elif is_gguf(path):
            loaded = load_gguf(path)
        elif os.path.isfile(path) and directory_of(path) is not None:  # config.json, model.safetensors, ...
            loaded = load_hf_dir(directory_of(path))
        elif os.path.exists(path):
            raise ValueError(f"{path!r} is neither a checkpoint directory nor a GGUF file (no GGUF magic), nor a "
                             f"checkpoint's config.json or safetensors file")
        else:
            raise FileNotFoundError(f"no checkpoint directory or GGUF file at {path!r}")
        config = loaded.config
        tokenizer = loaded.tokenizer
        if tokenizer is not None and tokenizer.vocab_size < config.n_vocab:
            raise ValueError(f"the tokenizer of {path} has {tokenizer.vocab_size} tokens, fewer than the model's "
                             f"vocab_size={config.n_vocab}")
        core = _core.LlamaModel.from_tensors(config, loaded.tensors, weights_dtype)
        model = cls(core, tokenizer, loaded.eos_token_id, loaded.pad_token_id)
        model._fingerprint = weights_fingerprint(loaded.tensors, core.weights_dtype)
        return model

    @classmethod
    def from_config(cls, config: LlamaConfig, seed: int = 0, weights_dtype: str = "float32") -> "Llama":
        """A randomly initialised model, as transformers initialises LlamaForCausalLM: every matrix and the embedding
        normal(0, 0.02), norms 1, biases 0. Without a tokenizer: use ids.

        Args:
            config: the shape (kvcache.LlamaConfig; transformers' names are taken too).
            seed: the same seed gives the same weights.
            weights_dtype: "float32", "bfloat16", "float16" or "int8".

        Raises:
            TypeError: config is not a LlamaConfig. ValueError: a seed outside [0, 2**64), an unknown weights_dtype."""
        if not isinstance(config, LlamaConfig):
            raise TypeError(f"config must be a LlamaConfig, got {type(config).__name__}")
        rng = np.random.default_rng(check_int("seed", seed, 0, SEED_MAX))
        tensors = {}
        for name, shape in _core.LlamaModel.expected_tensors(config):
            if name.endswith("norm.weight"):
                tensors[name] = np.ones(shape, dtype=np.float32)
            elif name.endswith(".bias"):
                tensors[name] = np.zeros(shape, dtype=np.float32)
            else:
                tensors[name] = rng.normal(0.0, 0.02, size=shape).astype(np.float32)
        model = cls(_core.LlamaModel.from_tensors(config, tensors, check_dtype("weights_dtype", weights_dtype)))
        model._fingerprint = weights_fingerprint(tensors, model.weights_dtype)
        return model

    @property
    def config(self) -> LlamaConfig:
        return self._core.config

    @with_generation_options(exclude=("num_return_sequences", "num_beams", "return_dict_in_generate"))
    def chat(self, messages: List[dict], max_new_tokens: Optional[int] = 256, **options) -> str:
        """The assistant's reply to a conversation ([{"role": "user", "content": "..."}, ...]), rendered through
        the model's chat template with the generation prompt. Returns the reply text only, without special
        tokens.

        Args:
            messages: [{"role": "system" | "user" | "assistant", "content": str}, ...].
            max_new_tokens: at most this many tokens of reply (default 256); the generation keywords below too.

        Returns:
            The reply's text.

        Raises:
            ValueError: a tokenizer without a chat template, a conversation longer than n_ctx, bad options.
            TypeError: messages that are not dicts of str, an unknown keyword."""
        config = resolve("chat", max_new_tokens, options,
                         exclude=("num_return_sequences", "num_beams", "return_dict_in_generate"))
        ids = self.chat_ids(messages)
        out = self._generate([ids], config)[0]
        return self.tokenizer.decode(out[len(ids):], skip_special_tokens=True)

    def chat_ids(self, messages: List[dict]) -> List[int]:
        """The conversation's prompt ids, as transformers' apply_chat_template(add_generation_prompt=True) gives.

        Raises:
            ValueError: the tokenizer has no chat template (use generate() with plain text)."""
        tok = self._need_tokenizer()
        if not tok.chat_template:
            raise ValueError("this model's tokenizer has no chat template; use generate() with plain text")
        text = render_chat(tok.chat_template, messages, add_generation_prompt=True, bos_token=tok.bos_token or "",
                           eos_token=tok.eos_token or "")
        return tok.encode(text)

    def __repr__(self) -> str:
        return f"Llama({self.config!r})"
