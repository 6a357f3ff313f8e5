"""A strict reader for GGUF v2/v3 model files: header, metadata, tensor infos, and dequantized tensor data.

This module owns parsing and validating GGUF files and turning their tensors (F32, F16, BF16, Q8_0, Q4_0,
Q4_1) into float32 NumPy arrays. It trusts nothing in the file: every count, length, type, dimension and
offset is checked against the bytes actually present before it is used, and every problem is reported as a
ValueError whose message starts with the file's path (or "<buffer>"), names the problem and the offending value.

Dequantization reproduces the `gguf` PyPI package's `gguf.quants.dequantize` bit for bit (same float32
operations in the same order). The module depends only on NumPy and the standard library, so it can be loaded
on its own (the fuzz harness does that without the compiled part of the package).

    from kvcache.gguf import read_gguf
    with read_gguf("model.gguf") as f:
        print(f.metadata["general.architecture"])
        w = f.array("token_embd.weight")
"""

from __future__ import annotations

import mmap
import os
import struct
from dataclasses import dataclass
from typing import Any, Dict, List, Optional, Tuple

import numpy as np

__all__ = ["GGUFFile", "GGUFTensor", "parse_gguf", "read_gguf"]

GGUF_MAGIC = b"GGUF"
SUPPORTED_VERSIONS = (2, 3)
DEFAULT_ALIGNMENT = 32
MAX_DIMS = 4  # GGML_MAX_DIMS
MAX_ARRAY_NESTING = 32  # real files never nest; the limit keeps forged nesting from exhausting the Python stack
INT64_MAX = 2**63 - 1

_U32 = struct.Struct("<I")
_U64 = struct.Struct("<Q")

# Smallest encodings, used to bound forged counts by the bytes left before looping or allocating.
_MIN_KV_BYTES = 8 + 4 + 1  # key length, value type, 1-byte value
_MIN_TENSOR_INFO_BYTES = 8 + 4 + 8 + 4 + 8  # empty name, n_dims, one dimension, ggml type, offset

# ---------------------------------------------------------------------------------------------------------------------
# metadata value types

STRING, ARRAY, BOOL = 8, 9, 7

# value type -> (name, little-endian NumPy dtype or None, encoded size; for STRING/ARRAY the minimum size)
_VALUE_TYPES: Dict[int, Tuple[str, Optional[str], int]] = {
    0: ("UINT8", "<u1", 1),
    1: ("INT8", "<i1", 1),
    2: ("UINT16", "<u2", 2),
    3: ("INT16", "<i2", 2),
    4: ("UINT32", "<u4", 4),
    5: ("INT32", "<i4", 4),
    6: ("FLOAT32", "<f4", 4),
    BOOL: ("BOOL", "<u1", 1),
    STRING: ("STRING", None, 8),
    ARRAY: ("ARRAY", None, 4 + 8),
    10: ("UINT64", "<u8", 8),
    11: ("INT64", "<i8", 8),
    12: ("FLOAT64", "<f8", 8),
}
_SCALAR_STRUCTS = {t: struct.Struct(fmt) for t, fmt in
                   {0: "<B", 1: "<b", 2: "<H", 3: "<h", 4: "<I", 5: "<i", 6: "<f", BOOL: "<B",
                    10: "<Q", 11: "<q", 12: "<d"}.items()}

# ---------------------------------------------------------------------------------------------------------------------
# ggml tensor types

# Every ggml type id the gguf package knows, so an unsupported one can be named rather than called unknown.
_GGML_TYPE_NAMES: Dict[int, str] = {
    0: "F32", 1: "F16", 2: "Q4_0", 3: "Q4_1", 6: "Q5_0", 7: "Q5_1", 8: "Q8_0", 9: "Q8_1",
    10: "Q2_K", 11: "Q3_K", 12: "Q4_K", 13: "Q5_K", 14: "Q6_K", 15: "Q8_K",
    16: "IQ2_XXS", 17: "IQ2_XS", 18: "IQ3_XXS", 19: "IQ1_S", 20: "IQ4_NL", 21: "IQ3_S", 22: "IQ2_S", 23: "IQ4_XS",
    24: "I8", 25: "I16", 26: "I32", 27: "I64", 28: "F64", 29: "IQ1_M", 30: "BF16",
    34: "TQ1_0", 35: "TQ2_0", 39: "MXFP4", 40: "NVFP4", 41: "Q1_0",
}

# Supported types: name -> (weights per block along ne[0], bytes per block)
_BLOCK_LAYOUT: Dict[str, Tuple[int, int]] = {
    "F32": (1, 4),
    "F16": (1, 2),
    "BF16": (1, 2),
    "Q8_0": (32, 2 + 32),
    "Q4_0": (32, 2 + 16),
    "Q4_1": (32, 2 + 2 + 16),
}

# Block records as structured dtypes, so one np.frombuffer splits scales from quants without copying.
_Q8_0_BLOCK = np.dtype([("d", "<f2"), ("qs", "i1", (32,))])
_Q4_0_BLOCK = np.dtype([("d", "<f2"), ("qs", "u1", (16,))])
_Q4_1_BLOCK = np.dtype([("d", "<f2"), ("m", "<f2"), ("qs", "u1", (16,))])


# ---------------------------------------------------------------------------------------------------------------------
# public types


@dataclass(frozen=True)
class GGUFTensor:
    """One tensor's validated description; `offset` is absolute in the file, `shape` is NumPy order (reversed ne)."""

    name: str
    shape: tuple
    ggml_type: str
    offset: int
    nbytes: int


class GGUFFile:
    """A parsed GGUF file: version, alignment, metadata (in file order) and tensors (in file order).

    Tensor data stays in the buffer (a memory map for read_gguf) until array() dequantizes it into a new array.
    """

    def __init__(self, buffer: memoryview, path: Optional[str], version: int, alignment: int,
                 metadata: Dict[str, Any], tensors: Dict[str, GGUFTensor], mapping: Optional[mmap.mmap] = None):
        self.path = path
        self.version = version
        self.alignment = alignment
        self.metadata = metadata
        self.tensors = tensors
        self._buffer: Optional[memoryview] = buffer
        self._mapping = mapping

    def __repr__(self) -> str:
        return (f"GGUFFile(path={self.path!r}, version={self.version}, {len(self.metadata)} metadata keys, "
                f"{len(self.tensors)} tensors)")

    def array(self, name: str) -> np.ndarray:
        """The tensor `name` as a new float32 array of shape tensor.shape, dequantized like gguf.quants.dequantize."""
        label = _label(self.path)
        tensor = self.tensors.get(name)
        if tensor is None:
            raise ValueError(f"{label}: no tensor named {name!r} (the file has {len(self.tensors)} tensors)")
        if self._buffer is None:
            raise ValueError(f"{label}: file is closed; cannot read tensor {name!r}")
        raw = np.frombuffer(self._buffer, dtype=np.uint8, count=tensor.nbytes, offset=tensor.offset)
        # inf/nan scales in a file are data, not errors: keep NumPy quiet (pytest turns warnings into errors)
        with np.errstate(all="ignore"):
            flat = _DEQUANTIZE[tensor.ggml_type](raw)
        return flat.reshape(tensor.shape)

    def close(self) -> None:
        """Release the buffer (and unmap the file for read_gguf); arrays already returned stay valid."""
        buffer, self._buffer = self._buffer, None
        mapping, self._mapping = self._mapping, None
        _release(buffer, mapping)

    def __enter__(self) -> "GGUFFile":
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()


def read_gguf(path) -> GGUFFile:
    """Memory-map and parse the GGUF file at `path` (FileNotFoundError if it does not exist)."""
    path = os.fspath(path)
    with open(path, "rb") as fh:
        if os.fstat(fh.fileno()).st_size == 0:
            return parse_gguf(b"", path)  # mmap refuses empty files; let the parser report the truncation
        mapping = mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ)
    buffer = memoryview(mapping)
    try:
        return _parse(buffer, path, mapping)
    except BaseException:
        _release(buffer, mapping)
        raise


def parse_gguf(data, path: Optional[str] = None) -> GGUFFile:
    """Parse a GGUF file held in any bytes-like buffer (bytes, bytearray, memoryview, mmap, uint8 array)."""
    buffer = memoryview(data)
    if buffer.format != "B" or buffer.ndim != 1:
        buffer = buffer.cast("B")  # view any contiguous buffer as flat bytes
    return _parse(buffer, None if path is None else os.fspath(path), None)


# ---------------------------------------------------------------------------------------------------------------------
# parsing


def _label(path: Optional[str]) -> str:
    return "<buffer>" if path is None else path


def _short_repr(value: Any, limit: int = 80) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[:limit] + "..."


def _release(buffer: memoryview, mapping: Optional[mmap.mmap]) -> None:
    """Let go of the buffer and unmap the file; if a view is still alive, the map goes when that view does."""
    try:
        if buffer is not None:
            buffer.release()
    except BufferError:  # a NumPy view of it is alive
        pass
    try:
        if mapping is not None:
            mapping.close()
    except BufferError:
        pass


class _Cursor:
    """Reads little-endian fields at a moving offset, checking each size against the bytes left first."""

    def __init__(self, buffer: memoryview, label: str):
        self.buffer = buffer
        self.size = len(buffer)
        self.pos = 0
        self.label = label

    def error(self, message: str) -> ValueError:
        return ValueError(f"{self.label}: {message}")

    def left(self) -> int:
        return self.size - self.pos

    def need(self, nbytes: int, what: str) -> None:
        if nbytes > self.size - self.pos:
            raise self.error(f"file truncated: {what} at offset {self.pos} needs {nbytes} bytes, "
                             f"only {self.size - self.pos} remain")

    def unpack(self, fmt: struct.Struct, what: str):
        self.need(fmt.size, what)
        (value,) = fmt.unpack_from(self.buffer, self.pos)
        self.pos += fmt.size
        return value

    def u32(self, what: str) -> int:
        return self.unpack(_U32, what)

    def u64(self, what: str) -> int:
        return self.unpack(_U64, what)

    def string(self, what: str) -> str:
        start = self.pos
        length = self.u64(f"length of {what}")
        if length > self.size - self.pos:
            raise self.error(f"{what} at offset {start} claims length {length}, beyond the end of the file "
                             f"({self.size - self.pos} bytes remain)")
        return self.utf8(length, what, start)

    def utf8(self, length: int, what: str, offset: int) -> str:
        """The next `length` bytes (already checked to be there) as text; `offset` is where the string began."""
        start = self.pos
        try:
            text = str(self.buffer[start:start + length], "utf-8")
        except UnicodeDecodeError as exc:
            raw = bytes(self.buffer[start:start + min(length, 64)])
            raise self.error(f"{what} at offset {offset} is not valid UTF-8 ({exc.reason} at byte {exc.start}): "
                             f"{raw!r}") from None
        self.pos = start + length
        return text

    def count(self, what: str, min_item_bytes: int, item: str) -> int:
        """A uint64 count, refused if that many items of at least min_item_bytes cannot fit in the bytes left."""
        start = self.pos
        n = self.u64(what)
        if n > self.left() // min_item_bytes:
            raise self.error(f"{what} {n} at offset {start} cannot fit in the {self.left()} bytes left "
                             f"(each {item} takes at least {min_item_bytes} bytes)")
        return n


def _parse(buffer: memoryview, path: Optional[str], mapping: Optional[mmap.mmap]) -> GGUFFile:
    cur = _Cursor(buffer, _label(path))
    version = _read_header(cur)
    tensor_count = cur.count("tensor count", _MIN_TENSOR_INFO_BYTES, "tensor info")
    kv_count = cur.count("metadata kv count", _MIN_KV_BYTES, "metadata key/value pair")
    if tensor_count * _MIN_TENSOR_INFO_BYTES + kv_count * _MIN_KV_BYTES > cur.left():
        raise cur.error(f"tensor count {tensor_count} and metadata kv count {kv_count} together cannot fit "
                        f"in the {cur.left()} bytes left after the header")
    metadata, value_types = _read_metadata(cur, kv_count)
    alignment = _alignment(cur, metadata, value_types)
    if tensor_count > cur.left() // _MIN_TENSOR_INFO_BYTES:
        raise cur.error(f"tensor count {tensor_count} cannot fit in the {cur.left()} bytes left after the metadata")
    infos = _read_tensor_infos(cur, tensor_count)
    data_start = -(-cur.pos // alignment) * alignment  # next multiple of the alignment
    if data_start > cur.size:
        raise cur.error(f"file truncated: data section starts at offset {data_start} (tensor infos end at "
                        f"{cur.pos}, alignment {alignment}) but the file has only {cur.size} bytes")
    tensors = _place_tensors(cur, infos, data_start, alignment)
    return GGUFFile(buffer, path, version, alignment, metadata, tensors, mapping)


def _read_header(cur: _Cursor) -> int:
    cur.need(4, "magic")
    magic = bytes(cur.buffer[0:4])
    if magic != GGUF_MAGIC:
        raise cur.error(f"not a GGUF file: magic is {magic!r}, expected {GGUF_MAGIC!r}")
    cur.pos = 4
    version = cur.u32("version")
    if version not in SUPPORTED_VERSIONS:
        raise cur.error(f"unsupported GGUF version {version} (this reader reads versions 2 and 3)")
    return version


def _read_metadata(cur: _Cursor, kv_count: int) -> Tuple[Dict[str, Any], Dict[str, int]]:
    """The key/value pairs in file order, and each key's value type (general.alignment must be a uint32)."""
    metadata: Dict[str, Any] = {}
    value_types: Dict[str, int] = {}
    for i in range(kv_count):
        key_offset = cur.pos
        key = cur.string(f"metadata key #{i}")
        if key in metadata:
            raise cur.error(f"duplicate metadata key {key!r} at offset {key_offset}")
        vtype = _value_type(cur, cur.u32(f"value type of metadata {key!r}"), f"metadata {key!r} has")
        metadata[key] = _read_value(cur, vtype, key, 0)
        value_types[key] = vtype
    return metadata, value_types


def _value_type(cur: _Cursor, vtype: int, context: str) -> int:
    if vtype not in _VALUE_TYPES:
        raise cur.error(f"{context} unknown value type {vtype} at offset {cur.pos - 4} (known: 0 to 12)")
    return vtype


def _read_value(cur: _Cursor, vtype: int, key: str, depth: int) -> Any:
    if vtype == STRING:
        return cur.string(f"string value of metadata {key!r}")
    if vtype == ARRAY:
        return _read_array(cur, key, depth + 1)
    value = cur.unpack(_SCALAR_STRUCTS[vtype], f"{_VALUE_TYPES[vtype][0]} value of metadata {key!r}")
    if vtype == BOOL:
        value = _check_bool(cur, value, key)
    return value


def _check_bool(cur: _Cursor, value: int, key: str) -> bool:
    if value > 1:
        raise cur.error(f"metadata {key!r} has bool value {value} at offset {cur.pos - 1}, expected 0 or 1")
    return bool(value)


def _read_array(cur: _Cursor, key: str, depth: int) -> List[Any]:
    if depth > MAX_ARRAY_NESTING:
        raise cur.error(f"metadata {key!r} nests arrays {depth} deep at offset {cur.pos}; "
                        f"the limit is {MAX_ARRAY_NESTING}")
    etype = _value_type(cur, cur.u32(f"element type of metadata array {key!r}"), f"metadata array {key!r} has")
    name, dtype, min_size = _VALUE_TYPES[etype]
    n = cur.count(f"array length of metadata {key!r}", min_size, f"{name} element")
    if dtype is not None:
        return _read_numeric_array(cur, etype, dtype, n, key)
    if etype == STRING:
        return _read_string_array(cur, n, key)
    return [_read_array(cur, key, depth + 1) for _ in range(n)]


def _read_numeric_array(cur: _Cursor, etype: int, dtype: str, n: int, key: str) -> List[Any]:
    values = np.frombuffer(cur.buffer, dtype=dtype, count=n, offset=cur.pos)  # n is bounded by count()
    if etype == BOOL:
        bad = np.flatnonzero(values > 1)
        if bad.size:
            raise cur.error(f"metadata {key!r} has bool value {int(values[bad[0]])} at offset "
                            f"{cur.pos + int(bad[0])}, expected 0 or 1")
        values = values.astype(bool)
    cur.pos += n * _VALUE_TYPES[etype][2]
    return values.tolist()  # Python ints/floats/bools, as scalars are


def _read_string_array(cur: _Cursor, n: int, key: str) -> List[str]:
    # a tight loop, messages built only on failure: tokenizer vocabularies have ~50k strings
    out = []
    buffer, size, unpack_u64 = cur.buffer, cur.size, _U64.unpack_from
    pos = cur.pos
    for i in range(n):
        if size - pos < 8:
            cur.pos = pos
            cur.need(8, f"length of string #{i} of metadata {key!r}")
        (length,) = unpack_u64(buffer, pos)
        if length > size - pos - 8:
            raise cur.error(f"string #{i} of metadata {key!r} at offset {pos} claims length {length}, "
                            f"beyond the end of the file ({size - pos - 8} bytes remain)")
        try:
            out.append(str(buffer[pos + 8:pos + 8 + length], "utf-8"))
        except UnicodeDecodeError:
            cur.pos = pos + 8
            cur.utf8(length, f"string #{i} of metadata {key!r}", pos)  # raises, with the message
        pos += 8 + length
    cur.pos = pos
    return out


def _alignment(cur: _Cursor, metadata: Dict[str, Any], value_types: Dict[str, int]) -> int:
    if "general.alignment" not in metadata:
        return DEFAULT_ALIGNMENT
    value, vtype = metadata["general.alignment"], value_types["general.alignment"]
    if vtype != 4 or not (value > 0 and value & (value - 1) == 0):
        raise cur.error(f"general.alignment must be a power-of-two uint32, got {_VALUE_TYPES[vtype][0]} "
                        f"{_short_repr(value)}")
    return value


class _TensorInfo:
    __slots__ = ("name", "ne", "ggml_type", "rel_offset", "nbytes")

    def __init__(self, name: str, ne: List[int], ggml_type: str, rel_offset: int, nbytes: int):
        self.name, self.ne, self.ggml_type, self.rel_offset, self.nbytes = name, ne, ggml_type, rel_offset, nbytes


def _read_tensor_infos(cur: _Cursor, count: int) -> List[_TensorInfo]:
    infos: List[_TensorInfo] = []
    names = set()
    for i in range(count):
        name_offset = cur.pos
        name = cur.string(f"name of tensor #{i}")
        if name in names:
            raise cur.error(f"duplicate tensor name {name!r} at offset {name_offset}")
        names.add(name)
        infos.append(_read_tensor_info(cur, name))
    return infos


def _read_tensor_info(cur: _Cursor, name: str) -> _TensorInfo:
    n_dims = cur.u32(f"n_dims of tensor {name!r}")
    if not 1 <= n_dims <= MAX_DIMS:
        raise cur.error(f"tensor {name!r} has n_dims {n_dims}; expected 1 to {MAX_DIMS}")
    ne = [cur.u64(f"dimension {d} of tensor {name!r}") for d in range(n_dims)]
    ggml_type = _ggml_type(cur, cur.u32(f"ggml type of tensor {name!r}"), name)
    rel_offset = cur.u64(f"data offset of tensor {name!r}")
    return _TensorInfo(name, ne, ggml_type, rel_offset, _tensor_nbytes(cur, name, ne, ggml_type))


def _ggml_type(cur: _Cursor, type_id: int, name: str) -> str:
    type_name = _GGML_TYPE_NAMES.get(type_id)
    if type_name is None:
        raise cur.error(f"tensor {name!r} has unknown ggml type {type_id}")
    if type_name not in _BLOCK_LAYOUT:
        raise cur.error(f"tensor {name!r} has ggml type {type_name} ({type_id}), which is unsupported "
                        f"(supported: {', '.join(_BLOCK_LAYOUT)})")
    return type_name


def _tensor_nbytes(cur: _Cursor, name: str, ne: List[int], ggml_type: str) -> int:
    for d, size in enumerate(ne):
        if size < 1:
            raise cur.error(f"tensor {name!r} has dimension ne[{d}] = {size} (ne={ne}); every dimension must be >= 1")
    n_elements = 1
    for size in ne:
        n_elements *= size  # Python ints: an overflow shows as a big number, checked below
    if n_elements > INT64_MAX:
        raise cur.error(f"tensor {name!r} element count {n_elements} (ne={ne}) overflows int64")
    block, block_bytes = _BLOCK_LAYOUT[ggml_type]
    if ne[0] % block:
        raise cur.error(f"tensor {name!r} of type {ggml_type} has ne[0] = {ne[0]}, not a multiple of the "
                        f"block size {block}")
    nbytes = n_elements // block * block_bytes
    if nbytes > cur.size:
        raise cur.error(f"tensor {name!r} (ne={ne}, {ggml_type}) needs {nbytes} bytes, more than the whole file "
                        f"({cur.size} bytes)")
    return nbytes


def _place_tensors(cur: _Cursor, infos: List[_TensorInfo], data_start: int, alignment: int) -> Dict[str, GGUFTensor]:
    tensors: Dict[str, GGUFTensor] = {}
    for info in infos:
        if info.rel_offset % alignment:
            raise cur.error(f"tensor {info.name!r} offset {info.rel_offset} is not a multiple of the alignment "
                            f"{alignment}")
        start = data_start + info.rel_offset
        end = start + info.nbytes
        if end > cur.size:
            raise cur.error(f"tensor {info.name!r} data (bytes {start} to {end}) runs past the end of the file "
                            f"({cur.size} bytes; truncated?)")
        tensors[info.name] = GGUFTensor(info.name, tuple(reversed(info.ne)), info.ggml_type, start, info.nbytes)
    _check_overlaps(cur, tensors)
    return tensors


def _check_overlaps(cur: _Cursor, tensors: Dict[str, GGUFTensor]) -> None:
    by_start = sorted(tensors.values(), key=lambda t: t.offset)
    for prev, nxt in zip(by_start, by_start[1:]):
        if nxt.offset < prev.offset + prev.nbytes:
            raise cur.error(f"tensors {prev.name!r} (bytes {prev.offset} to {prev.offset + prev.nbytes}) and "
                            f"{nxt.name!r} (bytes {nxt.offset} to {nxt.offset + nxt.nbytes}) overlap")


# ---------------------------------------------------------------------------------------------------------------------
# dequantization: each takes the tensor's raw bytes and returns a new flat float32 array, with the operations of
# gguf.quants (same casts, same order) so the results match it bit for bit


def _f32(raw: np.ndarray) -> np.ndarray:
    return raw.view("<f4").astype(np.float32)  # a copy, so no array outlives the file's buffer


def _f16(raw: np.ndarray) -> np.ndarray:
    return raw.view("<f2").astype(np.float32)


def _bf16(raw: np.ndarray) -> np.ndarray:
    # bf16 is the top half of a float32: shift it into place (gguf: int16 -> int32 << 16 -> view float32)
    return (raw.view("<i2").astype(np.int32) << 16).view(np.float32)


def _q8_0(raw: np.ndarray) -> np.ndarray:
    blocks = raw.view(_Q8_0_BLOCK)
    d = blocks["d"].astype(np.float32)[:, None]
    # gguf: float32(q) * d; the ufunc casts int8 -> float32 (exact) as it goes, without a temporary array
    return np.multiply(blocks["qs"], d, dtype=np.float32).reshape(-1)


def _nibbles(qs: np.ndarray) -> np.ndarray:
    """(n_blocks, 16) packed bytes -> (n_blocks, 32) float32 quants: low nibble of qs[j] is element j, high j + 16."""
    out = np.empty((qs.shape[0], 2, 16), np.float32)
    np.bitwise_and(qs, np.uint8(0x0F), out=out[:, 0, :], casting="unsafe")
    np.right_shift(qs, np.uint8(4), out=out[:, 1, :], casting="unsafe")
    return out.reshape(-1, 32)


def _q4_0(raw: np.ndarray) -> np.ndarray:
    blocks = raw.view(_Q4_0_BLOCK)
    d = blocks["d"].astype(np.float32)[:, None]
    q = _nibbles(blocks["qs"])
    q -= np.float32(8)  # exact, as gguf's int8 q - 8
    q *= d  # gguf: d * float32(q - 8)
    return q.reshape(-1)


def _q4_1(raw: np.ndarray) -> np.ndarray:
    blocks = raw.view(_Q4_1_BLOCK)
    d = blocks["d"].astype(np.float32)[:, None]
    m = blocks["m"].astype(np.float32)[:, None]
    q = _nibbles(blocks["qs"])
    q *= d
    q += m  # gguf: (d * q) + m, two roundings, never fused
    return q.reshape(-1)


_DEQUANTIZE = {"F32": _f32, "F16": _f16, "BF16": _bf16, "Q8_0": _q8_0, "Q4_0": _q4_0, "Q4_1": _q4_1}
