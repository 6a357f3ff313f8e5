"""GPT2: the GPT-2 family on the engine: loading Hugging Face checkpoints, random init, saving, and the encoder
states of a decoder with cross-attention (add_cross_attention). Generation, streaming and forward over a KV cache are
CausalLM's (causal_lm.py)."""

from __future__ import annotations

import os
from typing import Optional, Sequence, Union

import numpy as np

from . import _core
from ._core import GPT2Config, KVCache
from .arguments import SEED_MAX, check_dtype, check_int
from .causal_lm import CausalLM
from .checkpoint import CONFIG_NAME, read_config, resolve, save_checkpoint
from .checkpoint_files import weight_files
from .token_ids import id_matrix
from .tokenizer import GPT2Tokenizer

GPT2_VOCAB_SIZE = 50257

NEEDS_ENCODER_STATES = ("this GPT-2 checkpoint has cross-attention (add_cross_attention=True): pass "
                        "encoder_hidden_states")
NO_CROSS_ATTENTION = ("this GPT-2 checkpoint has no cross-attention (add_cross_attention=False): it takes no "
                      "encoder_hidden_states")


class GPT2(CausalLM):
    """A GPT-2 model on the C++ engine. Make one with from_pretrained() or from_config()."""

    def __init__(self, core: _core.Model, tokenizer: Optional[GPT2Tokenizer] = None,
                 eos_token_id: Optional[int] = 50256, pad_token_id: Optional[int] = None):
        super().__init__(core, tokenizer, eos_token_id, pad_token_id)

    # ---- construction -------------------------------------------------------------------------------------------
    @classmethod
    def from_pretrained(cls, name_or_path: Union[str, os.PathLike], weights_dtype: str = "float32") -> "GPT2":
        """Load a Hugging Face GPT-2 checkpoint: a directory with config.json + model.safetensors, or the shards
        model.safetensors.index.json lists (+ vocab.json, merges.txt); a file of such a directory (config.json,
        model.safetensors) for the directory; or a model name found in the local Hugging Face cache (downloaded only
        when huggingface_hub is installed and online).

        weights_dtype: how the matrices are stored for computing: "float32" (exact), "bfloat16" or "float16" (half
        the bytes per decoded token; float16 keeps 3 more bits but only values within +-65504: a checkpoint with
        a matrix value beyond is refused, ValueError) or "int8" (a quarter, one scale per output channel).
        Activations and all sums stay float32 (the KV cache too, unless new_cache / generate ask for 16 bits); decode is memory-bound, so fewer
        bytes are faster.

        Raises:
            FileNotFoundError: no such directory, config.json or weights file; a name neither cached nor
                downloadable.
            ValueError: PyTorch weights only (pytorch_model.bin; the message says how to convert them), a file that
                is not a checkpoint's, a config or tensors we would compute differently, a malformed file."""
        weights_dtype = check_dtype("weights_dtype", weights_dtype)
        directory = resolve(name_or_path)
        config_path = os.path.join(directory, CONFIG_NAME)
        config, settings = read_config(config_path)
        weights_paths = weight_files(directory, "GPT2LMHeadModel")
        core = _core.Model.load(weights_paths, config, weights_dtype)
        if not settings.tie_word_embeddings and core.tied:
            raise ValueError(f"{config_path}: tie_word_embeddings is false, but {', '.join(weights_paths)} has no "
                             f"lm_head.weight to use instead of the tied embeddings")
        tokenizer = GPT2Tokenizer.from_dir(directory)
        if tokenizer is None and config.n_vocab == GPT2_VOCAB_SIZE:
            tokenizer = GPT2Tokenizer.default()  # the standard GPT-2 vocabulary
        if tokenizer is not None and tokenizer.vocab_size < config.n_vocab:
            raise ValueError(f"the tokenizer in {directory} has {tokenizer.vocab_size} tokens, fewer than the model's "
                             f"vocab_size={config.n_vocab}: text could not hold every id the model produces (remove "
                             f"the tokenizer files to work with ids alone)")
        return cls(core, tokenizer, settings.eos_token_id, settings.pad_token_id)

    @classmethod
    def from_config(cls, config: GPT2Config, seed: int = 0, weights_dtype: str = "float32") -> "GPT2":
        """A randomly initialised model, as GPT-2 initialises (normal, std 0.02; residual projections scaled).

        Args:
            config: the shape (kvcache.GPT2Config; transformers' names are taken too).
            seed: the same seed gives the same weights.
            weights_dtype: "float32", "bfloat16", "float16" or "int8", as from_pretrained.

        Raises:
            TypeError: config is not a GPT2Config. ValueError: a seed outside [0, 2**64), an unknown weights_dtype."""
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
        neither we nor transformers load them as its tokenizer.

        Args:
            directory: created if missing.

        Raises:
            TypeError: directory is not a str or os.PathLike. OSError: it cannot be written."""
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

    # ---- cross-attention ----------------------------------------------------------------------------------------
    def forward(self, tokens, cache: Optional[KVCache] = None, encoder_hidden_states=None, *,
                rows: Optional[Sequence[int]] = None, logits: str = "all") -> np.ndarray:
        """tokens (B, T) -> logits (B, T, n_vocab) float32, as CausalLM.forward. A model with cross-attention
        (config.add_cross_attention) also attends over encoder states: encoder_hidden_states (B, S, n_embd), a NumPy
        array or torch tensor of floats, one encoder sequence per row. With a cache they are projected once into its
        cross-attention keys and values (replacing any there), and later calls over the cache may omit them, as
        transformers' EncoderDecoderCache reuses them.

        Raises:
            ValueError: encoder states for a model without cross-attention, none for one with it (and no cache holding
                them), a batch other than the tokens'; and what CausalLM.forward raises."""
        cross = self.config.add_cross_attention
        if encoder_hidden_states is None:
            if cross and (cache is None or (isinstance(cache, KVCache) and cache.cross_len == 0)):
                raise ValueError(NEEDS_ENCODER_STATES)
            return super().forward(tokens, cache, rows=rows, logits=logits)
        if not cross:
            raise ValueError(NO_CROSS_ATTENTION)
        if cache is not None and not isinstance(cache, KVCache):
            raise TypeError(f"cache must be a KVCache, got {type(cache).__name__}")
        ids = id_matrix(tokens)
        # tokens the engine would refuse (not integers, not 2-D, empty) reach it as they are, for its message
        if ids.ndim == 2 and ids.size > 0 and ids.dtype.kind in "iu":
            batch, length = ids.shape
            states = _as_encoder_states(encoder_hidden_states)
            if states.shape[0] != batch:
                raise ValueError(f"encoder_hidden_states has batch {states.shape[0]}, the tokens {batch}: one encoder "
                                 f"sequence per row")
            if cache is None:  # a throwaway cache for this call, as the engine makes without one
                if length > self.config.n_ctx:
                    raise ValueError(f"sequence of {length} tokens is longer than n_ctx={self.config.n_ctx}")
                cache = self._core.new_cache(batch, length, "float32")
            self._set_encoder_states(cache, states)
        return super().forward(ids, cache, rows=rows, logits=logits)

    __call__ = forward

    def _set_encoder_states(self, cache: KVCache, encoder_hidden_states) -> None:
        """Projects encoder states (B, S, n_embd) once into the cache's cross-attention keys and values (every layer's
        crossattention.c_attn), replacing any there: the cache's B rows then each attend over their S positions.
        Generation calls this on its cache. Raises TypeError / ValueError naming what is wrong: not a float array or
        tensor, not 3-D, a width other than n_embd, a batch other than the cache's, no position, a value that is not
        finite (in float32), or a model without cross-attention."""
        if not self.config.add_cross_attention:
            raise ValueError(NO_CROSS_ATTENTION)
        if not isinstance(cache, KVCache):
            raise TypeError(f"cache must be a KVCache, got {type(cache).__name__}")
        states = _as_encoder_states(encoder_hidden_states)
        batch, positions, width = states.shape
        if width != self.config.n_embd:
            raise ValueError(f"encoder_hidden_states has width {width}, the model's n_embd is {self.config.n_embd} "
                             f"(project the encoder's states to n_embd first)")
        if batch != cache.batch_size:
            raise ValueError(f"encoder_hidden_states has batch {batch}, the cache's batch_size is "
                             f"{cache.batch_size}: one encoder sequence per cache row")
        if positions < 1:
            raise ValueError("encoder_hidden_states has no encoder position (shape "
                             f"{tuple(states.shape)}); give at least one")
        bad = ~np.isfinite(states)
        if bad.any():
            row, position, channel = (int(i) for i in np.argwhere(bad)[0])
            raise ValueError(f"encoder_hidden_states must be finite: {int(bad.sum())} values are nan or inf in "
                             f"float32, the first at [{row}, {position}, {channel}]")
        self._core.set_encoder_states(cache, states)

    def state_dict(self) -> dict:
        """Read-only NumPy views of every parameter, by Hugging Face name (without the "transformer." prefix)."""
        return self._core.state_dict()

    def __repr__(self) -> str:
        return f"GPT2({self.config!r})"


def _as_encoder_states(states) -> np.ndarray:
    """Encoder states as a C-contiguous float32 (B, S, C) NumPy array: from a NumPy array or a torch tensor of any
    float dtype (a torch tensor is detached and moved to the CPU). TypeError / ValueError for anything else."""
    if type(states).__module__.split(".")[0] == "torch" and hasattr(states, "is_floating_point"):
        if not states.is_floating_point():
            raise TypeError(f"encoder_hidden_states must hold floats, got a tensor of {states.dtype}")
        states = states.detach().cpu().float().numpy()
    if not isinstance(states, np.ndarray):
        raise TypeError(f"encoder_hidden_states must be a NumPy array or a torch tensor, got {type(states).__name__}")
    if states.dtype.kind != "f":
        raise TypeError(f"encoder_hidden_states must hold floats, got dtype {states.dtype}")
    if states.ndim != 3:
        raise ValueError(f"encoder_hidden_states must be 3-D (batch, encoder positions, n_embd), got "
                         f"{states.ndim} dimensions (shape {states.shape})")
    with np.errstate(over="ignore"):  # float64 beyond float32's range becomes inf, refused as not finite
        return np.ascontiguousarray(states, dtype=np.float32)
