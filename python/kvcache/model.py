"""GPT2: the GPT-2 family on the engine: loading Hugging Face checkpoints, random init, saving. Generation, streaming
and forward over a KV cache are CausalLM's (causal_lm.py)."""

from __future__ import annotations

import os
from typing import Optional, Union

from . import _core
from ._core import GPT2Config
from .arguments import SEED_MAX, check_dtype, check_int
from .causal_lm import CausalLM
from .checkpoint import CONFIG_NAME, WEIGHTS_NAME, read_config, resolve, save_checkpoint
from .tokenizer import GPT2Tokenizer

GPT2_VOCAB_SIZE = 50257


class GPT2(CausalLM):
    """A GPT-2 model on the C++ engine. Make one with from_pretrained() or from_config()."""

    def __init__(self, core: _core.Model, tokenizer: Optional[GPT2Tokenizer] = None,
                 eos_token_id: Optional[int] = 50256):
        super().__init__(core, tokenizer, eos_token_id)

    # ---- construction -------------------------------------------------------------------------------------------
    @classmethod
    def from_pretrained(cls, name_or_path: Union[str, os.PathLike], weights_dtype: str = "float32") -> "GPT2":
        """Load a Hugging Face GPT-2 checkpoint: a directory with config.json + model.safetensors (+ vocab.json,
        merges.txt), or a model name found in the local Hugging Face cache (downloaded only when huggingface_hub
        is installed and online).

        weights_dtype: how the matrices are stored for computing: "float32" (exact), "bfloat16" (half the bytes
        per decoded token) or "int8" (a quarter, one scale per output channel). Activations and all sums stay
        float32 (the KV cache too, unless new_cache / generate ask for 16 bits); decode is memory-bound, so fewer
        bytes are faster."""
        weights_dtype = check_dtype("weights_dtype", weights_dtype)
        directory = resolve(name_or_path)
        config_path = os.path.join(directory, CONFIG_NAME)
        config, settings = read_config(config_path)
        weights_path = os.path.join(directory, WEIGHTS_NAME)
        core = _core.Model.load(weights_path, config, weights_dtype)
        if not settings.tie_word_embeddings and core.tied:
            raise ValueError(f"{config_path}: tie_word_embeddings is false, but {weights_path} has no "
                             f"lm_head.weight to use instead of the tied embeddings")
        tokenizer = GPT2Tokenizer.from_dir(directory)
        if tokenizer is None and config.n_vocab == GPT2_VOCAB_SIZE:
            tokenizer = GPT2Tokenizer.default()  # the standard GPT-2 vocabulary
        if tokenizer is not None and tokenizer.vocab_size < config.n_vocab:
            raise ValueError(f"the tokenizer in {directory} has {tokenizer.vocab_size} tokens, fewer than the model's "
                             f"vocab_size={config.n_vocab}: text could not hold every id the model produces (remove "
                             f"the tokenizer files to work with ids alone)")
        return cls(core, tokenizer, settings.eos_token_id)

    @classmethod
    def from_config(cls, config: GPT2Config, seed: int = 0, weights_dtype: str = "float32") -> "GPT2":
        """A randomly initialised model, as GPT-2 initialises (normal, std 0.02; residual projections scaled)."""
        if not isinstance(config, GPT2Config):
            raise TypeError(f"config must be a GPT2Config, got {type(config).__name__}")
        core = _core.Model.random(config, check_int("seed", seed, 0, SEED_MAX),
                                  check_dtype("weights_dtype", weights_dtype))
        # GPT-2's tokenizer only for GPT-2's vocabulary: with a padded one (50304) generated text could hold ids the
        # tokenizer does not have; such a model works with ids
        return cls(core, GPT2Tokenizer.default() if config.n_vocab == GPT2_VOCAB_SIZE else None)

    def save_pretrained(self, directory: Union[str, os.PathLike]) -> None:
        """Write config.json + model.safetensors (+ tokenizer files): transformers' from_pretrained reads it. Tokenizer
        files already in the directory that are not this model's (from an earlier save) are removed, so that
        neither we nor transformers load them as its tokenizer."""
        if not isinstance(directory, (str, os.PathLike)) or isinstance(os.fspath(directory), bytes):
            raise TypeError(f"directory must be a str or os.PathLike of str, got {type(directory).__name__}")
        save_checkpoint(os.fspath(directory), self.config, self._core.state_dict(), self._core.tied,
                        self.eos_token_id, self.tokenizer.source_dir if self.tokenizer else None)

    @property
    def weights_nbytes(self) -> int:
        """Bytes one decode step reads: the matrices in weights_dtype, embeddings, biases and norms in float32."""
        return self._core.weights_nbytes

    def _fingerprint_tensors(self):
        return self._core.state_dict()

    def state_dict(self) -> dict:
        """Read-only NumPy views of every parameter, by Hugging Face name (without the "transformer." prefix)."""
        return self._core.state_dict()

    def __repr__(self) -> str:
        return f"GPT2({self.config!r})"
