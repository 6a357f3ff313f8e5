"""kvcache: GPT-2 inference in C++ with a contiguous, preallocated KV cache.

    from kvcache import GPT2
    model = GPT2.from_pretrained("path/to/gpt2")
    print(model.generate("Once upon a time", max_new_tokens=50))
"""

from ._core import GPT2Config, KVCache, get_num_threads, set_num_threads
from .model import GPT2
from .sampling import sample
from .tokenizer import GPT2Tokenizer

__all__ = ["GPT2", "GPT2Config", "GPT2Tokenizer", "KVCache", "get_num_threads", "sample", "set_num_threads"]
__version__ = "0.1.0"
