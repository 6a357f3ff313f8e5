"""Checks of the public API's arguments: a wrong type is a TypeError, a value out of range a ValueError, each naming
the argument and the value it got, before anything reaches the C++ core."""

from __future__ import annotations

import argparse
import math
from contextlib import contextmanager
from typing import Iterator, Optional

import numpy as np

from ._core import MAX_THREADS

INT32_MAX = 2**31 - 1
SEED_MAX = 2**64 - 1
_FLOAT32_MAX = float(np.finfo(np.float32).max)


def check_int(name: str, value, minimum: Optional[int] = None, maximum: Optional[int] = INT32_MAX) -> int:
    """An int within the range the C++ side takes (int32 unless told otherwise; None: no upper bound)."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"{name} must be an int, got {type(value).__name__} {value!r}")
    if minimum is not None and value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value}")
    if maximum is not None and value > maximum:
        raise ValueError(f"{name} must be <= {maximum}, got {value}")
    return int(value)


def check_token_id(value, size: int, *, where: str = "", vocabulary: str = "the vocabulary") -> int:
    """A token id in [0, size): checked in Python, since one beyond int32 would never reach the core's own check."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"token ids must be ints, got {type(value).__name__} {value!r}")
    if not 0 <= value < size:
        raise ValueError(f"token id {value}{where} is outside {vocabulary} [0, {size})")
    return int(value)


def check_float(name: str, value) -> float:
    """A real number that float32 holds (the core's type): 1e39 would become inf there and be reported as such, and
    1e-50 would become 0."""
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise TypeError(f"{name} must be a number, got {type(value).__name__} {value!r}")
    value = float(value)
    if math.isfinite(value) and abs(value) > _FLOAT32_MAX:
        raise ValueError(f"{name} must fit a float32 (|x| <= {_FLOAT32_MAX:.4g}), got {value!r}")
    if value != 0.0 and np.float32(value) == 0.0:  # temperature 1e-50 would turn into 0 there: greedy, silently
        raise ValueError(f"{name} must fit a float32 (it rounds {value!r} to 0)")
    return value


def check_bool(name: str, value) -> bool:
    if not isinstance(value, (bool, np.bool_)):
        raise TypeError(f"{name} must be a bool, got {type(value).__name__} {value!r}")
    return bool(value)


def check_seed(value) -> Optional[int]:
    """None (a fresh seed) or an int in [0, 2**64)."""
    return None if value is None else check_int("seed", value, 0, SEED_MAX)


def positive_int(text: str) -> int:
    """An argparse type: a count of at least 1, so that a command line fails at its parsing, with its usage."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


def thread_count(text: str) -> int:
    """An argparse type: a thread count the core takes (1 to its MAX_THREADS)."""
    value = positive_int(text)
    if value > MAX_THREADS:
        raise argparse.ArgumentTypeError(f"must be <= {MAX_THREADS}, got {value}")
    return value


@contextmanager
def usage_errors(parser: argparse.ArgumentParser) -> Iterator[None]:
    """Bad input named on a command line (a missing or malformed checkpoint, a length beyond the context) ends as a
    usage error: the usage, one line naming the problem, exit status 2; not a traceback. Only around the steps that
    read what the user named: anywhere else a traceback is a bug's, and should be seen."""
    try:
        yield
    except (OSError, ValueError, TypeError) as e:
        parser.error(str(e))


def check_dtype(name: str, value) -> str:
    """A dtype name as a str (np.float16 and np.dtype("float16") accepted too); the core rejects unknown names."""
    if isinstance(value, str):
        return value
    if value is None:
        raise TypeError(f"{name} must be a dtype name such as 'float16', got None")
    try:
        return np.dtype(value).name
    except TypeError:
        raise TypeError(f"{name} must be a dtype name such as 'float16', got {type(value).__name__} {value!r}") from None
