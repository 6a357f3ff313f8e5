"""One build runs on any x86-64 that NumPy runs on: every path, on emulated CPUs without AVX2 + FMA.

The build compiles its kernels for AVX2 + FMA and for baseline x86-64 and picks at load time. What a kernel test
cannot see is an AVX2 instruction reaching a CPU without it some other way: an inline function or template compiled
into an AVX2 file and shared with the rest by the linker, or a wrong pick. qemu-user stops on the first such
instruction (SIGILL), so running every path under it proves there is none on these CPUs, and comparing the results
with this machine's proves the portable kernels right. Nehalem has no AVX at all; Sandy Bridge has AVX but neither
AVX2 nor FMA. (Baseline x86-64 itself cannot be tried: NumPy 2 needs SSE4.2 and POPCNT, Nehalem's level.)
Haswell has AVX2 + FMA but no AVX-512: where this machine runs the AVX-512 build of the panel kernel, Haswell runs
the AVX2 one, which must give the same bits. F16C (float16 weights and caches on the AVX2 build) is a feature bit of
its own: Haswell without it must run the portable kernels only (qemu's "-cpu Haswell,-f16c").
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


def run_emulated(cpu: str, tmp_path: Path):
    out = tmp_path / "paths.npz"
    run = subprocess.run([QEMU, "-cpu", cpu, sys.executable, str(HERE / "portable_cpu_paths.py"), str(out),
                          str(tmp_path / "checkpoint")], capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, f"exit status {run.returncode} on {cpu} (-4 or 132: an illegal instruction)\n" \
                                f"{run.stderr[-3000:]}"
    return np.load(out)


def kernel_builds_on(cpu: str):
    run = subprocess.run([QEMU, "-cpu", cpu, sys.executable, "-c",
                          "import kvcache_kernels; print(' '.join(kvcache_kernels.available_isas()))"],
                         capture_output=True, text=True, timeout=300, check=True)
    return run.stdout.split()


needs_qemu = pytest.mark.skipif(QEMU is None, reason="qemu-user is not installed (apt-get install qemu-user)")


@needs_qemu
@pytest.mark.parametrize("cpu", ["Nehalem", "SandyBridge", "Haswell,-f16c"])
def test_every_path_runs_and_agrees_on_a_cpu_without_avx2(cpu, this_machine, tmp_path):
    if cpu == "Haswell,-f16c":  # AVX2 + FMA without F16C: no AVX2 build runs, as its float16 paths need F16C
        assert kernel_builds_on(cpu) == ["portable"]
    emulated = run_emulated(cpu, tmp_path)
    assert sorted(emulated.files) == sorted(this_machine)
    for name, expected in this_machine.items():
        got = emulated[name]
        if expected.dtype.kind == "f":
            scale = float(np.max(np.abs(expected)))
            assert max_abs_diff(got, expected) <= RELATIVE_TOLERANCE * scale, name
        else:
            np.testing.assert_array_equal(got, expected, err_msg=name)  # checks the shapes too


@needs_qemu
def test_every_path_gives_the_same_bits_on_an_avx2_cpu_without_avx512(this_machine, tmp_path):
    assert kernel_builds_on("Haswell") == ["portable", "avx2"]
    emulated = run_emulated("Haswell", tmp_path)
    assert sorted(emulated.files) == sorted(this_machine)
    for name, expected in this_machine.items():
        np.testing.assert_array_equal(emulated[name], expected, err_msg=name)
