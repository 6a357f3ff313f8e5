"""Hugging Face GPT-2 checkpoints on disk: config.json <-> GPT2Config, locating a model by name, saving."""

from __future__ import annotations

import fcntl
import json
import math
import os
import shutil
import threading
from contextlib import contextmanager
from typing import Any, Dict, Iterator, NamedTuple, Optional, Tuple

import numpy as np

from ._core import GPT2Config
from .arguments import INT32_MAX
from .checkpoint_files import CONFIG_NAME, WEIGHTS_NAME, directory_of
from .tokenizer import TOKENIZER_FILES, TOKENIZER_SIDE_FILES

HUB_FILES = [CONFIG_NAME, WEIGHTS_NAME, "vocab.json", "merges.txt"]

# config.json fields we need, with the aliases older GPT-2 configs use.
_REQUIRED = {"vocab_size": ("vocab_size",), "n_positions": ("n_positions", "n_ctx"), "n_embd": ("n_embd",),
             "n_head": ("n_head",), "n_layer": ("n_layer",)}


class CheckpointSettings(NamedTuple):
    """What config.json says beyond the model's shape."""
    eos_token_id: Optional[int]  # None: generation never stops early
    tie_word_embeddings: bool
    pad_token_id: Optional[int] = None  # fills a 2-D result's rows that stopped early (None: the eos id)


def read_config(path: str) -> Tuple[GPT2Config, CheckpointSettings]:
    """Parse a GPT-2 config.json; raises ValueError, naming the file, for anything we cannot read or would compute
    differently from transformers."""
    try:
        with open(path, encoding="utf-8") as f:
            raw = json.load(f)
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ValueError(f"{path}: not valid JSON ({e})") from None
    if not isinstance(raw, dict):
        raise ValueError(f"{path}: expected a JSON object")
    if raw.get("model_type", "gpt2") != "gpt2":
        raise ValueError(f"{path}: model_type is {raw['model_type']!r}, only 'gpt2' is supported")
    fields = {}
    for name, aliases in _REQUIRED.items():
        found = [raw[a] for a in aliases if a in raw]
        if not found:
            raise ValueError(f"{path}: missing required field {name!r}")
        value = found[0]
        if not isinstance(value, int) or isinstance(value, bool):
            raise ValueError(f"{path}: field {name!r} must be an integer, got {value!r}")
        if value > INT32_MAX:  # positivity and the shape's consistency: GPT2Config's checks
            raise ValueError(f"{path}: field {name!r} must fit a 32-bit integer, got {value!r}")
        fields[name] = value
    act = raw.get("activation_function", "gelu_new")
    if act != "gelu_new":
        raise ValueError(f"{path}: activation_function {act!r} is not supported (GPT-2 uses 'gelu_new')")
    n_inner = raw.get("n_inner")
    if n_inner is not None and n_inner != 4 * fields["n_embd"]:
        raise ValueError(f"{path}: n_inner={n_inner} is not supported (GPT-2 uses 4 * n_embd)")
    for flag in ("scale_attn_by_inverse_layer_idx", "reorder_and_upcast_attn"):
        if raw.get(flag):
            raise ValueError(f"{path}: {flag}={raw[flag]!r} is not supported")
    if raw.get("scale_attn_weights", True) is not True:
        raise ValueError(f"{path}: scale_attn_weights must be true (GPT-2's attention), got "
                         f"{raw['scale_attn_weights']!r}")
    eps = raw.get("layer_norm_epsilon", 1e-5)
    if isinstance(eps, bool) or not isinstance(eps, (int, float)) or not 0 < _as_float32(eps) < math.inf:
        raise ValueError(f"{path}: layer_norm_epsilon must be a positive number that float32 holds, got {eps!r}")
    # a decoder with a cross-attention block per layer (VisionEncoderDecoder's): its tensors are loaded, or refused
    # when this is false
    cross = _flag(raw, "add_cross_attention", False, path)
    config = GPT2Config(n_vocab=fields["vocab_size"], n_ctx=fields["n_positions"], n_embd=fields["n_embd"],
                        n_head=fields["n_head"], n_layer=fields["n_layer"], eps=float(eps), add_cross_attention=cross)
    return config, CheckpointSettings(_eos_token_id(raw, path), _flag(raw, "tie_word_embeddings", True, path),
                                      _pad_token_id(raw, path))


def _as_float32(value: float) -> float:
    with np.errstate(over="ignore", under="ignore"):
        return float(np.float32(value))


def _eos_token_id(raw: Dict[str, Any], path: str) -> Optional[int]:
    """GPT-2's end-of-text id by default; null means none. A list (allowed by transformers for other models) is
    refused rather than cut to one of its ids."""
    eos = raw.get("eos_token_id", 50256)
    if eos is None:
        return None
    if isinstance(eos, bool) or not isinstance(eos, int) or not 0 <= eos <= INT32_MAX:
        raise ValueError(f"{path}: eos_token_id must be null or one token id (an integer >= 0), got {eos!r}")
    return eos


def _pad_token_id(raw: Dict[str, Any], path: str) -> Optional[int]:
    pad = raw.get("pad_token_id")
    if pad is not None and (isinstance(pad, bool) or not isinstance(pad, int) or not 0 <= pad <= INT32_MAX):
        raise ValueError(f"{path}: pad_token_id must be null or one token id (an integer >= 0), got {pad!r}")
    return pad


def _flag(raw: Dict[str, Any], name: str, default: bool, path: str) -> bool:
    value = raw.get(name, default)
    if not isinstance(value, bool):
        raise ValueError(f"{path}: {name} must be true or false, got {value!r}")
    return value


def config_dict(config: GPT2Config, eos_token_id: Optional[int]) -> Dict[str, Any]:
    """config.json contents that transformers' GPT2LMHeadModel.from_pretrained reads back to the same model; no
    end-of-text id (None) is written as null, and read back as none."""
    return {
        "architectures": ["GPT2LMHeadModel"],
        "model_type": "gpt2",
        "vocab_size": config.n_vocab,
        "n_positions": config.n_ctx,
        "n_embd": config.n_embd,
        "n_head": config.n_head,
        "n_layer": config.n_layer,
        "n_inner": None,
        # the shortest decimal of the float32 value: 1e-05, not 9.999999747378752e-06
        "layer_norm_epsilon": float(np.format_float_scientific(np.float32(config.eps), unique=True)),
        "activation_function": "gelu_new",
        "add_cross_attention": config.add_cross_attention,
        "initializer_range": 0.02,
        "bos_token_id": eos_token_id,
        "eos_token_id": eos_token_id,
        "tie_word_embeddings": True,
        "torch_dtype": "float32",
    }


def save_checkpoint(directory: str, config: GPT2Config, state: Dict[str, np.ndarray], tied: bool,
                    eos_token_id: Optional[int], tokenizer_dir: Optional[str]) -> None:
    """Weights first, config.json last, each written to a temporary file and renamed over the old one: a failure
    (a full disk, no permission) leaves a checkpoint already there loadable, never a new config beside old weights.
    Renaming also leaves a model that memory-maps the old weights file reading the old, intact bytes."""
    os.makedirs(directory, exist_ok=True)
    with _locked(directory):
        _write_checkpoint(directory, config, state, tied, eos_token_id, tokenizer_dir)


@contextmanager
def _locked(directory: str) -> Iterator[None]:
    """Saves to one directory, from threads or processes, one after another: interleaved, they would leave one
    save's weights beside another's config.json."""
    fd = os.open(directory, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)  # released when fd closes
        yield
    finally:
        os.close(fd)


def _write_checkpoint(directory: str, config: GPT2Config, state: Dict[str, np.ndarray], tied: bool,
                      eos_token_id: Optional[int], tokenizer_dir: Optional[str]) -> None:
    from safetensors.numpy import save_file

    # transformers' names: the body under "transformer.", the head as "lm_head.weight" (omitted when tied).
    tensors = {(k if k.startswith("lm_head") else "transformer." + k): np.ascontiguousarray(v)
               for k, v in state.items()}
    weights_path = os.path.join(directory, WEIGHTS_NAME)
    try:
        _replace_atomically(weights_path, lambda tmp: save_file(tensors, tmp, metadata={"format": "pt"}))
    except OSError:
        raise
    except Exception as e:  # safetensors' SafetensorError for an I/O failure
        raise OSError(f"could not write {weights_path}: {e}") from e
    cfg = config_dict(config, eos_token_id)
    cfg["tie_word_embeddings"] = tied

    def write_config(tmp: str) -> None:
        with open(tmp, "w", encoding="utf-8") as f:
            json.dump(cfg, f, indent=2)

    _replace_atomically(os.path.join(directory, CONFIG_NAME), write_config)
    # The directory's tokenizer files become exactly this model's: any other, left by an earlier save there, would
    # be loaded as this model's tokenizer (tokenizer.json first), by us or by transformers.
    same_directory = (tokenizer_dir is not None and os.path.isdir(tokenizer_dir)
                      and os.path.samefile(tokenizer_dir, directory))
    for name in TOKENIZER_FILES + TOKENIZER_SIDE_FILES:
        dst = os.path.join(directory, name)
        src = os.path.join(tokenizer_dir, name) if tokenizer_dir is not None else None
        if name in TOKENIZER_FILES and src is not None and os.path.isfile(src):
            if not same_directory:
                shutil.copyfile(src, dst)
        elif os.path.isfile(dst) and not (same_directory and name in TOKENIZER_SIDE_FILES):
            os.remove(dst)


def _replace_atomically(path: str, write) -> None:
    """write(tmp) into a temporary file beside path, then rename it over path; the temporary file never stays. The
    file gets the mode of any new file here (0o666 less the umask): safetensors' own temporary file is 0o600."""
    tmp = f"{path}.{os.getpid()}.{threading.get_ident()}.tmp"  # this thread's alone
    try:
        open(tmp, "xb").close()
        mode = os.stat(tmp).st_mode & 0o777
        write(tmp)
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def _hub_cache_dir() -> str:
    if os.environ.get("HF_HUB_CACHE"):
        return os.environ["HF_HUB_CACHE"]
    home = os.environ.get("HF_HOME", os.path.join(os.path.expanduser("~"), ".cache", "huggingface"))
    return os.path.join(home, "hub")


def _find_in_cache(name: str) -> Optional[str]:
    """A snapshot folder of the Hugging Face cache holding config.json and model.safetensors, if any."""
    repo = os.path.join(_hub_cache_dir(), "models--" + name.replace("/", "--"))
    snapshots = os.path.join(repo, "snapshots")
    if not os.path.isdir(snapshots):
        return None
    candidates = []
    ref = os.path.join(repo, "refs", "main")
    if os.path.isfile(ref):
        with open(ref, encoding="utf-8") as f:
            candidates.append(os.path.join(snapshots, f.read().strip()))
    candidates += sorted(os.path.join(snapshots, d) for d in os.listdir(snapshots))
    for snap in candidates:
        if all(os.path.isfile(os.path.join(snap, n)) for n in (CONFIG_NAME, WEIGHTS_NAME)):
            return snap
    return None


def resolve(name_or_path: str) -> str:
    """A directory with config.json, from a path (a checkpoint directory, or a file of one: config.json,
    model.safetensors, ...) or a Hugging Face model name. Its weights: checkpoint_files.weight_files."""
    if not isinstance(name_or_path, (str, os.PathLike)):
        raise TypeError(f"expected a directory or model name, got {type(name_or_path).__name__}")
    name_or_path = os.path.expanduser(os.fspath(name_or_path))
    looks_like_path = name_or_path.startswith(("/", ".", "~")) or name_or_path.count("/") > 1
    if os.path.isdir(name_or_path):
        directory = name_or_path
    elif os.path.isfile(name_or_path):
        directory = directory_of(name_or_path)
        if directory is None:
            raise ValueError(f"{name_or_path!r} is a file, but not one of a checkpoint (config.json, "
                             f"model.safetensors, ...): give the checkpoint's directory")
    elif looks_like_path or os.path.exists(name_or_path):
        raise FileNotFoundError(f"model directory not found: {name_or_path!r}")
    else:  # a Hugging Face name such as "gpt2" or "openai-community/gpt2"
        directory = _find_in_cache(name_or_path) or _download(name_or_path)
    if not os.path.isfile(os.path.join(directory, CONFIG_NAME)):
        raise FileNotFoundError(f"{CONFIG_NAME} not found in {directory!r} (a Hugging Face GPT-2 checkpoint has "
                                f"config.json and model.safetensors)")
    return directory


def _download(name: str) -> str:
    try:
        from huggingface_hub import snapshot_download
    except ImportError:
        raise FileNotFoundError(
            f"{name!r} is neither a directory nor in the Hugging Face cache ({_hub_cache_dir()}), and "
            f"huggingface_hub is not installed to download it") from None
    try:
        return snapshot_download(name, allow_patterns=HUB_FILES)
    except Exception as e:  # offline, unknown repo, no network: all mean "not available here"
        reason = " ".join(str(e).split())  # huggingface_hub's messages run over several lines; ours is one
        raise FileNotFoundError(f"{name!r} is neither a directory nor in the Hugging Face cache "
                                f"({_hub_cache_dir()}), and downloading it failed: {type(e).__name__}: "
                                f"{reason}") from None
