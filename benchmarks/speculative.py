"""Where speculative decoding pays on this CPU, and where it does not.

    python benchmarks/speculative.py [--small] [--out results/speculative.json] [--figures results/figures]

Greedy generation, plain against speculative, alternating in one process (median of the rounds), checking that
both give the same tokens; acceptance rate = accepted / drafted tokens:
(a) SmolLM2-135M-Instruct float32, drafted by SmolLM2 with int8 weights (a quarter of the bytes per step), on a
    free-form chat prompt;
(b) SmolLM2 with prompt lookup (drafts copied from n-gram matches in the prompt) on an input-grounded task: repeat a
    passage of Shakespeare with its spelling modernised, where the answer copies the prompt; and on the free-form
    prompt of (a), where it has little to copy;
(c) a control: GPT-2 124M with random weights, by prompt lookup and by its own int8 copy. Random weights fall into
    loops that repeat themselves, which flatters n-gram drafting: its acceptance says nothing about real text.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np

import kvcache
from kvbench.script import script_main
from kvbench.texts import shakespeare

STORY = "Write a short story about a cat who learns to sail."


def measure(model, ids, new_tokens: int, rounds: int, **speculation) -> dict:
    plain_s, spec_s = [], []
    for r in range(rounds):
        order = (False, True) if r % 2 == 0 else (True, False)
        for speculate in order:
            start = time.perf_counter()
            if speculate:
                out = model.generate_ids(ids, new_tokens, eos_token_id=None, return_dict_in_generate=True,
                                         **speculation)
                spec_s.append(time.perf_counter() - start)
                spec, stats = out.sequences[0], out.speculation
            else:
                plain = model.generate_ids(ids, new_tokens, eos_token_id=None)
                plain_s.append(time.perf_counter() - start)
    p, s = float(np.median(plain_s)), float(np.median(spec_s))
    return {"prompt_tokens": len(ids), "new_tokens": new_tokens, "plain_s": p, "speculative_s": s,
            "plain_tok_s": new_tokens / p, "speculative_tok_s": new_tokens / s, "speedup": p / s,
            "drafted": stats.drafted, "accepted": stats.accepted, "rounds": stats.rounds,
            "acceptance_rate": stats.acceptance_rate, "same_tokens": spec == plain}


def run(sizes: dict) -> dict:
    n, rounds = sizes["new_tokens"], sizes["rounds"]
    target = kvcache.load("smollm2")
    draft = kvcache.load("smollm2", weights_dtype="int8")
    story = target.chat_ids([{"role": "user", "content": STORY}])
    edit = target.chat_ids([{"role": "user", "content": "Repeat this passage exactly, modernising only its "
                                                         "spelling:\n\n" + shakespeare(sizes["passage_chars"])}])
    target.generate_ids(story, 4)  # warm-up
    cases = []

    def case(name, model, ids, **speculation):
        result = {"case": name, **measure(model, ids, n, rounds, **speculation)}
        print(result, flush=True)
        cases.append(result)

    for k in sizes["draft_ks"]:
        case(f"SmolLM2 f32, int8 draft k={k}, story", target, story, assistant_model=draft, num_assistant_tokens=k)
    for k in sizes["lookup_ks"]:
        case(f"SmolLM2 f32, prompt lookup k={k}, copy-edit", target, edit, prompt_lookup_num_tokens=k)
        case(f"SmolLM2 f32, prompt lookup k={k}, story", target, story, prompt_lookup_num_tokens=k)
    del target, draft
    config = kvcache.GPT2Config(n_vocab=50257, n_ctx=1024, n_embd=768, n_head=12, n_layer=12)
    gpt2 = kvcache.GPT2.from_config(config, seed=0)
    gpt2_int8 = kvcache.GPT2.from_config(config, seed=0, weights_dtype="int8")
    ids = list(range(100, 116))
    case("GPT-2 124M random (control), prompt lookup k=5", gpt2, ids, prompt_lookup_num_tokens=5)
    case("GPT-2 124M random (control), int8 draft k=4", gpt2, ids, assistant_model=gpt2_int8, num_assistant_tokens=4)
    return {"threads": kvcache.get_num_threads(), "greedy": True, "cases": cases}


def plot(results: dict, out: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out.mkdir(parents=True, exist_ok=True)
    cases = results["cases"]
    fig, ax = plt.subplots(figsize=(10, 0.55 * len(cases) + 1.5))
    y = np.arange(len(cases))
    colors = ["tab:blue" if c["speedup"] >= 1 else "tab:red" for c in cases]
    bars = ax.barh(y, [c["speedup"] for c in cases], color=colors)
    ax.bar_label(bars, labels=[f"{c['speedup']:.2f}x, {c['acceptance_rate']:.0%} accepted" for c in cases],
                 padding=3)
    ax.axvline(1.0, color="black", lw=1)
    ax.set_yticks(y, [c["case"] for c in cases]), ax.invert_yaxis()
    ax.set_xlim(0, max(c["speedup"] for c in cases) * 1.45)
    ax.set_xlabel("speedup over plain greedy decoding (same tokens)")
    ax.set_title(f"Speculative decoding, {cases[0]['new_tokens']} new tokens, 2 threads")
    ax.grid(alpha=0.3, axis="x")
    fig.tight_layout(), fig.savefig(out / "speculative.png", dpi=110), plt.close(fig)


SIZES = {"full": {"new_tokens": 128, "rounds": 3, "passage_chars": 700, "draft_ks": [3, 5], "lookup_ks": [5, 10]},
         "small": {"new_tokens": 12, "rounds": 1, "passage_chars": 200, "draft_ks": [3], "lookup_ks": [5]}}


def main(argv=None) -> dict:
    return script_main(__doc__, "a few tokens per case, seconds (the test's run)", SIZES, run, plot, argv)


if __name__ == "__main__":
    main()
