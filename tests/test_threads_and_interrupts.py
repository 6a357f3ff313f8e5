"""One KV cache shared by two threads, and Ctrl-C during a long generation: a clear error or a prompt stop, never a
corrupted cache, a crashed process or a wait until the end."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import threading

import numpy as np
import pytest

from kvcache import GPT2, GPT2Config


@pytest.fixture(scope="module")
def model():
    return GPT2.from_config(GPT2Config(n_layer=2, n_head=2, n_embd=64, n_ctx=1024, n_vocab=101), seed=3)


def test_a_cache_serves_one_forward_at_a_time(model):
    """forward releases the GIL: two threads on one cache used to corrupt the heap (3 runs of 3) or the logits. Now
    a call that finds the cache held raises ValueError, and the cache holds exactly the calls that succeeded."""
    cache = model.new_cache(batch_size=1, max_seq_len=1024)
    tokens = np.array([[5, 17, 42, 8, 99]])
    outcomes = {"ok": 0, "held": 0, "other": []}
    lock = threading.Lock()

    def hammer():
        for _ in range(100):
            for call in (lambda: model.forward(tokens, cache=cache), cache.reset, lambda: cache.crop(1000)):
                try:
                    call()
                    key = "ok"
                except ValueError as e:
                    key = "held" if "in use by a forward pass on another thread" in str(e) else None
                    if key is None:
                        with lock:
                            outcomes["other"].append(repr(e))
                        continue
                with lock:
                    outcomes[key] += 1

    threads = [threading.Thread(target=hammer) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert outcomes["other"] == []
    assert outcomes["held"] > 0, "the two threads never met: the test did not exercise the guard"
    # whatever interleaving happened, the cache is consistent: forward from here equals a fresh sequential replay
    held = cache.seq_lens[0]
    assert held % 5 == 0
    fresh = model.new_cache(batch_size=1, max_seq_len=1024)
    for _ in range(held // 5):
        model.forward(tokens, cache=fresh)
    np.testing.assert_array_equal(model.forward(tokens, cache=cache), model.forward(tokens, cache=fresh))


def test_ctrl_c_stops_a_long_generation_between_steps():
    """The decode loop runs in C++ without the GIL; the binding checks for signals after every step. Before, a
    SIGINT at 1 s arrived when the whole generation (minutes) had finished."""
    script = textwrap.dedent("""
        import os, signal, threading, time
        from kvcache import GPT2, GPT2Config
        m = GPT2.from_config(GPT2Config(n_layer=4, n_head=4, n_embd=256, n_ctx=1024, n_vocab=101), seed=0)
        threading.Timer(1.0, lambda: os.kill(os.getpid(), signal.SIGINT)).start()
        start = time.perf_counter()
        try:
            m.generate_ids([1], max_new_tokens=1000, use_cache=False, eos_token_id=None)
            print("finished", flush=True)
        except KeyboardInterrupt:
            print(f"interrupted after {time.perf_counter() - start:.2f} s", flush=True)
    """)
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("interrupted after"), done.stdout + done.stderr
    # one uncached step of this model near n_ctx takes well under a second: the stop comes at the next step
    assert float(done.stdout.split()[2]) < 30.0, done.stdout
