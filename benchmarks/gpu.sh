#!/usr/bin/env bash
# Training images/s of QResNet20 and QResNet56 on a lent NVIDIA GPU, in
# float32 and bf16, on the jax and torch backends and for the plain PyTorch
# reference: one command, a few minutes.
#
# The GPU machine has torch and JAX with CUDA but not keras: first, here,
#   echo /.whl/ >> .git/info/exclude
#   python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 \
#     --implementation cp --platform manylinux2014_x86_64 -d .whl \
#     keras==3.15.1 namex optree absl-py rich h5py ml-dtypes markdown-it-py mdurl pygments
# then run, with .whl carried:  bash benchmarks/gpu.sh
set -euo pipefail
cd "$(dirname "$0")/.."
if ls .whl/*.whl > /dev/null 2>&1; then
  python3 -m pip install -q --no-index --no-deps --no-compile --upgrade \
    --target /tmp/site .whl/*.whl
  export PYTHONPATH=/tmp/site
fi
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
python3 benchmarks/run.py --backends jax torch --depths 20 56 \
  --neurons quadratic --dtype float32 bfloat16 --steps 20 \
  --output "${OUT:-runs}/gpu_benchmark.json"
