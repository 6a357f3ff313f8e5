"""The tokenizer against transformers' GPT2TokenizerFast and against an independent pure-Python GPT-2 BPE."""

from __future__ import annotations

import hashlib
import json
from functools import lru_cache

import pytest
import regex
from transformers import GPT2TokenizerFast

from kvcache import GPT2, GPT2Tokenizer
from conftest import PACKAGE_GPT2, TOKENIZER_DIR, make_checkpoint

TEXTS = [
    "Hello world",
    "Hello, world! How's it going?",
    " leading space and trailing space ",
    "multiple   spaces\t\ttabs\nnewline\n\n\nthree newlines\r\nwindows",
    "   \t \n  ",
    "café naïve résumé Ångström façade coöperate",
    "日本語のテキスト、中文字符和标点。한국어 텍스트",
    "emoji 🤖🎉👍🏽 family 👨‍👩‍👧‍👦 flags 🇫🇷🇯🇵",
    "numbers 1234567890 3.14159 -42 1,000,000 0x1F 1e-10",
    "I'm you're he'll we've they'd isn't 'tis Y'ALL'D",
    "<|endoftext|>",
    "before<|endoftext|>after <|endoftext|> again<|endoftext|>",
    "Ω≈ç√∫˜µ≤≥÷ ∑∏ ©®™ «quotes» „low“ – — …",
    "control \x00\x01\x1f chars and \u00a0nbsp and \u200bzero-width",
    "def f(x):\n    return x ** 2  # comment\n",
    "https://example.com/path?q=1&r=two#frag user@example.org",
    "A" * 300,
    "\n",
    " ",
    "a",
]


@pytest.fixture(scope="module")
def hf_tokenizer():
    return GPT2TokenizerFast.from_pretrained(str(TOKENIZER_DIR))


@pytest.fixture(scope="module")
def ours():
    return GPT2Tokenizer.from_files(str(TOKENIZER_DIR / "vocab.json"), str(TOKENIZER_DIR / "merges.txt"))


# ---- an independent reference: OpenAI's GPT-2 encoder.py algorithm, in plain Python --------------------------------

def bytes_to_unicode():
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, map(chr, cs)))


class ReferenceBPE:
    PATTERN = regex.compile(r"""'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+""")
    SPECIAL = "<|endoftext|>"

    def __init__(self, directory):
        self.encoder = json.loads((directory / "vocab.json").read_text(encoding="utf-8"))
        lines = (directory / "merges.txt").read_text(encoding="utf-8").split("\n")
        merges = [tuple(line.split()) for line in lines[1:] if line.strip()]
        self.ranks = dict(zip(merges, range(len(merges))))
        self.byte_encoder = bytes_to_unicode()
        self.bpe = lru_cache(maxsize=None)(self._bpe)

    def _bpe(self, token):
        word = tuple(token)
        while len(word) > 1:
            pairs = {(word[i], word[i + 1]) for i in range(len(word) - 1)}
            best = min(pairs, key=lambda p: self.ranks.get(p, float("inf")))
            if best not in self.ranks:
                break
            first, second = best
            merged, i = [], 0
            while i < len(word):
                if i < len(word) - 1 and word[i] == first and word[i + 1] == second:
                    merged.append(first + second)
                    i += 2
                else:
                    merged.append(word[i])
                    i += 1
            word = tuple(merged)
        return word

    def encode(self, text):
        ids = []
        for k, part in enumerate(text.split(self.SPECIAL)):
            if k:
                ids.append(self.encoder[self.SPECIAL])
            for piece in self.PATTERN.findall(part):
                mapped = "".join(self.byte_encoder[b] for b in piece.encode("utf-8"))
                ids.extend(self.encoder[t] for t in self.bpe(mapped))
        return ids


@pytest.fixture(scope="module")
def reference():
    return ReferenceBPE(TOKENIZER_DIR)


# ---- tests -------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("text", TEXTS, ids=range(len(TEXTS)))
def test_encode_matches_transformers_and_reference(ours, hf_tokenizer, reference, text):
    ids = ours.encode(text)
    assert ids == hf_tokenizer.encode(text)
    assert ids == reference.encode(text)


@pytest.mark.parametrize("text", TEXTS, ids=range(len(TEXTS)))
def test_decode_inverts_encode(ours, hf_tokenizer, text):
    ids = ours.encode(text)
    assert ours.decode(ids) == text
    assert ours.decode(ids) == hf_tokenizer.decode(ids)


def test_end_of_text_is_one_special_token(ours):
    assert ours.encode("<|endoftext|>") == [50256]
    assert ours.eos_token_id == 50256
    assert ours.vocab_size == 50257
    assert ours.decode([50256]) == "<|endoftext|>"


def test_encode_batch_matches_encode(ours):
    assert ours.encode_batch(TEXTS) == [ours.encode(t) for t in TEXTS]
    # any iterable: a generator, used up by the checks before, gave []
    assert ours.encode_batch(t for t in TEXTS) == [ours.encode(t) for t in TEXTS]


def test_every_model_tokenizer_is_the_same(text_ckpt, ours):
    """A checkpoint directory's tokenizer, the packaged default and the shared files all tokenize alike."""
    default = GPT2Tokenizer.default()
    for text in TEXTS:
        expected = ours.encode(text)
        assert text_ckpt.model.tokenizer.encode(text) == expected
        assert text_ckpt.model.encode(text) == expected
        assert default.encode(text) == expected


def test_packaged_files_are_the_gpt2_files():
    for name in ("vocab.json", "merges.txt"):
        assert hashlib.sha256((PACKAGE_GPT2 / name).read_bytes()).hexdigest() == \
            hashlib.sha256((TOKENIZER_DIR / name).read_bytes()).hexdigest()


def test_encode_rejects_non_strings(ours):
    with pytest.raises(TypeError, match="str"):
        ours.encode(b"bytes")


def test_checkpoint_with_only_tokenizer_json(tmp_path):
    """transformers >= 5 saves a tokenizer as tokenizer.json alone (no vocab.json / merges.txt), and GPT2Tokenizer
    says it is built "from tokenizer.json when a checkpoint has one". With a token added (vocabulary 50258, as
    when a pad token is added for fine-tuning), the packaged GPT-2 tokenizer cannot stand in for it."""
    hf = GPT2TokenizerFast.from_pretrained(str(TOKENIZER_DIR))
    hf.add_tokens(["<|pad|>"])
    assert len(hf) == 50258
    path, _ = make_checkpoint(tmp_path / "ckpt", 1, 1, 8, 32, 50258)
    hf.save_pretrained(str(path))
    for name in ("vocab.json", "merges.txt"):  # transformers 4 also wrote these: keep tokenizer.json alone
        (path / name).unlink(missing_ok=True)
    assert (path / "tokenizer.json").is_file()
    model = GPT2.from_pretrained(path)
    assert model.tokenizer is not None
    for text in ("Hello <|pad|> world", TEXTS[7], TEXTS[11]):
        assert model.tokenizer.encode(text) == hf.encode(text)
