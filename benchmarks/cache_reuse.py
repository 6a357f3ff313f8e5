"""What reusing the KV cache across calls buys on a real model: SmolLM2-135M-Instruct.

    python benchmarks/cache_reuse.py [--small] [--out results/cache_reuse.json] [--figures results/figures]

1. conversation: a 10-turn chat, each turn answered (a) by a session, which prefills only the new turn, and (b) by
   model.chat(history), which re-sends and recomputes the whole conversation; tokens prefilled and seconds per
   turn, turns alternating between the two so that a slower minute of the shared machine hits both.
2. prefix cache: a ~500-token system prompt, then 20 short questions; time to first token (one new token) of each
   question with the prefix cache and without it, alternating.
3. fan-out: 8 samples of one prompt as one call with num_return_sequences=8 (one prefill, its keys and values
   copied to 8 rows) against 8 independent calls; seconds, prompt tokens computed, and cache bytes.
Greedy replies; the two ways of each measurement are checked to give the same tokens.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np

import kvcache
from kvbench.script import script_main
from kvbench.texts import shakespeare

QUESTIONS = [
    "What is the capital of France?", "And of Germany?", "Which of the two cities is larger?",
    "Name a famous museum in the first one.", "What river runs through it?", "How long is that river?",
    "Which sea does it flow into?", "Name one country on that sea.", "What language is spoken there?",
    "Say hello in that language.", "What is 12 times 12?", "Name a primary colour.",
]


def _clock(fn):
    start = time.perf_counter()
    out = fn()
    return time.perf_counter() - start, out


def conversation(model, turns: int, max_new_tokens: int) -> list:
    """Per turn: the session's and the re-sent history's prefilled tokens and seconds."""
    chat = model.session(max_seq_len=4096)
    history = []
    rows = []
    for i in range(turns):
        question = QUESTIONS[i % len(QUESTIONS)]
        messages = history + [{"role": "user", "content": question}]
        ids = model.chat_ids(messages)
        if i % 2 == 0:  # alternate which of the two goes first
            t_session, reply = _clock(lambda: chat.say(question, max_new_tokens=max_new_tokens))
            t_resend, resent = _clock(lambda: model.chat(messages, max_new_tokens=max_new_tokens))
        else:
            t_resend, resent = _clock(lambda: model.chat(messages, max_new_tokens=max_new_tokens))
            t_session, reply = _clock(lambda: chat.say(question, max_new_tokens=max_new_tokens))
        history = messages + [{"role": "assistant", "content": reply}]
        rows.append({"turn": i + 1, "history_tokens": len(ids), "session_prefilled": chat.stats["prefilled"],
                     "session_reused": chat.stats["reused"], "resend_prefilled": len(ids),
                     "generated": chat.stats["generated"], "session_s": t_session, "resend_s": t_resend,
                     "same_reply": reply == resent})
        print("turn", rows[-1], flush=True)
    return rows


def system_prompt(model, n_tokens: int) -> str:
    """A system prompt of about n_tokens tokens: a passage of Shakespeare to answer questions about."""
    ids = model.encode(shakespeare(20 * n_tokens))[:n_tokens]
    return "Answer questions about this passage.\n\n" + model.decode(ids)


def prefix_cache(model, n_system: int, questions: int, block_size: int = 32) -> dict:
    system = system_prompt(model, n_system)
    prompts = [model.chat_ids([{"role": "system", "content": system},
                               {"role": "user", "content": QUESTIONS[i % len(QUESTIONS)] + f" ({i})"}])
               for i in range(questions)]
    model.disable_prefix_cache()
    plain, cached, same = [], [], []
    cache = kvcache.PrefixCache(max_bytes=256 << 20, block_size=block_size)
    for i, ids in enumerate(prompts):
        order = [False, True] if i % 2 == 0 else [True, False]
        outs = {}
        for use in order:
            model.prefix_cache = cache if use else None
            t, outs[use] = _clock(lambda: model.generate_ids(ids, 1))
            (cached if use else plain).append(t)
        same.append(outs[True] == outs[False])
    model.disable_prefix_cache()
    shared = next((i for i, (a, b) in enumerate(zip(prompts[0], prompts[-1])) if a != b), len(prompts[0]))
    result = {"shared_prefix_tokens": shared, "prompt_tokens": [len(p) for p in prompts],
              "block_size": block_size, "ttft_plain_s": plain, "ttft_prefix_s": cached, "same_tokens": all(same),
              "stats": cache.stats}
    print("prefix", {k: v for k, v in result.items() if not isinstance(v, list)},
          "median plain", np.median(plain), "median prefix", np.median(cached[1:]), flush=True)
    return result


def fan_out(model, n: int, max_new_tokens: int, rounds: int) -> dict:
    ids = model.chat_ids([{"role": "user", "content": "Write a short poem about the sea, in the style of "
                                                      "Shakespeare, and explain each of its images."}])
    options = dict(do_sample=True, temperature=0.8, top_p=0.95, eos_token_id=None)
    fanned_s, separate_s = [], []
    for r in range(rounds):
        t_fan, fanned = _clock(lambda: model.generate_ids(ids, max_new_tokens, num_return_sequences=n, seed=r,
                                                          **options))
        t_sep, separate = _clock(lambda: [model.generate_ids(ids, max_new_tokens, seed=r + 1000 * k, **options)
                                          for k in range(n)])
        fanned_s.append(t_fan)
        separate_s.append(t_sep)
    per_row = model.new_cache(1, len(ids) + max_new_tokens).nbytes
    result = {"n": n, "prompt_tokens": len(ids), "new_tokens": max_new_tokens,
              "fan_out_s": float(np.median(fanned_s)), "separate_s": float(np.median(separate_s)),
              "fan_out_prompt_tokens_computed": len(ids), "separate_prompt_tokens_computed": n * len(ids),
              "fan_out_cache_bytes": n * per_row, "separate_cache_bytes_each": per_row,
              "distinct_samples": len({tuple(f) for f in fanned})}
    print("fan-out", result, flush=True)
    return result


def plot(results: dict, out: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    out.mkdir(parents=True, exist_ok=True)
    c = results["conversation"]
    turns = [r["turn"] for r in c]
    fig, (a, b) = plt.subplots(1, 2, figsize=(11, 4))
    a.plot(turns, np.cumsum([r["resend_prefilled"] for r in c]), "o-", color="tab:red",
           label="re-sending the history")
    a.plot(turns, np.cumsum([r["session_prefilled"] for r in c]), "o-", color="tab:blue", label="session")
    a.set_xlabel("turn"), a.set_ylabel("tokens prefilled, total"), a.set_ylim(bottom=0)
    a.set_title("SmolLM2: a conversation's prefill work"), a.legend(), a.grid(alpha=0.3)
    b.plot(turns, np.cumsum([r["resend_s"] for r in c]), "o-", color="tab:red", label="re-sending the history")
    b.plot(turns, np.cumsum([r["session_s"] for r in c]), "o-", color="tab:blue", label="session")
    b.set_xlabel("turn"), b.set_ylabel("seconds, total"), b.set_title("time, all turns so far")
    b.set_ylim(bottom=0)
    for axis in (a, b):
        axis.xaxis.set_major_locator(MaxNLocator(integer=True))
    b.legend(), b.grid(alpha=0.3)
    fig.tight_layout(), fig.savefig(out / "reuse_conversation.png", dpi=110), plt.close(fig)

    p, f = results["prefix"], results["fan_out"]
    fig, (a, b) = plt.subplots(1, 2, figsize=(11, 4))
    q = np.arange(1, len(p["ttft_plain_s"]) + 1)
    a.plot(q, np.array(p["ttft_plain_s"]) * 1e3, "o-", color="tab:red", label="no prefix cache")
    a.plot(q, np.array(p["ttft_prefix_s"]) * 1e3, "o-", color="tab:blue", label="prefix cache")
    a.set_ylim(0, max(p["ttft_plain_s"]) * 1e3 * 1.15)
    a.set_xlabel("question (same system prompt)"), a.set_ylabel("ms to the first token")
    a.set_title(f"prefix cache: prompts sharing their first {p['shared_prefix_tokens']} tokens")
    a.legend(), a.grid(alpha=0.3), a.xaxis.set_major_locator(MaxNLocator(integer=True))
    labels = [f"{f['n']} separate calls", f"num_return_sequences={f['n']}"]
    a2 = b.bar(labels, [f["separate_s"], f["fan_out_s"]], color=["tab:red", "tab:blue"])
    b.bar_label(a2, fmt="%.2f s")
    b.set_ylim(0, max(f["separate_s"], f["fan_out_s"]) * 1.15)  # room for the labels
    b.set_ylabel("seconds"), b.set_title(f"{f['n']} samples of a {f['prompt_tokens']}-token prompt, "
                                         f"{f['new_tokens']} new tokens each")
    b.grid(alpha=0.3, axis="y")
    fig.tight_layout(), fig.savefig(out / "reuse_prefix_fanout.png", dpi=110), plt.close(fig)


SIZES = {"full": {"turns": 10, "reply_tokens": 48, "system_tokens": 500, "questions": 20, "fan_out": 8,
                  "fan_tokens": 64, "rounds": 3},
         "small": {"turns": 3, "reply_tokens": 12, "system_tokens": 200, "questions": 4, "fan_out": 4,
                   "fan_tokens": 8, "rounds": 1}}


def run(sizes: dict) -> dict:
    model = kvcache.load("smollm2")
    model.generate_ids(model.chat_ids([{"role": "user", "content": "Hi"}]), 4)  # warm-up
    return {"model": "SmolLM2-135M-Instruct", "threads": kvcache.get_num_threads(),
            "conversation": conversation(model, sizes["turns"], sizes["reply_tokens"]),
            "prefix": prefix_cache(model, sizes["system_tokens"], sizes["questions"]),
            "fan_out": fan_out(model, sizes["fan_out"], sizes["fan_tokens"], sizes["rounds"])}


def main(argv=None) -> dict:
    return script_main(__doc__, "a few turns and questions, seconds (the notebook's CI)", SIZES, run, plot, argv)


if __name__ == "__main__":
    main()
