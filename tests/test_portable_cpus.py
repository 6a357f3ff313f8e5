"""One build runs on any x86-64 that NumPy runs on: every path, on emulated CPUs without AVX2 + FMA.

The build compiles its kernels for AVX2 + FMA and for baseline x86-64 and picks at load time. What a kernel test
cannot see is an AVX2 instruction reaching a CPU without it some other way: an inline function or template compiled
into an AVX2 file and shared with the rest by the linker, or a wrong pick. qemu-user stops on the first such
instruction (SIGILL), so running every path under it proves there is none on these CPUs, and comparing the results
with this machine's proves the portable kernels right. Nehalem has no AVX at all; Sandy Bridge has AVX but neither
AVX2 nor FMA. (Baseline x86-64 itself cannot be tried: NumPy 2 needs SSE4.2 and POPCNT, Nehalem's level.)
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import portable_cpu_paths
from conftest import max_abs_diff

QEMU = shutil.which("qemu-x86_64")
HERE = Path(__file__).resolve().parent

# Without FMA each multiply-add rounds twice, which moves the logits by about 1e-5 of their largest here (measured
# 1.1e-5 at most, with a bfloat16 cache); the tokens drawn from them agree exactly on these models.
RELATIVE_TOLERANCE = 1e-4


@pytest.fixture(scope="module")
def this_machine(tmp_path_factory):
    return portable_cpu_paths.run_paths(str(tmp_path_factory.mktemp("native")))


@pytest.mark.skipif(QEMU is None, reason="qemu-user is not installed (apt-get install qemu-user)")
@pytest.mark.parametrize("cpu", ["Nehalem", "SandyBridge"])
def test_every_path_runs_and_agrees_on_a_cpu_without_avx2(cpu, this_machine, tmp_path):
    out = tmp_path / "paths.npz"
    run = subprocess.run([QEMU, "-cpu", cpu, sys.executable, str(HERE / "portable_cpu_paths.py"), str(out),
                          str(tmp_path / "checkpoint")], capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, f"exit status {run.returncode} on {cpu} (-4 or 132: an illegal instruction)\n" \
                                f"{run.stderr[-3000:]}"
    emulated = np.load(out)
    assert sorted(emulated.files) == sorted(this_machine)
    for name, expected in this_machine.items():
        got = emulated[name]
        if expected.dtype.kind == "f":
            scale = float(np.max(np.abs(expected)))
            assert max_abs_diff(got, expected) <= RELATIVE_TOLERANCE * scale, name
        else:
            np.testing.assert_array_equal(got, expected, err_msg=name)  # checks the shapes too
