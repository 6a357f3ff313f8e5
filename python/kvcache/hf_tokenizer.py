"""Tokenizers of Hugging Face checkpoints and GGUF files, through Hugging Face `tokenizers`, behind the interface of
GPT2Tokenizer (encode, encode_batch, decode, vocab_size, eos/bos ids).

This module owns rebuilding a `tokenizers.Tokenizer` from a GGUF file's tokenizer metadata the way transformers does
for `AutoTokenizer.from_pretrained(..., gguf_file=...)` (transformers 5: integrations/gguf/gguf_tokenizer_mapping.py,
plus the special tokens and post-processor that TokenizersBackend.__init__ adds), so that the same file gives the
same ids here as there. It also reads a tokenizer.json with its tokenizer_config.json and chat template.
"""

from __future__ import annotations

import json
import os
from functools import lru_cache
from typing import Dict, List, Optional, Sequence, Tuple

from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, processors

from .arguments import check_token_id
from .token_ids import id_list
from .tokenizer import TextTokenizer

# llama.cpp's token types (gguf.TokenType): only these two become added tokens.
TOKEN_TYPE_CONTROL = 3
TOKEN_TYPE_USER_DEFINED = 4

# What transformers writes beside tokenizer.json since v5 (it wins over a template in tokenizer_config.json).
CHAT_TEMPLATE_FILE = "chat_template.jinja"

# The split regexes transformers swaps in for these tokenizer.ggml.pre names; any other name (e.g. SmolLM2's
# "smollm") keeps the builder's own pre-tokenizer: GPT-2's ByteLevel regex for "gpt2", Metaspace for "llama".
_LLAMA3_SPLIT = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}"
    r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)
_TEKKEN_SPLIT = (
    r"[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]*[\p{Ll}\p{Lm}\p{Lo}\p{M}]+"
    r"|[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]+[\p{Ll}\p{Lm}\p{Lo}\p{M}]*"
    r"|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n/]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)
_GPT4O_SPLIT = (
    r"[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]*[\p{Ll}\p{Lm}\p{Lo}\p{M}]+(?i:'s|'t|'re|'ve|'m|'ll|'d)?"
    r"|[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]+[\p{Ll}\p{Lm}\p{Lo}\p{M}]*(?i:'s|'t|'re|'ve|'m|'ll|'d)?"
    r"|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n/]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)
_QWEN2_SPLIT = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)
_QWEN35_SPLIT = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?[\p{L}\p{M}]+|\p{N}| ?[^\s\p{L}\p{M}\p{N}]+[\r\n]*"
    r"|\s*[\r\n]+|\s+(?!\S)|\s+"
)
GGUF_PRE_TOKENIZER_SPLITS = {
    **dict.fromkeys(("llama3", "llama-v3", "llama-bpe", "falcon3", "falcon-h1", "pixtral", "midm-2.0", "lfm2",
                     "jina-v5-nano", "dbrx", "smaug-bpe"), _LLAMA3_SPLIT),
    "tekken": _TEKKEN_SPLIT,
    **dict.fromkeys(("qwen2", "deepseek-r1-qwen", "kormo", "f2llmv2", "megrez"), _QWEN2_SPLIT),
    "qwen35": _QWEN35_SPLIT,
    **dict.fromkeys(("gpt-4o", "llama4", "kanana2", "talkie", "minimax-m2"), _GPT4O_SPLIT),
}

# The special tokens the class transformers hands the vocabulary to adds on its own (its defaults), in its order.
_BUILDER_DEFAULT_SPECIALS = {"gpt2": ("<|endoftext|>",), "llama": ("<s>", "</s>", "<unk>")}
# GGUF id keys of the named special tokens, in transformers' order (SPECIAL_TOKENS_ATTRIBUTES).
_NAMED_SPECIAL_KEYS = (("bos", "tokenizer.ggml.bos_token_id"), ("eos", "tokenizer.ggml.eos_token_id"),
                       ("unk", "tokenizer.ggml.unknown_token_id"), ("pad", "tokenizer.ggml.padding_token_id"))
# Sentencepiece files of these architectures need transformers' GemmaTokenizer, which is not mirrored here.
_UNSUPPORTED_SENTENCEPIECE_ARCHS = ("gemma", "gemma2", "gemma3")


class HFTokenizer(TextTokenizer):
    """Text <-> token ids over a `tokenizers.Tokenizer`. Special tokens written in the text (<|im_start|>) become
    their single ids; encode adds none of its own (no BOS), like transformers' add_special_tokens=False."""

    def __init__(self, tokenizer: Tokenizer, *, bos_token: Optional[str] = None, eos_token: Optional[str] = None,
                 chat_template: Optional[str] = None, source_dir: Optional[str] = None):
        super().__init__(tokenizer)
        self.bos_token = bos_token
        self.eos_token = eos_token
        self.chat_template = chat_template
        self.source_dir = source_dir  # the directory of tokenizer.json; None for a GGUF file

    @classmethod
    def from_file(cls, tokenizer_json_path: str, tokenizer_config_path: Optional[str] = None) -> "HFTokenizer":
        """A Hugging Face tokenizer.json, with bos/eos and the chat template of tokenizer_config.json when given
        (a chat_template.jinja beside tokenizer.json wins over the config's template, as in transformers)."""
        if not os.path.isfile(tokenizer_json_path):
            raise FileNotFoundError(f"tokenizer file not found: {tokenizer_json_path!r}")
        try:
            tok = Tokenizer.from_file(tokenizer_json_path)
        except Exception as e:  # the Rust library's bare Exception, without the file's name
            raise ValueError(f"{tokenizer_json_path}: not a valid tokenizer.json ({e})") from None
        config = _read_config(tokenizer_config_path) if tokenizer_config_path is not None else {}
        specials = {name: _token_content(config.get(f"{name}_token"), name, tokenizer_config_path)
                    for name in ("bos", "eos", "unk", "pad")}
        # transformers adds the config's named special tokens that tokenizer.json lacks (as special added tokens).
        _add_named_specials(tok, [specials[name] for name in ("bos", "eos", "unk", "pad")])
        directory = os.path.dirname(os.path.abspath(tokenizer_json_path))
        template = _read_chat_template_file(directory)
        if template is None:
            template = _config_chat_template(config.get("chat_template"), tokenizer_config_path)
        return cls(tok, bos_token=specials["bos"], eos_token=specials["eos"], chat_template=template,
                   source_dir=directory)

    @classmethod
    def from_gguf_metadata(cls, metadata: dict, source: Optional[str] = None) -> "HFTokenizer":
        """The tokenizer a GGUF file's metadata (key -> value; strings str, arrays lists) describes, built as
        transformers builds it from `gguf_file=`. source names the file in error messages."""
        where = f"{source}: " if source else ""
        tok_type = _gguf_model_name(metadata, where)
        tokens = _gguf_tokens(metadata, where)
        tok = _gguf_builder(tok_type, metadata.get("general.architecture"), where)(metadata, tokens, where)
        _add_named_specials(tok, _BUILDER_DEFAULT_SPECIALS[tok_type])
        _add_gguf_special_tokens(tok, tokens, metadata.get("tokenizer.ggml.token_type"), byte_level=tok_type == "gpt2")
        _set_split_regex(tok, metadata.get("tokenizer.ggml.pre"))
        named = {name: _gguf_special(metadata, key, tokens, where) for name, key in _NAMED_SPECIAL_KEYS}
        _add_named_specials(tok, list(named.values()))
        # Older sentencepiece files say nothing and llama.cpp adds BOS there; a byte-level vocabulary adds none.
        add_bos = bool(metadata.get("tokenizer.ggml.add_bos_token", tok_type == "llama"))
        add_eos = bool(metadata.get("tokenizer.ggml.add_eos_token", False))
        tok.post_processor = _post_processor(tok, named["bos"], named["eos"], add_bos, add_eos)
        return cls(tok, bos_token=named["bos"], eos_token=named["eos"],
                   chat_template=metadata.get("tokenizer.chat_template"), source_dir=None)

    @property
    def eos_token_id(self) -> Optional[int]:
        return None if self.eos_token is None else self._tok.token_to_id(self.eos_token)

    @property
    def bos_token_id(self) -> Optional[int]:
        return None if self.bos_token is None else self._tok.token_to_id(self.bos_token)

    def decode(self, ids: Sequence[int], skip_special_tokens: bool = False) -> str:
        """Ids (a list, 1-D array or tensor) -> text. An id the vocabulary does not have is a ValueError (the Rust
        decoder would drop it).
        No clean_up_tokenization_spaces: transformers 5 skips it for BPE vocabularies too."""
        ids = id_list(ids, self.vocab_size, vocabulary="the tokenizer's vocabulary")
        return self._tok.decode(ids, skip_special_tokens=bool(skip_special_tokens))


# ---------------------------------------------------------------------------------------------------------------------
# tokenizer.json + tokenizer_config.json


def _read_config(path: str) -> dict:
    if not os.path.isfile(path):
        raise FileNotFoundError(f"tokenizer config not found: {path!r}")
    try:
        with open(path, encoding="utf-8") as f:
            config = json.load(f)
    except (ValueError, UnicodeDecodeError) as e:
        raise ValueError(f"{path}: not valid JSON ({e})") from None
    if not isinstance(config, dict):
        raise ValueError(f"{path}: expected a JSON object, got {type(config).__name__}")
    return config


def _token_content(value, name: str, path: Optional[str]) -> Optional[str]:
    """A special token of tokenizer_config.json: a str, or a serialized AddedToken ({"content": ...})."""
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, dict) and isinstance(value.get("content"), str):
        return value["content"]
    raise ValueError(f"{path}: {name}_token must be a string or an object with a 'content' string, got {value!r}")


def _read_chat_template_file(directory: str) -> Optional[str]:
    path = os.path.join(directory, CHAT_TEMPLATE_FILE)
    if not os.path.isfile(path):
        return None
    with open(path, encoding="utf-8") as f:
        return f.read()


def _config_chat_template(value, path: Optional[str]) -> Optional[str]:
    """chat_template of tokenizer_config.json: a str, or (older files) a list of {"name", "template"} of which the
    one named "default" is what apply_chat_template uses without a name."""
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, list) and all(isinstance(t, dict) and "name" in t and "template" in t for t in value):
        return next((t["template"] for t in value if t["name"] == "default"), None)
    raise ValueError(f"{path}: chat_template must be a string or a list of {{name, template}}, got {value!r:.100}")


# ---------------------------------------------------------------------------------------------------------------------
# GGUF metadata -> tokenizers.Tokenizer, mirroring transformers' gguf_tokenizer_mapping.py


def _gguf_model_name(metadata: dict, where: str) -> str:
    if not isinstance(metadata, dict):
        raise TypeError(f"metadata must be a dict of GGUF key -> value, got {type(metadata).__name__}")
    if "tokenizer.ggml.model" not in metadata:
        raise ValueError(f"{where}GGUF metadata has no tokenizer.ggml.model (the tokenizer's kind)")
    name = metadata["tokenizer.ggml.model"]
    if name not in _BUILDER_DEFAULT_SPECIALS:
        raise ValueError(f"{where}unsupported tokenizer.ggml.model {name!r}: supported are "
                         f"{sorted(_BUILDER_DEFAULT_SPECIALS)}")
    return name


def _gguf_tokens(metadata: dict, where: str) -> List[str]:
    tokens = metadata.get("tokenizer.ggml.tokens")
    if tokens is None:
        raise ValueError(f"{where}GGUF metadata has no tokenizer.ggml.tokens (the vocabulary)")
    if isinstance(tokens, str) or not all(isinstance(t, str) for t in tokens):
        raise ValueError(f"{where}tokenizer.ggml.tokens must be a list of str")
    if not tokens:
        raise ValueError(f"{where}tokenizer.ggml.tokens is empty")
    return list(tokens)


def _gguf_special(metadata: dict, key: str, tokens: List[str], where: str) -> Optional[str]:
    """The token a special id key names (transformers uses its spelling as the special token), or None."""
    token_id = metadata.get(key)
    if token_id is None:
        return None
    check_token_id(token_id, len(tokens), where=f" ({where}{key})", vocabulary="tokenizer.ggml.tokens")
    return tokens[int(token_id)]


def _gguf_builder(tok_type: str, architecture: Optional[str], where: str):
    if tok_type == "gpt2":
        return _byte_level_tokenizer
    if architecture in _UNSUPPORTED_SENTENCEPIECE_ARCHS:
        raise ValueError(f"{where}unsupported tokenizer.ggml.model 'llama' for architecture {architecture!r} "
                         f"(transformers builds it with GemmaTokenizer, which is not mirrored here)")
    return _phi3_tokenizer if architecture == "phi3" else _sentencepiece_tokenizer


def _gguf_merges(metadata: dict, tokens: List[str], where: str) -> List[Tuple[str, ...]]:
    """The file's merges, or (no merges, as in most sentencepiece files) the ones its scores imply."""
    merges = metadata.get("tokenizer.ggml.merges")
    if merges is not None:
        if isinstance(merges, str) or not all(isinstance(m, str) for m in merges):
            raise ValueError(f"{where}tokenizer.ggml.merges must be a list of str")
        return [tuple(m.split(" ")) for m in merges]
    scores = metadata.get("tokenizer.ggml.scores")
    if scores is None:
        raise ValueError(f"{where}GGUF metadata has no tokenizer.ggml.merges (nor tokenizer.ggml.scores to derive "
                         f"them from)")
    if len(scores) != len(tokens):
        raise ValueError(f"{where}tokenizer.ggml.scores has {len(scores)} entries for {len(tokens)} tokens")
    return _merges_from_scores(tokens, [float(s) for s in scores])


def _merges_from_scores(tokens: List[str], scores: List[float]) -> List[Tuple[str, str]]:
    """transformers' generate_merges: every split of a token into two tokens, best score first (ties: shorter
    left, then shorter right piece), each token's splits in vocabulary order."""
    vocab = {t: i for i, t in enumerate(tokens)}
    merges = []
    for token, score in dict(zip(tokens, scores)).items():
        local = [(token[:i], token[i:], score) for i in range(1, len(token))
                 if token[:i] in vocab and token[i:] in vocab]
        local.sort(key=lambda m: (vocab[m[0]], vocab[m[1]]))
        merges.extend(local)
    merges.sort(key=lambda m: (m[2], len(m[0]), len(m[1])), reverse=True)
    return [(left, right) for left, right, _ in merges]


def _bpe(vocab: Dict[str, int], merges, where: str, **options) -> Tokenizer:
    try:
        return Tokenizer(models.BPE(vocab=vocab, merges=merges, dropout=None, **options))
    except Exception as e:  # the Rust library's bare Exception (a merge of a token not in the vocabulary...)
        raise ValueError(f"{where}GGUF tokenizer vocabulary and merges do not form a BPE model ({e})") from None


@lru_cache(maxsize=1)
def _byte_alphabet() -> Dict[int, str]:
    """GPT-2's byte -> printable character map (transformers' bytes_to_unicode)."""
    printable = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) \
        + list(range(ord("®"), ord("ÿ") + 1))
    chars = printable[:]
    extra = 0
    for b in range(256):
        if b not in printable:
            printable.append(b)
            chars.append(256 + extra)
            extra += 1
    return dict(zip(printable, map(chr, chars)))


def _byte_level_tokenizer(metadata: dict, tokens: List[str], where: str) -> Tokenizer:
    """transformers' GPT2Tokenizer over the file's vocabulary: a token written outside the byte alphabet (a raw
    "<start of turn>" with its space) is respelled in it."""
    spelling = _byte_alphabet()
    alphabet = set(spelling.values())
    vocab = {t if set(t) <= alphabet else "".join(spelling[b] for b in t.encode("utf-8")): i
             for i, t in enumerate(tokens)}
    tok = _bpe(vocab, _gguf_merges(metadata, tokens, where), where,
               continuing_subword_prefix="", end_of_word_suffix="", fuse_unk=False)
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    return tok


def _sentencepiece_tokenizer(metadata: dict, tokens: List[str], where: str) -> Tokenizer:
    """transformers' LlamaTokenizer over the file's vocabulary: BPE with byte fallback, "▁" for spaces, a prefix
    space on the first word only (legacy=False), stripped again when decoding."""
    vocab = {t: i for i, t in enumerate(tokens)}
    tok = _bpe(vocab, _gguf_merges(metadata, tokens, where), where, fuse_unk=True, byte_fallback=True)
    tok.normalizer = None
    tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="first", split=False)
    tok.decoder = decoders.Sequence([decoders.Replace("▁", " "), decoders.ByteFallback(), decoders.Fuse(),
                                     decoders.Strip(content=" ", left=1)])
    return tok


def _phi3_tokenizer(metadata: dict, tokens: List[str], where: str) -> Tokenizer:
    """Sentencepiece whose prefix space comes from a normalizer, not Metaspace (transformers' phi3_tokenizer)."""
    tok = _sentencepiece_tokenizer(metadata, tokens, where)
    tok.normalizer = normalizers.Sequence([normalizers.Prepend(prepend="▁"), normalizers.Replace(pattern=" ",
                                                                                                content="▁")])
    tok.pre_tokenizer = None
    return tok


def _add_gguf_special_tokens(tok: Tokenizer, tokens: List[str], token_types, *, byte_level: bool) -> None:
    """CONTROL tokens become special added tokens and USER_DEFINED ones plain added tokens, so that they stay
    whole in text. A CONTROL token written outside a byte-level alphabet is a llama.cpp mislabel: skipped."""
    if token_types is None:
        return
    spelled = set(_byte_alphabet().values()) if byte_level else None
    control = [AddedToken(t, normalized=False, special=True) for t, kind in zip(tokens, token_types)
               if kind == TOKEN_TYPE_CONTROL and (spelled is None or set(t) <= spelled)]
    if control:
        tok.add_special_tokens(control)
    vocab = tok.get_vocab()
    user_defined = [AddedToken(t, normalized=False, special=False) for t, kind in zip(tokens, token_types)
                    if kind == TOKEN_TYPE_USER_DEFINED and t in vocab]
    if user_defined:
        tok.add_tokens(user_defined)


def _set_split_regex(tok: Tokenizer, pre: Optional[str]) -> None:
    """Split text the way the vocabulary's merges were learned, for the pre-tokenizer names transformers knows."""
    split = GGUF_PRE_TOKENIZER_SPLITS.get(pre)
    if split is not None:
        tok.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.Split(Regex(split), behavior="isolated"),
                                                     pre_tokenizers.ByteLevel(add_prefix_space=False,
                                                                              use_regex=False)])


def _add_named_specials(tok: Tokenizer, names: Sequence[Optional[str]]) -> None:
    """What TokenizersBackend.__init__ does with its bos/eos/unk/pad tokens: add each one not yet an added token
    as a special token (a token of the vocabulary keeps its id; one it lacks gets the next id)."""
    added = {t.content for t in tok.get_added_tokens_decoder().values()}
    for name in names:
        if name is not None and name not in added:
            tok.add_special_tokens([AddedToken(name, special=True, normalized=False)])
            added.add(name)


def _post_processor(tok: Tokenizer, bos: Optional[str], eos: Optional[str], add_bos: bool, add_eos: bool):
    """transformers' update_post_processor: BOS/EOS around each sequence when the file asks for them (encode
    here never adds them; this keeps the tokenizer the same as transformers' for whoever serializes it)."""
    add_bos = add_bos and bos is not None
    add_eos = add_eos and eos is not None
    single = f"{(bos + ':0 ') if add_bos else ''}$A:0{(' ' + eos + ':0') if add_eos else ''}"
    pair = f"{single}{(' ' + bos + ':1') if add_bos else ''} $B:1{(' ' + eos + ':1') if add_eos else ''}"
    special = ([(bos, tok.token_to_id(bos))] if add_bos else []) + ([(eos, tok.token_to_id(eos))] if add_eos else [])
    return processors.TemplateProcessing(single=single, pair=pair, special_tokens=special)
