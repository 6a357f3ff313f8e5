"""The decode loop allocates nothing on the heap: the count of allocations during a generation does not grow with
the number of decode steps (a malloc interposer counts every allocation in the process)."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

PROBE = Path(__file__).parent / "alloc_probe"


@pytest.fixture(scope="module")
def alloc_shim(tmp_path_factory):
    compiler = shutil.which("cc") or shutil.which("gcc")
    if compiler is None:
        pytest.fail("a C compiler is needed to build the allocation counter")
    out = tmp_path_factory.mktemp("shim") / "count_allocs.so"
    subprocess.run([compiler, "-O2", "-shared", "-fPIC", "-o", str(out), str(PROBE / "count_allocs.c"), "-ldl"],
                   check=True)
    return out


def test_steady_state_decode_allocates_nothing(alloc_shim):
    env = dict(os.environ, LD_PRELOAD=str(alloc_shim), KVCACHE_ALLOC_SHIM=str(alloc_shim))
    run = subprocess.run([sys.executable, str(PROBE / "decode_allocations.py")], env=env, capture_output=True,
                         text=True, timeout=300)
    assert run.returncode == 0, run.stderr
    results = json.loads(run.stdout)
    assert len(results) == 9
    for name, r in results.items():
        # The counter sees the engine's allocations: constructing a generator allocates its cache and buffers.
        assert min(r["construct"]) > 0, (name, r)
        assert r["extra_per_60_steps"] == 0, f"{name}: decode steps allocated: {r}"
    # the windowed case: the 64-step generations evicted in both rows (52 and 48 tokens), the 4-step ones not
    evicted = results["llama windowed cache evicting, ragged batch 2 over a float16 cache"]["evicted"]
    assert evicted[1:4] == [[0, 0]] * 3 and len(evicted) == 7 and all(min(e) >= 40 for e in evicted[4:]), evicted
