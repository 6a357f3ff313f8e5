"""Atheris fuzz harness for the GGUF reader (python/kvcache/gguf.py): no input may raise anything but ValueError.

Run ~1M inputs (the corpus directory is created and seeded with small valid files if it is empty):

    nice -n 10 python3 tests/fuzz/fuzz_gguf.py -atheris_runs=1000000 /tmp/gguf_corpus

Any libFuzzer flag works (-max_len=4096, -jobs=..., -artifact_prefix=/tmp/). A crash leaves the input as
crash-<sha1>; replay it with `python3 tests/fuzz/fuzz_gguf.py crash-<sha1>`.

gguf.py is loaded by path as the module "kvcache_gguf", so the harness runs without the compiled package
(kvcache/__init__.py imports the C++ extension). tests/test_gguf_reader.py also calls TestOneInput on random
mutations without atheris, so importing this file must not need atheris.
"""

from __future__ import annotations

import importlib.abc
import importlib.util
import os
import struct
import sys
import warnings
from pathlib import Path

import numpy as np  # imported before instrumentation so only the reader is instrumented

GGUF_PY = Path(__file__).resolve().parents[2] / "python" / "kvcache" / "gguf.py"
MODULE_NAME = "kvcache_gguf"


class _ReaderFinder(importlib.abc.MetaPathFinder):
    """Finds "kvcache_gguf" at GGUF_PY through the normal import system, so atheris's import hook sees it."""

    def find_spec(self, fullname, path, target=None):
        if fullname != MODULE_NAME:
            return None
        return importlib.util.spec_from_file_location(MODULE_NAME, GGUF_PY)


def load_reader():
    if not any(isinstance(f, _ReaderFinder) for f in sys.meta_path):
        sys.meta_path.append(_ReaderFinder())
    import kvcache_gguf  # resolved by _ReaderFinder

    return kvcache_gguf


if __name__ == "__main__":
    import atheris

    with atheris.instrument_imports():
        reader = load_reader()
else:
    reader = load_reader()


def TestOneInput(data: bytes) -> bool:
    """Parse `data`; if it parses, dequantize every tensor. True if it parsed, False if refused with ValueError."""
    try:
        f = reader.parse_gguf(data)
    except ValueError as exc:
        assert str(exc).startswith("<buffer>: "), str(exc)
        return False
    # a file that parsed must be fully readable: nothing at all may be raised from here on
    for name, tensor in f.tensors.items():
        a = f.array(name)
        assert a.dtype == np.float32 and a.shape == tensor.shape, (name, a.dtype, a.shape, tensor)
        assert tensor.offset % f.alignment == 0 and tensor.offset + tensor.nbytes <= len(data), tensor
    f.close()
    return True


# ---------------------------------------------------------------------------------------------------------------------
# seed corpus: small valid files, written with struct so the harness needs nothing but numpy


def _u32(v: int) -> bytes:
    return struct.pack("<I", v)


def _u64(v: int) -> bytes:
    return struct.pack("<Q", v)


def _str(text: str) -> bytes:
    raw = text.encode("utf-8")
    return _u64(len(raw)) + raw


def _kv(key: str, vtype: int, payload: bytes) -> bytes:
    return _str(key) + _u32(vtype) + payload


def build_gguf(kvs, tensors, alignment: int = 32, version: int = 3) -> bytes:
    """A GGUF file from encoded kv pairs and (name, ne, ggml type id, raw bytes) tensors, each aligned."""
    infos, data = b"", b""
    for name, ne, type_id, raw in tensors:
        data += b"\0" * (-len(data) % alignment)
        infos += _str(name) + _u32(len(ne)) + b"".join(_u64(n) for n in ne) + _u32(type_id) + _u64(len(data))
        data += raw
    head = b"GGUF" + _u32(version) + _u64(len(tensors)) + _u64(len(kvs)) + b"".join(kvs) + infos
    return head + b"\0" * (-len(head) % alignment) + data


def seed_files() -> dict:
    rng = np.random.default_rng(0)

    def f16(n):
        return rng.standard_normal(n).astype("<f2").tobytes()

    def block(scales: int, quants: int):
        return f16(scales) + rng.integers(0, 256, quants, dtype=np.uint8).tobytes()

    meta = [
        _kv("general.architecture", 8, _str("llama")),
        _kv("general.alignment", 4, _u32(32)),
        _kv("u8", 0, b"\x07"), _kv("i16", 3, struct.pack("<h", -3)), _kv("f32", 6, struct.pack("<f", 0.5)),
        _kv("flag", 7, b"\x01"), _kv("u64", 10, _u64(2**40)), _kv("f64", 12, struct.pack("<d", 1e-300)),
        _kv("tokens", 9, _u32(8) + _u64(3) + _str("a") + _str("\u00e9") + _str("")),
        _kv("scores", 9, _u32(6) + _u64(2) + struct.pack("<2f", 1.0, -2.0)),
        _kv("nested", 9, _u32(9) + _u64(2) + _u32(5) + _u64(1) + struct.pack("<i", 7) + _u32(7) + _u64(0)),
    ]
    tensors = [
        ("f32", [4, 2], 0, rng.standard_normal(8).astype("<f4").tobytes()),
        ("f16", [3], 1, f16(3)),
        ("bf16", [2, 1, 2], 30, rng.integers(0, 2**16, 4, dtype=np.uint16).astype("<u2").tobytes()),
        ("q8_0", [32, 2], 8, block(1, 32) + block(1, 32)),
        ("q4_0", [64], 2, block(1, 16) + block(1, 16)),
        ("q4_1", [32, 1, 1, 1], 3, block(2, 16)),
    ]
    return {
        "seed_full.gguf": build_gguf(meta, tensors),
        "seed_v2_align64.gguf": build_gguf(meta[:1] + [_kv("general.alignment", 4, _u32(64))], tensors[3:], 64, 2),
        "seed_metadata_only.gguf": build_gguf(meta, []),
        "seed_one_tensor.gguf": build_gguf([], tensors[:1]),
    }


def _corpus_dirs(argv):
    return [a for a in argv[1:] if not a.startswith("-") and not os.path.isfile(a)]


def write_seed_corpus(directory: str) -> None:
    os.makedirs(directory, exist_ok=True)
    if os.listdir(directory):
        return  # keep an existing corpus as it is
    for name, data in seed_files().items():
        Path(directory, name).write_bytes(data)


def main() -> None:
    warnings.simplefilter("error")  # as under pytest (filterwarnings = error), a NumPy warning is a finding
    for data in seed_files().values():
        assert TestOneInput(data), "a seed file did not parse"
    for directory in _corpus_dirs(sys.argv):
        write_seed_corpus(directory)
    atheris.Setup(sys.argv, TestOneInput)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
