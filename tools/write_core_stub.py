"""Writes python/kvcache/_core.pyi, the typing stub of the C++ module, from the installed kvcache._core:

    pip install pybind11-stubgen && python tools/write_core_stub.py

pybind11-stubgen writes the stub; the two config constructors, which take keywords under two names each (a pybind11
kwargs constructor, so the generator sees only *args, **kwargs), are then spelled out. tests/test_core_stub.py fails
when a binding changes and this was not run."""

from __future__ import annotations

import subprocess
import sys
import tempfile
from pathlib import Path

STUB = Path(__file__).resolve().parents[1] / "python" / "kvcache" / "_core.pyi"
HEADER = ('"""Type stubs of kvcache._core, written by tools/write_core_stub.py (pybind11-stubgen, with the two config\n'
          'constructors spelled out); tests/test_core_stub.py checks that every public name of the module is here."""\n')
GPT2_INIT = '''    def __init__(self, *, n_vocab: int = 50257, n_ctx: int = 1024, n_embd: int = 768, n_head: int = 12,
                 n_layer: int = 12, eps: float = 1e-05, add_cross_attention: bool = False,
                 vocab_size: int | None = None, n_positions: int | None = None,
                 max_position_embeddings: int | None = None, hidden_size: int | None = None,
                 num_attention_heads: int | None = None, num_hidden_layers: int | None = None,
                 layer_norm_epsilon: float | None = None) -> None:'''
LLAMA_INIT = '''    def __init__(self, *, n_vocab: int = 32000, n_ctx: int = 2048, n_embd: int = 4096, n_head: int = 32,
                 n_kv_head: int | None = None, n_layer: int = 32, head_dim: int | None = None, n_ff: int = 11008,
                 eps: float = 1e-06, rope_theta: float = 10000.0, rope_scaling: dict | None = None,
                 attention_bias: bool = False, mlp_bias: bool = False, tie_word_embeddings: bool = False,
                 vocab_size: int | None = None, max_position_embeddings: int | None = None,
                 hidden_size: int | None = None, num_attention_heads: int | None = None,
                 num_key_value_heads: int | None = None, num_hidden_layers: int | None = None,
                 intermediate_size: int | None = None, rms_norm_eps: float | None = None) -> None:'''


def main() -> None:
    with tempfile.TemporaryDirectory() as out:
        subprocess.run([sys.executable, "-m", "pybind11_stubgen", "kvcache._core", "-o", out], check=True)
        text = (Path(out) / "kvcache" / "_core.pyi").read_text()
    parts = text.split("    def __init__(self, *args, **kwargs) -> None:")
    if len(parts) != 3:
        raise SystemExit(f"expected the two config constructors as (*args, **kwargs), found {len(parts) - 1}")
    text = parts[0] + GPT2_INIT + parts[1] + LLAMA_INIT + parts[2]
    STUB.write_text(HEADER + text.split('"""', 2)[2])


if __name__ == "__main__":
    main()
