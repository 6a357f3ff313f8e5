"""Token ids as users pass them: lists, tuples, NumPy arrays and torch tensors (any integer dtype; a tensor is
detached and moved to the CPU), parsed here once for every entry point (generate_ids, forward, decode, sessions). A
padded batch with its attention_mask becomes ragged rows of real tokens (the engine runs each row at its own length,
so pads never enter attention), and the generated rows go back in the form the ids came in: lists for lists, an
array or tensor of the same type, dtype and device for one, shaped (B, T + new) as transformers' generate returns.

torch is never imported here: a tensor is recognised by its type's module and converted with .detach().cpu().numpy().
"""

from __future__ import annotations

from typing import List, NamedTuple, Optional, Tuple

import numpy as np

from .arguments import check_token_id


def is_tensor(value) -> bool:
    """A torch tensor (or subclass, such as a Parameter), recognised without importing torch."""
    return type(value).__module__.split(".")[0] == "torch" and hasattr(value, "detach")


def is_id_array(value) -> bool:
    """A NumPy array or a torch tensor (of ids, or of anything: the parsers check)."""
    return isinstance(value, np.ndarray) or is_tensor(value)


def _tensor_to_numpy(tensor, what: str) -> np.ndarray:
    # before .numpy(): it has no bfloat16, and its error would not say which argument
    if tensor.is_floating_point() or tensor.is_complex():
        raise TypeError(f"{what} must be integers, got a tensor of {tensor.dtype}")
    return tensor.detach().cpu().numpy()


def _as_array(value, what: str) -> Optional[np.ndarray]:
    """A NumPy array for an array or tensor, None for anything else."""
    if isinstance(value, np.ndarray):
        return value
    if is_tensor(value):
        return _tensor_to_numpy(value, what)
    return None


def _check_id_array(ids: np.ndarray) -> None:
    if ids.dtype.kind == "b":
        raise TypeError("token ids must be integers, got dtype bool (True and False are no token ids)")
    if ids.dtype.kind not in "iu":
        raise TypeError(f"token ids must be integers, got dtype {ids.dtype}")


def _row_values(row, p: int) -> list:
    """One prompt of a list of prompts, as a list: a list, tuple, 1-D array or 1-D tensor."""
    array = _as_array(row, "token ids")
    if array is not None:
        if array.ndim != 1:
            raise TypeError(f"prompt {p} must be a list of token ids (rows of ids: every row a list), got "
                            f"{type(row).__name__} {row!r}")
        _check_id_array(array)
        return array.tolist()
    if isinstance(row, (list, tuple)):
        return list(row)
    raise TypeError(f"prompt {p} must be a list of token ids (rows of ids: every row a list), got "
                    f"{type(row).__name__} {row!r}")


def _is_row(value) -> bool:
    return isinstance(value, (list, tuple)) or (is_id_array(value) and value.ndim >= 1)


def _raw_rows(ids) -> Tuple[List[list], bool, Optional[np.ndarray]]:
    """(rows of values as given, whether a single sequence was given, the array form of ids or None); only the
    structure and the array dtype are checked here."""
    array = _as_array(ids, "token ids")
    if array is not None:
        _check_id_array(array)
        if array.ndim == 1:
            return [array.tolist()], True, array
        if array.ndim == 2:
            return array.tolist(), False, array
        raise ValueError(f"token ids must be 1-D (one sequence) or 2-D (batch, seq_len), got {array.ndim} "
                         f"dimensions (shape {tuple(array.shape)})")
    if isinstance(ids, (list, tuple)):
        if len(ids) == 0 or not _is_row(ids[0]):
            return [list(ids)], True, None
        return [_row_values(r, p) for p, r in enumerate(ids)], False, None
    raise TypeError(f"token ids must be a list of ints, a list of lists, a NumPy array or a torch tensor, got "
                    f"{type(ids).__name__}")


def id_list(ids, size: int, *, vocabulary: str = "the vocabulary") -> List[int]:
    """One sequence of ids (a list, tuple, iterable, 1-D array or tensor) as ints in [0, size).

    Raises:
        TypeError: a float or bool dtype, an id that is not an int.
        ValueError: an array that is not 1-D, an id outside [0, size).
    """
    array = _as_array(ids, "token ids")
    if array is not None:
        _check_id_array(array)
        if array.ndim != 1:
            raise ValueError(f"expected one sequence of token ids (1-D), got {array.ndim} dimensions (shape "
                             f"{tuple(array.shape)}); give each row on its own")
        ids = array.tolist()
    return [check_token_id(t, size, vocabulary=vocabulary) for t in ids]


def id_matrix(tokens) -> np.ndarray:
    """forward's tokens as a NumPy array: a tensor moved to the CPU, a list through np.asarray, a 1-D sequence as one
    row. The dtype, the rank, emptiness and the vocabulary are the core's checks (its messages name the value).

    Raises:
        TypeError: a float tensor.
        ValueError: rows of different lengths (one batch of forward is (B, T)).
    """
    array = _as_array(tokens, "token ids")
    if array is None:
        if isinstance(tokens, (list, tuple)) and tokens and all(_is_row(r) for r in tokens):
            lengths = [len(r) for r in tokens]
            if len(set(lengths)) > 1:
                raise ValueError(f"forward takes a (batch, seq_len) block of equal-length rows, got rows of lengths "
                                 f"{lengths}: give a cache and feed each row with rows=[i], or use generate_ids, "
                                 f"which runs prompts of any lengths")
            tokens = [_as_array(r, "token ids") if is_tensor(r) else r for r in tokens]
        array = np.asarray(tokens)
    return array[None, :] if array.ndim == 1 else array


# ---- padded batches --------------------------------------------------------------------------------------------------
def _mask_row(row, p: int) -> list:
    """One row of a list of mask rows, as a list."""
    array = _as_array(row, "attention_mask")
    if array is not None and array.ndim == 1:
        return array.tolist()
    if isinstance(row, (list, tuple)):
        return list(row)
    raise TypeError(f"attention_mask row {p} must be a list of 0 and 1, got {type(row).__name__} {row!r}")


def _mask_rows(mask, ids_rows: List[list], single: bool, ids_array: Optional[np.ndarray]) -> List[list]:
    """attention_mask as rows of 0/1 values, one value per token of ids_rows, checked."""
    array = _as_array(mask, "attention_mask")
    if array is not None:
        if array.dtype.kind not in "biu":
            raise TypeError(f"attention_mask must hold 0 and 1 (integers or bools), got dtype {array.dtype}")
        if ids_array is not None and array.shape != ids_array.shape:
            raise ValueError(f"attention_mask has shape {tuple(array.shape)}, the token ids "
                             f"{tuple(ids_array.shape)}: one mask value per token")
        if array.ndim not in (1, 2) or (array.ndim == 1) != single:
            raise ValueError(f"attention_mask of shape {tuple(array.shape)} does not match the token ids (one "
                             f"mask value per token)")
        rows = [array.tolist()] if array.ndim == 1 else array.tolist()
    elif isinstance(mask, (list, tuple)):
        rows = [list(mask)] if single else [_mask_row(r, p) for p, r in enumerate(mask)]
    else:
        raise TypeError(f"attention_mask must be a list, a NumPy array or a torch tensor of 0 and 1, got "
                        f"{type(mask).__name__}")
    if len(rows) != len(ids_rows):
        raise ValueError(f"attention_mask has {len(rows)} rows, the token ids {len(ids_rows)}: one mask row per "
                         f"prompt")
    for p, (m, r) in enumerate(zip(rows, ids_rows)):
        if len(m) != len(r):
            raise ValueError(f"attention_mask row {p} has {len(m)} values, prompt {p} has {len(r)} tokens: one "
                             f"mask value per token")
        for i, v in enumerate(m):
            if not isinstance(v, (int, np.integer, np.bool_)):  # bool is an int
                raise TypeError(f"attention_mask must hold 0 and 1, got {type(v).__name__} {v!r} at [{p}, {i}]")
            if v not in (0, 1):
                raise ValueError(f"attention_mask must hold 0 and 1 only, got {v} at [{p}, {i}]")
    return rows


def _real_span(mask_row: list, p: int) -> Tuple[int, int]:
    """[start, end) of the ones of one mask row, which must be one run (the pads before it, after it, or both)."""
    ones = [i for i, v in enumerate(mask_row) if v]
    if not ones:
        raise ValueError(f"attention_mask row {p} is all zeros: prompt {p} has no token to continue")
    start, end = ones[0], ones[-1] + 1
    if end - start != len(ones):
        hole = next(i for i in range(start, end) if not mask_row[i])
        raise ValueError(f"attention_mask row {p} has a hole: 0 at position {hole} between ones (padding goes "
                         f"before or after a row's tokens, never inside them)")
    return start, end


class Prompts(NamedTuple):
    """The prompts of one generate call: rows holds each prompt's real tokens (what the engine runs), given each
    prompt as the caller wrote it (pads included), and the rest how to give the result back."""
    rows: List[List[int]]
    single: bool
    given: List[list]
    array: Optional[np.ndarray]  # the ids as an array (a tensor converted), None for lists
    tensor: object               # the torch tensor given, else None
    n_vocab: int

    def as_given(self, sequences: List[List[int]], n: int) -> List[List[int]]:
        """Each generated row as its prompt was given (pads included), then its new tokens."""
        return [list(self.given[r // n]) + list(s[len(self.rows[r // n]):]) for r, s in enumerate(sequences)]

    def output(self, sequences: List[List[int]], num_return_sequences: int, pad_token_id: Optional[int]):
        """The generated rows (each a prompt's real tokens, then the new ones; num_return_sequences rows per
        prompt) in the form of the input: each prompt as given (pads included) followed by its new tokens. Lists
        for lists (one list for a single prompt and one row); a 1-D array/tensor for a 1-D one and one row; else a
        2-D array/tensor (rows, T + longest new), rows that stopped early filled with pad_token_id on the right.

        Raises:
            ValueError: rows of different lengths to fill and no pad_token_id.
        """
        n = num_return_sequences
        out = self.as_given(sequences, n)
        if self.array is None:
            return out[0] if self.single and n == 1 else out
        if self.single and n == 1:
            block = np.array(out[0], dtype=np.int64)
        else:
            width = max((len(o) for o in out), default=0)
            if any(len(o) < width for o in out):
                if pad_token_id is None:
                    raise ValueError("rows ended at different lengths (end of text) and the 2-D result must be "
                                     "filled: give pad_token_id= (this model's config has no pad_token_id and "
                                     "there is no eos_token_id to use instead)")
                out = [o + [pad_token_id] * (width - len(o)) for o in out]
            block = np.array(out, dtype=np.int64).reshape(len(out), width)
        dtype = self.array.dtype
        largest = max(self.n_vocab - 1, pad_token_id or 0)
        if np.iinfo(dtype).max >= largest:  # the caller's dtype when it holds every id the result can have
            block = block.astype(dtype)
        if self.tensor is None:
            return block
        import torch  # a tensor was given: torch is imported already

        return torch.from_numpy(block).to(self.tensor.device)


def parse_prompts(ids, n_vocab: int, attention_mask=None) -> Prompts:
    """The prompts of generate_ids: token ids as a list of ints (one prompt), a list of lists (prompts of any
    lengths), a 1-D or 2-D NumPy array or torch tensor of any integer dtype; and with attention_mask (the same
    shape, 0/1) each row's real tokens, those where the mask is 1: one run per row, before, after or between pads.

    Raises:
        TypeError: ids or a mask of the wrong type (floats, bools as ids, not sequences).
        ValueError: ids beyond 2-D or outside [0, n_vocab) (pads excepted: they only need to be integers); a mask of
            another shape, with a value other than 0/1, a hole between ones, or a row of zeros.
    """
    given, single, array = _raw_rows(ids)
    tensor = ids if is_tensor(ids) else None
    if attention_mask is None:
        rows = given
    else:
        masks = _mask_rows(attention_mask, given, single, array)
        rows = []
        for p, (row, mask) in enumerate(zip(given, masks)):
            start, end = _real_span(mask, p)
            for t in row[:start] + row[end:]:  # pads: any integer, never read
                if isinstance(t, bool) or not isinstance(t, (int, np.integer)):
                    raise TypeError(f"token ids must be ints, got {type(t).__name__} {t!r} (a pad of prompt {p})")
            rows.append(row[start:end])
    for p, row in enumerate(rows):
        for t in row:
            check_token_id(t, n_vocab, where=f" in prompt {p}")
    rows = [[int(t) for t in row] for row in rows]
    return Prompts(rows, single, given, array, tensor, n_vocab)
