"""GPT-2 byte-level BPE, through Hugging Face `tokenizers` (the same Rust code as GPT2TokenizerFast)."""

from __future__ import annotations

import os
from importlib import resources
from typing import List, Optional, Sequence

from tokenizers import Tokenizer, decoders, models, pre_tokenizers

from .token_ids import id_list

END_OF_TEXT = "<|endoftext|>"
TOKENIZER_JSON = "tokenizer.json"
# Files that carry a tokenizer from one checkpoint directory to another (save_pretrained copies those present).
TOKENIZER_FILES = ("vocab.json", "merges.txt", TOKENIZER_JSON)
# Files transformers writes beside them that change the tokenizer it loads (added tokens, special tokens).
TOKENIZER_SIDE_FILES = ("added_tokens.json", "special_tokens_map.json", "tokenizer_config.json")


def _check_text(text) -> None:
    if not isinstance(text, str):
        raise TypeError(f"text must be a str, got {type(text).__name__}")
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as e:  # a lone surrogate: no bytes to tokenize
        raise ValueError(f"text is not valid Unicode: {text[e.start:e.end]!r} at index {e.start} "
                         f"(a lone surrogate)") from None


class TextTokenizer:
    """Text <-> ids over a Hugging Face `tokenizers` Tokenizer, what every family's tokenizer shares: special tokens
    written in the text become their ids, none are added."""

    def __init__(self, tokenizer: Tokenizer):
        self._tok = tokenizer

    @property
    def vocab_size(self) -> int:
        return self._tok.get_vocab_size(with_added_tokens=True)

    def encode(self, text: str) -> List[int]:
        """Text -> GPT-2 BPE ids (no special tokens added). Raises TypeError for anything but a str."""
        _check_text(text)
        return self._tok.encode(text, add_special_tokens=False).ids

    def encode_batch(self, texts: Sequence[str]) -> List[List[int]]:
        """A list of texts -> a list of id lists. Raises TypeError for one str (not a list) or a non-str item."""
        if isinstance(texts, str):
            raise TypeError("texts must be a list of str, got one str (its characters would be the prompts)")
        texts = list(texts)  # once: a generator checked first would then be empty
        for t in texts:
            _check_text(t)
        return [e.ids for e in self._tok.encode_batch(texts, add_special_tokens=False)]


class GPT2Tokenizer(TextTokenizer):
    """Text <-> token ids. Built from vocab.json + merges.txt, or from tokenizer.json when a checkpoint has one."""

    def __init__(self, tokenizer: Tokenizer, source_dir: Optional[str] = None):
        super().__init__(tokenizer)
        self.source_dir = source_dir  # where its files came from (save_pretrained copies them)

    @classmethod
    def from_files(cls, vocab_path: str, merges_path: str) -> "GPT2Tokenizer":
        """From GPT-2's vocab.json and merges.txt.

        Raises:
            FileNotFoundError: a file is missing. ValueError: a file the BPE model cannot read (named)."""
        for path in (vocab_path, merges_path):
            if not os.path.isfile(path):
                raise FileNotFoundError(f"tokenizer file not found: {path!r}")
        try:
            tok = Tokenizer(models.BPE.from_file(vocab_path, merges_path))
        except Exception as e:  # the Rust library's bare Exception, naming neither file
            raise ValueError(f"{vocab_path} + {merges_path}: not a valid GPT-2 vocabulary and merges ({e})") from None
        # GPT-2's pre-tokenization regex over bytes mapped to printable unicode; no prefix space, like GPT-2.
        tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
        tok.decoder = decoders.ByteLevel()
        tok.add_special_tokens([END_OF_TEXT])
        return cls(tok, os.path.dirname(os.path.abspath(vocab_path)))

    @classmethod
    def from_dir(cls, directory: str) -> Optional["GPT2Tokenizer"]:
        """The tokenizer of a checkpoint directory, or None when it has no tokenizer files. tokenizer.json (what
        transformers writes, with any added tokens) wins over vocab.json + merges.txt."""
        serialized = os.path.join(directory, TOKENIZER_JSON)
        if os.path.isfile(serialized):
            try:
                return cls(Tokenizer.from_file(serialized), os.path.abspath(directory))
            except Exception as e:  # the Rust library's bare Exception, without the file's name
                raise ValueError(f"{serialized}: not a valid tokenizer.json ({e})") from None
        vocab, merges = os.path.join(directory, "vocab.json"), os.path.join(directory, "merges.txt")
        if os.path.isfile(vocab) and os.path.isfile(merges):
            return cls.from_files(vocab, merges)
        return None

    @classmethod
    def default(cls) -> "GPT2Tokenizer":
        """The GPT-2 tokenizer shipped with the package (OpenAI's vocab.json and merges.txt, MIT license)."""
        data = resources.files("kvcache") / "data"
        return cls.from_files(str(data / "vocab.json"), str(data / "merges.txt"))

    @property
    def eos_token_id(self) -> Optional[int]:
        return self._tok.token_to_id(END_OF_TEXT)

    def decode(self, ids: Sequence[int]) -> str:
        """Ids (a list, 1-D array or tensor) -> text. An id the vocabulary does not have is a ValueError (the Rust
        decoder would drop it)."""
        ids = id_list(ids, self.vocab_size, vocabulary="the tokenizer's vocabulary")
        return self._tok.decode(ids, skip_special_tokens=False)
