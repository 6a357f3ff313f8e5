"""transformers' GPT-2 as a peer, on the same weights and threads: loading it, timing its generate() the way
this engine is timed (cache, static cache, no cache), and the side-by-side run with ours."""

from __future__ import annotations

import functools
import tempfile
from dataclasses import dataclass
from typing import List, Optional, Sequence, Tuple, Union

from kvcache import get_num_threads
from kvcache.model import GPT2

from .engine_benchmarks import benchmark_generation
from .kv_memory import shape_of
from .prompts import prompt_ids
from .timing import GenerationRecord, Tick, time_generation

PEER_MODES = {"cache": {"use_cache": True},
              "static cache": {"use_cache": True, "cache_implementation": "static"},
              "no cache": {"use_cache": False}}


def load_transformers_peer(checkpoint_dir: str):
    """transformers' GPT2LMHeadModel from a checkpoint written by GPT2.save_pretrained: the same weights, in
    float32, on as many torch threads as the engine uses."""
    import torch
    from transformers import GPT2LMHeadModel
    torch.set_num_threads(get_num_threads())
    return GPT2LMHeadModel.from_pretrained(checkpoint_dir, dtype=torch.float32).eval()


def _torch_cache_nbytes(cache) -> Optional[int]:
    layers = getattr(cache, "layers", None)  # transformers >= 4.56 caches; None when there is no cache
    if layers is None:
        return 0 if cache is None else None
    return sum(t.numel() * t.element_size() for layer in layers for t in (layer.keys, layer.values) if t is not None)


@functools.lru_cache(maxsize=None)
def _tick_processor_class():
    from transformers import LogitsProcessor

    class TickProcessor(LogitsProcessor):
        """Called once per generated token, right after its forward pass: the step clock for transformers."""

        def __init__(self, tick: Tick):
            self.tick = tick

        def __call__(self, input_ids, scores):
            self.tick()
            return scores

    return TickProcessor


def _run_transformers(hf_model, rows: List[List[int]], mode: str, n: int, tick: Tick):
    import torch
    from transformers import LogitsProcessorList
    ids = torch.tensor(rows)
    with torch.inference_mode():
        out = hf_model.generate(ids, attention_mask=torch.ones_like(ids), do_sample=False, min_new_tokens=n,
                                max_new_tokens=n, pad_token_id=0, return_dict_in_generate=True,
                                logits_processor=LogitsProcessorList([_tick_processor_class()(tick)]),
                                **PEER_MODES[mode])
    return out.sequences.shape[1] - ids.shape[1], _torch_cache_nbytes(out.past_key_values)


def benchmark_transformers(hf_model, prompt: Sequence[int], max_new_tokens: int, mode: str = "cache",
                           batch_size: int = 1, repeats: int = 3, time_budget_s: Optional[float] = None,
                           progress: bool = False) -> GenerationRecord:
    """Time transformers' generate() like benchmark_generation times ours: greedy, forced to the full length
    (min_new_tokens), steps timed by a logits processor. mode: a key of PEER_MODES."""
    if mode not in PEER_MODES:
        raise ValueError(f"unknown mode {mode!r}; known: {', '.join(PEER_MODES)}")
    ids = [int(t) for t in prompt]
    weights = sum(p.numel() * p.element_size() for p in hf_model.parameters())  # tied lm_head counted once
    runner = functools.partial(_run_transformers, hf_model, [ids] * batch_size, mode)
    c = hf_model.config
    shape = shape_of(c.n_layer, c.n_head, c.n_embd // c.n_head)
    return time_generation(runner, max_new_tokens, repeats, time_budget_s, progress, shape, engine="transformers",
                           mode=mode, prompt_tokens=len(ids), batch_size=batch_size, weights_nbytes=weights)


@dataclass
class Unavailable:
    """A peer mode that could not run here, and why."""
    engine: str
    mode: str
    reason: str


def compare_peers(model: GPT2, prompt: Union[str, int, Sequence[int]], max_new_tokens: int,
                  checkpoint_dir: Optional[str] = None, batch_size: int = 1, repeats: int = 3,
                  time_budget_s: Optional[float] = 30.0, progress: bool = True
                  ) -> Tuple[List[GenerationRecord], List[Unavailable]]:
    """Ours (cache, no cache) and transformers (cache, static cache, no cache) in one run, same weights and
    prompt. checkpoint_dir: where the model's checkpoint is; None writes one to a temporary directory."""
    ids = prompt_ids(model, prompt)
    records = [benchmark_generation(model, ids, max_new_tokens, c, batch_size, repeats, time_budget_s, progress)
               for c in (True, False)]
    unavailable: List[Unavailable] = []
    with tempfile.TemporaryDirectory() as scratch:
        if checkpoint_dir is None:
            checkpoint_dir = scratch
            model.save_pretrained(scratch)
        try:
            hf_model = load_transformers_peer(checkpoint_dir)
        except Exception as e:  # not installed, or cannot read the checkpoint: every mode is unavailable
            return records, [Unavailable("transformers", m, f"{type(e).__name__}: {e}") for m in PEER_MODES]
        for mode in PEER_MODES:
            try:
                records.append(benchmark_transformers(hf_model, ids, max_new_tokens, mode, batch_size, repeats,
                                                      time_budget_s, progress))
            except Exception as e:  # a mode this transformers version lacks: say so and go on
                unavailable.append(Unavailable("transformers", mode, f"{type(e).__name__}: {e}"))
    return records, unavailable
