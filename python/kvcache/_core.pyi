"""Type stubs of kvcache._core, written by tools/write_core_stub.py (pybind11-stubgen, with the two config
constructors spelled out); tests/test_core_stub.py checks that every public name of the module is here."""

from __future__ import annotations
import collections.abc
import numpy
import numpy.typing
import typing
__all__: list[str] = ['CausalLM', 'GPT2Config', 'Generator', 'KVCache', 'LlamaConfig', 'LlamaModel', 'MAX_THREADS', 'Model', 'filtered_scores', 'get_num_threads', 'read_safetensors', 'safetensors_names', 'sample', 'set_num_threads']
class GPT2Config:
    """
    Shape of a GPT-2 family model (names of Hugging Face's config.json).
    """
    @staticmethod
    def __new__(*args, **kwargs):
        """
        (*args, **kwargs) -> None
        """
    def __eq__(self, arg0: GPT2Config) -> bool:
        ...
    def __hash__(self) -> int:
        ...
    def __init__(self, *, n_vocab: int = 50257, n_ctx: int = 1024, n_embd: int = 768, n_head: int = 12,
                 n_layer: int = 12, eps: float = 1e-05, add_cross_attention: bool = False,
                 vocab_size: int | None = None, n_positions: int | None = None,
                 max_position_embeddings: int | None = None, hidden_size: int | None = None,
                 num_attention_heads: int | None = None, num_hidden_layers: int | None = None,
                 layer_norm_epsilon: float | None = None) -> None:
        """
        GPT2Config(*, n_vocab=50257, n_ctx=1024, n_embd=768, n_head=12, n_layer=12, eps=1e-5, add_cross_attention=False), keywords only. transformers' names are taken too: vocab_size, n_positions (or max_position_embeddings), hidden_size, num_attention_heads, num_hidden_layers, layer_norm_epsilon; one field under two names must have one value.
        """
    def __reduce__(self) -> tuple[typing.Any, tuple]:
        ...
    def __repr__(self) -> str:
        ...
    @property
    def add_cross_attention(self) -> bool:
        """
        a cross-attention block in every layer, over encoder states (encoder-decoder decoders)
        """
    @property
    def eps(self) -> float:
        ...
    @property
    def head_dim(self) -> int:
        ...
    @property
    def n_ctx(self) -> int:
        ...
    @property
    def n_embd(self) -> int:
        ...
    @property
    def n_head(self) -> int:
        ...
    @property
    def n_layer(self) -> int:
        ...
    @property
    def n_vocab(self) -> int:
        ...
class LlamaConfig:
    """
    Shape of a LLaMA-family model (n_kv_head < n_head: grouped-query attention).
    """
    @staticmethod
    def __new__(*args, **kwargs):
        """
        (*args, **kwargs) -> None
        """
    def __init__(self, *, n_vocab: int = 32000, n_ctx: int = 2048, n_embd: int = 4096, n_head: int = 32,
                 n_kv_head: int | None = None, n_layer: int = 32, head_dim: int | None = None, n_ff: int = 11008,
                 eps: float = 1e-06, rope_theta: float = 10000.0, rope_scaling: dict | None = None,
                 attention_bias: bool = False, mlp_bias: bool = False, tie_word_embeddings: bool = False,
                 vocab_size: int | None = None, max_position_embeddings: int | None = None,
                 hidden_size: int | None = None, num_attention_heads: int | None = None,
                 num_key_value_heads: int | None = None, num_hidden_layers: int | None = None,
                 intermediate_size: int | None = None, rms_norm_eps: float | None = None) -> None:
        """
        LlamaConfig(*, n_vocab=32000, n_ctx=2048, n_embd=4096, n_head=32, n_kv_head=None (= n_head), n_layer=32, head_dim=None (= n_embd / n_head), n_ff=11008, eps=1e-6, rope_theta=10000.0, rope_scaling=None, attention_bias=False, mlp_bias=False, tie_word_embeddings=False), keywords only. transformers' names are taken too: vocab_size, max_position_embeddings, hidden_size, num_attention_heads, num_key_value_heads, num_hidden_layers, intermediate_size, rms_norm_eps; one field under two names must have one value.
        """
    def __reduce__(self) -> tuple[typing.Any, tuple]:
        ...
    def __repr__(self) -> str:
        ...
    @property
    def attention_bias(self) -> bool:
        ...
    @property
    def eps(self) -> float:
        ...
    @property
    def head_dim(self) -> int:
        ...
    @property
    def mlp_bias(self) -> bool:
        ...
    @property
    def n_ctx(self) -> int:
        ...
    @property
    def n_embd(self) -> int:
        ...
    @property
    def n_ff(self) -> int:
        ...
    @property
    def n_head(self) -> int:
        ...
    @property
    def n_kv_head(self) -> int:
        ...
    @property
    def n_layer(self) -> int:
        ...
    @property
    def n_vocab(self) -> int:
        ...
    @property
    def rope_inv_freq(self) -> list[float]:
        ...
    @property
    def rope_scaling(self) -> typing.Any:
        ...
    @property
    def rope_theta(self) -> float:
        ...
    @property
    def tie_word_embeddings(self) -> bool:
        ...
class KVCache:
    """
    Contiguous preallocated KV cache, (layers, 2, batch, kv_heads, max_seq_len, head_dim) of float32, float16 or bfloat16. Make one with model.new_cache().
    """
    @staticmethod
    def __new__(*args, **kwargs):
        """
        (*args, **kwargs) -> None
        """
    def __array__(self, dtype: typing.Any = None, copy: typing.Any = None) -> typing.Any:
        """
        The whole buffer (layers, 2, batch, n_kv_head, max_seq_len, head_dim); positions past a row's length are not its own (zeros or stale). bfloat16 caches give a float32 copy.
        """
    def __copy__(self) -> KVCache:
        ...
    def __deepcopy__(self, memo: typing.Any) -> KVCache:
        ...
    def __reduce__(self) -> typing.Any:
        ...
    def __repr__(self) -> str:
        ...
    def append(self, row: typing.Any, positions: numpy.ndarray) -> None:
        """
        Append positions packed as read() gives them at the row's end.
        """
    def copy(self) -> KVCache:
        """
        A new cache holding the same positions (same model, size and dtype).
        """
    def copy_row(self, src: typing.Any, dst_row: typing.Any, dst: KVCache = None) -> None:
        """
        Row dst_row (of this cache, or of dst: a cache of the same model and dtype) becomes a copy of row src's filled positions. IndexError for a row outside its cache; ValueError for another model's or dtype's cache, or one too short to hold the positions.
        """
    def crop(self, max_length: typing.Any, row: typing.Any = None) -> None:
        """
        Keep only the first max_length positions of every row (or of one row); shorter rows are unchanged. ValueError for max_length < 0, IndexError for a row outside the batch.
        """
    def evicted(self, row: typing.Any = 0) -> int:
        """
        tokens this row has evicted since it was last reset (always 0 for a dense cache)
        """
    def get_max_cache_shape(self) -> int:
        """
        positions each row can hold (transformers' name)
        """
    def get_seq_length(self, row: typing.Any = 0) -> int:
        """
        positions row holds (transformers' name); IndexError for a row outside the batch
        """
    def keys(self, layer: typing.Any, row: typing.Any = None) -> typing.Any:
        """
        Read-only view of a layer's keys: (batch, n_kv_head, len, head_dim), len the longest row's length (positions past a shorter row's length are not its own), or (n_kv_head, len, head_dim) of one row. float32 and float16 caches give views of the live buffer; bfloat16 ones a float32 copy.
        """
    def read(self, row: typing.Any, start: typing.Any, n: typing.Any) -> numpy.ndarray:
        """
        Positions [start, start + n) of a row as a new array (layers, 2, n_kv_head, n, head_dim): float32, float16, or uint16 holding bfloat16's bits. IndexError for a row outside the batch; ValueError for positions the row does not hold.
        """
    def reset(self, row: typing.Any = None) -> None:
        """
        Forget every position (of one row, or all); the memory is kept for reuse. IndexError for a row outside the batch.
        """
    def values(self, layer: typing.Any, row: typing.Any = None) -> typing.Any:
        """
        As keys(), for the values.
        """
    @property
    def batch_size(self) -> int:
        """
        rows (sequences)
        """
    @property
    def cross_len(self) -> int:
        """
        encoder positions the cross-attention attends over (S); 0 without encoder states
        """
    @property
    def cross_nbytes(self) -> int:
        """
        bytes of the cross-attention keys and values: 2 x layers x batch x n_head x encoder positions x head_dim x 4 (float32); 0 without encoder states
        """
    @property
    def dtype(self) -> str:
        """
        how keys and values are stored: 'float32', 'float16' or 'bfloat16'
        """
    @property
    def evict_chunk(self) -> typing.Any:
        """
        positions a full row of a windowed cache evicts at once, or None for a dense cache
        """
    @property
    def head_dim(self) -> int:
        """
        channels per key and value head
        """
    @property
    def max_seq_len(self) -> int:
        """
        positions each row can hold
        """
    @property
    def n_kv_head(self) -> int:
        """
        key/value heads stored per layer
        """
    @property
    def n_layer(self) -> int:
        """
        layers
        """
    @property
    def nbytes(self) -> int:
        """
        2 x layers x batch x n_kv_head x max_seq_len x head_dim x bytes (4 for float32, 2 for 16 bits)
        """
    @property
    def seq_lens(self) -> list[int]:
        """
        positions held by each batch row
        """
    @property
    def shape(self) -> tuple[int, int, int, int, int, int]:
        """
        (layers, 2, batch, n_kv_head, max_seq_len, head_dim): the buffer's layout
        """
    @property
    def sinks(self) -> int:
        """
        first positions of each row never evicted (0 for a dense cache)
        """
    @property
    def window(self) -> typing.Any:
        """
        positions of the sliding window after the sinks, or None for a dense cache
        """
class CausalLM:
    """
    a model family's forward over a KV cache
    """
    @staticmethod
    def __new__(*args, **kwargs):
        """
        (*args, **kwargs) -> None
        """
    def forward(self, tokens: numpy.ndarray, cache: KVCache = None, rows: collections.abc.Sequence[typing.SupportsInt | typing.SupportsIndex] | None = None, last_only: bool = False) -> numpy.typing.NDArray[numpy.float32]:
        ...
    def new_cache(self, batch_size: typing.SupportsInt | typing.SupportsIndex, max_seq_len: typing.SupportsInt | typing.SupportsIndex, dtype: str = 'float32', *, window: typing.SupportsInt | typing.SupportsIndex = 0, sinks: typing.SupportsInt | typing.SupportsIndex = 0, evict_chunk: typing.SupportsInt | typing.SupportsIndex = 1) -> KVCache:
        """
        window = 0: a dense cache; otherwise a sliding window of `window` positions after `sinks` kept ones (window + sinks = max_seq_len), evicting evict_chunk positions at once when a row is full
        """
    @property
    def n_ctx(self) -> int:
        ...
    @property
    def n_vocab(self) -> int:
        ...
    @property
    def weights_nbytes(self) -> int:
        """
        bytes a decode step reads: the matrices in their storage type, norms and biases float32
        """
class LlamaModel(CausalLM):
    """
    LLaMA forward pass over a KV cache
    """
    @staticmethod
    def __new__(*args, **kwargs):
        """
        (*args, **kwargs) -> None
        """
    @staticmethod
    def expected_tensors(config: LlamaConfig) -> list[tuple[str, list[int]]]:
        ...
    @staticmethod
    def from_tensors(config: LlamaConfig, tensors: dict, weights_dtype: str = 'float32') -> LlamaModel:
        """
        Build from float32 arrays named as transformers' LlamaForCausalLM state_dict.
        """
    @property
    def config(self) -> LlamaConfig:
        ...
    @property
    def weights_dtype(self) -> str:
        ...
class Model(CausalLM):
    """
    GPT-2 forward pass over a KV cache
    """
    @staticmethod
    def __new__(*args, **kwargs):
        """
        (*args, **kwargs) -> None
        """
    @staticmethod
    def load(paths: collections.abc.Sequence[str], config: GPT2Config, weights_dtype: str = 'float32') -> Model:
        """
        Load a Hugging Face GPT-2 checkpoint's weights: [model.safetensors], or its shards.
        """
    @staticmethod
    def random(config: GPT2Config, seed: typing.SupportsInt | typing.SupportsIndex = 0, weights_dtype: str = 'float32') -> Model:
        ...
    def set_encoder_states(self, cache: KVCache, encoder_hidden_states: numpy.ndarray) -> None:
        """
        Compute every layer's cross-attention keys and values of encoder states (B, S, n_embd), float32, once, into the cache (replacing any there); forwards over the cache then attend over them.
        """
    def state_dict(self) -> dict:
        ...
    @property
    def config(self) -> GPT2Config:
        ...
    @property
    def parameters_nbytes(self) -> int:
        """
        bytes of all parameters as float32
        """
    @property
    def tied(self) -> bool:
        ...
    @property
    def weights_dtype(self) -> str:
        ...
class Generator:
    """
    Step-by-step decoding: prefill, then one token per row per step.
    """
    @staticmethod
    def __new__(*args, **kwargs):
        """
        (*args, **kwargs) -> None
        """
    def __init__(self, model: CausalLM, prompts: collections.abc.Sequence[collections.abc.Sequence[typing.SupportsInt | typing.SupportsIndex]], *, max_new_tokens: typing.SupportsInt | typing.SupportsIndex, do_sample: bool = False, temperature: typing.SupportsFloat | typing.SupportsIndex = 1.0, top_k: typing.SupportsInt | typing.SupportsIndex = 0, top_p: typing.SupportsFloat | typing.SupportsIndex = 1.0, min_p: typing.SupportsFloat | typing.SupportsIndex = 0.0, typical_p: typing.SupportsFloat | typing.SupportsIndex = 1.0, repetition_penalty: typing.SupportsFloat | typing.SupportsIndex = 1.0, no_repeat_ngram_size: typing.SupportsInt | typing.SupportsIndex = 0, min_new_tokens: typing.SupportsInt | typing.SupportsIndex = 0, eos_token_ids: collections.abc.Sequence[typing.SupportsInt | typing.SupportsIndex] = [], seed: typing.SupportsInt | typing.SupportsIndex = 0, use_cache: bool = True, cache_dtype: str = 'float32', num_return_sequences: typing.SupportsInt | typing.SupportsIndex = 1, keep_scores: bool = False, keep_logits: bool = False, cache: KVCache = None, contexts: collections.abc.Sequence[collections.abc.Sequence[typing.SupportsInt | typing.SupportsIndex]] = []) -> None:
        ...
    def finish_row(self, row: typing.SupportsInt | typing.SupportsIndex) -> None:
        """
        end a row now: it produces nothing more
        """
    def run(self) -> None:
        ...
    def step(self) -> bool:
        ...
    @property
    def cache_nbytes(self) -> int:
        ...
    @property
    def done(self) -> bool:
        ...
    @property
    def last_logits(self) -> numpy.typing.NDArray[numpy.float32]:
        """
        (rows, n_vocab) raw logits of the last step (keep_logits)
        """
    @property
    def last_scores(self) -> numpy.typing.NDArray[numpy.float32]:
        """
        (rows, n_vocab) scores of the last step (keep_scores): what each row's token was chosen from
        """
    @property
    def last_tokens(self) -> list[int]:
        ...
    @property
    def prefilled_tokens(self) -> int:
        """
        tokens the prefill computed: each prompt once, however many rows it fans out to
        """
    @property
    def sequences(self) -> list[list[int]]:
        ...
def filtered_scores(logits: typing.Annotated[numpy.typing.ArrayLike, numpy.float32], *, temperature: typing.SupportsFloat | typing.SupportsIndex = 1.0, top_k: typing.SupportsInt | typing.SupportsIndex = 0, top_p: typing.SupportsFloat | typing.SupportsIndex = 1.0, min_p: typing.SupportsFloat | typing.SupportsIndex = 0.0, typical_p: typing.SupportsFloat | typing.SupportsIndex = 1.0) -> numpy.typing.NDArray[numpy.float32]:
    """
    (rows, vocab) logits -> the scores sampling draws from: logit / temperature, -inf where filtered out.
    """
def get_num_threads() -> int:
    ...
def read_safetensors(path: str) -> dict:
    """
    {name: (dtype name, read-only array of the stored values)}; BF16 values as their uint16 bits.
    """
def safetensors_names(path: str) -> list[str]:
    """
    The names of every tensor of a file (any dtype), its header checked as for reading.
    """
def sample(logits: numpy.ndarray, *, temperature: typing.SupportsFloat | typing.SupportsIndex = 1.0, top_k: typing.SupportsInt | typing.SupportsIndex = 0, top_p: typing.SupportsFloat | typing.SupportsIndex = 1.0, min_p: typing.SupportsFloat | typing.SupportsIndex = 0.0, typical_p: typing.SupportsFloat | typing.SupportsIndex = 1.0, seed: typing.Any = None, do_sample: bool = True) -> typing.Any:
    """
    Draw token ids with the engine's sampler (temperature, then top-k, top-p, min-p, typical-p).
    """
def set_num_threads(n: typing.Any) -> None:
    """
    Threads used by the kernels, 1-256 (default: OMP_NUM_THREADS, else every core).
    """
MAX_THREADS: int = 256
