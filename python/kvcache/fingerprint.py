"""A digest of a model's weights: what a saved session records, so that only the very model that computed its keys
and values continues it. Every parameter's name and shape, and 4096 of its values spread over the whole tensor:
two checkpoints that differ only in values no sample hits would share a digest, which a change in training, seed,
fine-tuning or precision does not do. Costs milliseconds where hashing every byte of a model costs a second."""

from __future__ import annotations

import hashlib
from typing import Mapping

import numpy as np

_SAMPLES = 4096


def weights_fingerprint(tensors: Mapping[str, np.ndarray], weights_dtype: str) -> str:
    digest = hashlib.blake2b(digest_size=16)
    digest.update(f"weights_dtype={weights_dtype}\n".encode())
    for name in sorted(tensors):
        array = np.asarray(tensors[name])
        digest.update(f"{name}:{array.shape}:{array.dtype}\n".encode())
        flat = array.reshape(-1)
        if flat.size:
            picks = np.linspace(0, flat.size - 1, min(flat.size, _SAMPLES)).astype(np.int64)
            digest.update(np.ascontiguousarray(flat[picks]).tobytes())
    return digest.hexdigest()
