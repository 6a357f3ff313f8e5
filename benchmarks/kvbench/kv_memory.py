"""KV-cache memory: the model shapes it depends on, the formula for its bytes, and the formula set against what
a cache of that shape really allocates (cache.nbytes and the growth of the process RSS)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence, Tuple, Union

from tqdm import tqdm

from kvcache._core import GPT2Config
from kvcache.arguments import check_int
from kvcache.model import GPT2

from .process_memory import release_free_memory, rss_bytes

# ---- model shapes and the formula -----------------------------------------------------------------------------

DTYPE_BYTES = {"float32": 4, "float16": 2, "bfloat16": 2, "int8": 1}


@dataclass(frozen=True)
class ModelShape:
    """The three numbers the KV cache depends on (the vocabulary and the MLP do not matter to it)."""
    name: str
    n_layer: int
    n_head: int
    head_dim: int

    @property
    def n_embd(self) -> int:
        return self.n_head * self.head_dim

    @property
    def dims(self) -> Tuple[int, int, int]:
        return self.n_layer, self.n_head, self.head_dim


SHAPES: Dict[str, ModelShape] = {s.name: s for s in (
    ModelShape("distilgpt2", 6, 12, 64),
    ModelShape("gpt2", 12, 12, 64),
    ModelShape("gpt2-medium", 24, 16, 64),
    ModelShape("gpt2-large", 36, 20, 64),
    ModelShape("gpt2-xl", 48, 25, 64),
    ModelShape("llama-7b", 32, 32, 128),  # LLaMA-7B's attention shape (no grouped-query attention)
)}


def as_shape(config: Union[str, ModelShape, GPT2Config]) -> ModelShape:
    """A known name ("gpt2", "llama-7b", ...), a ModelShape, or anything with n_layer / n_head / head_dim (a
    GPT2Config); a config named after the known shape it matches, so records say "gpt2" rather than numbers."""
    if isinstance(config, ModelShape):
        return config
    if isinstance(config, str):
        if config not in SHAPES:
            raise ValueError(f"unknown model {config!r}; known: {', '.join(SHAPES)}")
        return SHAPES[config]
    return shape_of(config.n_layer, config.n_head, config.head_dim)


def shape_of(n_layer: int, n_head: int, head_dim: int) -> ModelShape:
    """The known shape with these dimensions, or one named by its numbers ("2L-4H-32D")."""
    dims = (n_layer, n_head, head_dim)
    return next((s for s in SHAPES.values() if s.dims == dims), ModelShape("{}L-{}H-{}D".format(*dims), *dims))


def _dtype_bytes(dtype: str) -> int:
    if dtype not in DTYPE_BYTES:
        raise ValueError(f"unknown dtype {dtype!r}; known: {', '.join(DTYPE_BYTES)}")
    return DTYPE_BYTES[dtype]


def kv_cache_bytes(config, seq_len: int, batch_size: int = 1, dtype: str = "float32") -> int:
    """2 (K and V) x layers x batch x heads x seq_len x head_dim x bytes per value."""
    s = as_shape(config)
    seq_len, batch_size = check_int("seq_len", seq_len, 0, None), check_int("batch_size", batch_size, 1, None)
    return 2 * s.n_layer * batch_size * s.n_head * seq_len * s.head_dim * _dtype_bytes(dtype)


# ---- formula and measurement ------------------------------------------------------------------------------------

@dataclass
class KVMemoryProfile:
    """The formula's bytes for one cache shape, and, when a model of that shape was built, what was measured."""
    model: str
    seq_len: int
    batch_size: int
    dtype: str
    bytes_per_token: int                # one sample, one position, all layers, K and V
    total_bytes: int                    # the formula
    per_layer_bytes: List[int]          # K + V of each layer; they sum to total_bytes
    measured_nbytes: Optional[int] = None      # KVCache.nbytes of a cache of this shape
    measured_rss_bytes: Optional[int] = None   # growth of the process RSS when that cache was allocated


CACHE_DTYPES = ("float32", "float16", "bfloat16")  # what a KVCache can store (new_cache's dtype)


def measure_cache_memory(model: GPT2, batch_size: int, seq_len: int,
                         dtype: str = "float32") -> Tuple[int, Optional[int]]:
    """(cache.nbytes, RSS growth) of a freshly allocated cache. The cache is zero-filled when made, so its pages
    are touched and the RSS shows all of it: the number the formula has to match."""
    release_free_memory()
    before = rss_bytes()
    cache = model.new_cache(batch_size, seq_len, dtype=dtype)
    after = rss_bytes()
    return cache.nbytes, (after - before if before is not None and after is not None else None)


def profile_kv_cache_memory(config, seq_len: int, batch_size: int = 1, dtype: str = "float32",
                            model: Optional[GPT2] = None) -> KVMemoryProfile:
    """Total and per-layer KV-cache bytes from the formula; with `model` (of that shape, and a dtype a cache can
    store: float32, float16 or bfloat16), also the measured cache.nbytes and RSS growth, side by side."""
    shape = as_shape(config if config is not None else model.config)
    total = kv_cache_bytes(shape, seq_len, batch_size, dtype)
    profile = KVMemoryProfile(shape.name, seq_len, batch_size, dtype, kv_cache_bytes(shape, 1, 1, dtype), total,
                              [total // shape.n_layer] * shape.n_layer)
    if model is not None:
        if as_shape(model.config).dims != shape.dims or dtype not in CACHE_DTYPES:
            raise ValueError(f"a measurement needs the model's own shape and a cache dtype "
                             f"({', '.join(CACHE_DTYPES)}); got {shape} {dtype} for {model.config}")
        profile.measured_nbytes, profile.measured_rss_bytes = measure_cache_memory(model, batch_size, seq_len, dtype)
    return profile


MEASURE_VOCAB = 256  # the cache does not depend on the vocabulary; a small one keeps the model built to measure small


def measure_memory_growth(shapes: Sequence[str] = ("distilgpt2", "gpt2", "gpt2-medium"),
                          seq_lens: Sequence[int] = (128, 256, 512, 1024, 2048), batch_size: int = 1,
                          progress: bool = True) -> List[KVMemoryProfile]:
    """Formula and measurement for each shape and length: builds a random model of each shape (n_ctx =
    the longest length, a small vocabulary) and allocates its caches one at a time."""
    profiles = []
    for name in tqdm(shapes, desc="KV memory", disable=not progress):
        s = as_shape(name)
        model = GPT2.from_config(GPT2Config(n_layer=s.n_layer, n_head=s.n_head, n_embd=s.n_embd,
                                            n_ctx=max(seq_lens), n_vocab=MEASURE_VOCAB))
        profiles += [profile_kv_cache_memory(s, n, batch_size, model=model) for n in seq_lens]
        del model
    return profiles
