"""kvcache.sample: the engine's sampler on logits from anywhere, with the argument checks of generate()."""

from __future__ import annotations

from typing import List, Optional, Union

import numpy as np

from . import _core
from .arguments import check_bool, check_float, check_int, check_seed


def sample(logits, *, temperature: float = 1.0, top_k: int = 0, top_p: float = 1.0, min_p: float = 0.0,
           typical_p: float = 1.0, seed: Optional[int] = None, do_sample: bool = True) -> Union[int, List[int]]:
    """Draw token ids with the engine's sampler (temperature, then top-k, top-p, min-p and typical-p), as generate()
    does.

    logits: (vocab) -> one id, or (rows, vocab) -> one id per row; any real numbers (a list too), used as float32.
    A NaN logit is a ValueError, and so is sampling where every logit is -inf. seed: None draws a fresh one.

    Args:
        temperature, top_k, top_p, min_p, typical_p: as generate()'s (docs/generation.md).
        do_sample: False gives the argmax (the first of tied largest).

    Returns:
        An int for 1-D logits, a list of ints (one per row) for 2-D.

    Raises:
        TypeError: logits that are not real numbers, an option of the wrong type.
        ValueError: logits not 1-D or 2-D, or empty; a NaN; all -inf; an option out of range."""
    values = np.asarray(logits)
    if values.dtype.kind not in "fiu":
        raise TypeError(f"logits must be real numbers, got dtype {values.dtype}")
    return _core.sample(values, temperature=check_float("temperature", temperature), top_k=check_int("top_k", top_k),
                        top_p=check_float("top_p", top_p), min_p=check_float("min_p", min_p),
                        typical_p=check_float("typical_p", typical_p), seed=check_seed(seed),
                        do_sample=check_bool("do_sample", do_sample))
