#!/usr/bin/env bash
# The GPU check (benchmarks/gpu_check.py) in one command, on a machine that
# has Python with torch and JAX (CUDA builds), numpy, h5py, ml-dtypes,
# absl-py and rich, and no network: keras, namex, optree and packaging come
# from wheels in .whl/ beside the repository root, made beforehand on a
# machine with network (Python 3.12, x86_64 Linux):
#
#   python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 \
#     --implementation cp --abi cp312 --platform manylinux2014_x86_64 \
#     --platform manylinux_2_17_x86_64 --platform manylinux_2_28_x86_64 \
#     -d .whl keras==3.15.1 namex optree packaging
#
# and a real CIFAR-10 subset as uint8 arrays (about 37 MB), made from a tfds
# data dir that holds cifar10:
#
#   python benchmarks/make_cifar_subset.py --data-dir DIR --output .gpu-data/cifar10_subset.npz
#
#   bash benchmarks/gpu.sh --data .gpu-data/cifar10_subset.npz   # on the GPU machine
#   bash benchmarks/gpu.sh --smoke                              # on any CPU: tiny sizes
#
# Exits non-zero when a backend computes on the CPU (except with --smoke).
set -euo pipefail
cd "$(dirname "$0")/.."
if ls .whl/*.whl > /dev/null 2>&1; then
  site="${TMPDIR:-/tmp}/keras-quadratic-site"
  if python3 -m pip --version > /dev/null 2>&1; then
    # pip skips nothing silently: a wheel for another Python is an error
    python3 -m pip install -q --no-index --no-deps --no-compile \
      --upgrade --target "$site" .whl/*.whl
  else
    # no pip: a wheel is a zip archive to unpack onto the path
    for wheel in .whl/*.whl; do python3 -m zipfile -e "$wheel" "$site"; done
  fi
  export PYTHONPATH="$site${PYTHONPATH:+:$PYTHONPATH}"
fi
if command -v nvidia-smi > /dev/null; then
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
fi
exec python3 benchmarks/gpu_check.py "$@"
