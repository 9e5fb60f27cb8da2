"""Shared pieces of the benchmarks: FLOP counting and timing."""

import hashlib
import os
import resource
import statistics
import sys
import time


def forward_macs(depth, neuron, image=32):
    """Multiply-adds of one forward pass of (Q)ResNet-depth, one image."""
    n = (depth - 2) // 6
    terms = {"quadratic": 3, "compact": 2, "linear": 1}[neuron]
    macs = image * image * 3 * 16 * 9  # stem
    size, channels = image, 16
    for filters, first_stride in ((16, 1), (32, 2), (64, 2)):
        for block in range(n):
            stride = first_stride if block == 0 else 1
            size_out = size // stride
            macs += terms * size_out ** 2 * 9 * channels * filters
            macs += terms * size_out ** 2 * 9 * filters * filters
            size, channels = size_out, filters
    return macs + 64 * 10


def train_flops(depth, neuron, batch):
    """FLOPs (2 per multiply-add) of one training step: about 3x forward."""
    return 2 * 3 * forward_macs(depth, neuron) * batch


def time_steps(step, warmup=3, steps=10):
    """Median seconds of `step()` (which must block until done)."""
    for _ in range(warmup):
        step()
    times = []
    for _ in range(steps):
        start = time.perf_counter()
        step()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def peak_rss_mb():
    """Peak resident memory of this process, in MiB."""
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return rss / (1024 * 1024) if sys.platform == "darwin" else rss / 1024


def matmul_gflops(n=2048, repeats=10, dtype="float32"):
    """The machine's matmul rate (GFLOP/s): on a GPU, PyTorch's; on a CPU,
    the best of PyTorch's and NumPy's BLAS. The reference of the FLOP
    floor."""
    import numpy as np
    import torch

    best = 0.0
    if not torch.cuda.is_available() and dtype == "float32":
        a = np.random.default_rng(0).random((n, n), dtype=np.float32)
        seconds = time_steps(lambda: a @ a, warmup=2, steps=repeats)
        best = 2 * n ** 3 / seconds / 1e9

    device = "cuda" if torch.cuda.is_available() else "cpu"
    torch_dtype = getattr(torch, dtype)
    a = torch.randn(n, n, device=device, dtype=torch_dtype)
    b = torch.randn(n, n, device=device, dtype=torch_dtype)

    def step():
        a @ b
        if device == "cuda":
            torch.cuda.synchronize()

    seconds = time_steps(step, warmup=2, steps=repeats)
    return max(best, 2 * n ** 3 / seconds / 1e9)


def load_npz(path):
    """(x_train, y_train, x_test, y_test) from an npz of uint8 arrays
    (benchmarks/make_cifar_subset.py). Where `path` is missing but its
    parts `path.part0`, `path.part1`, ... are there, joins them into `path`
    after checking their SHA-256 against `path.sha256`."""
    import numpy as np

    if not os.path.exists(path):
        parts = []
        while os.path.exists(f"{path}.part{len(parts)}"):
            parts.append(f"{path}.part{len(parts)}")
        if not parts:
            raise SystemExit(f"error: no {path} and no {path}.part0")
        if not os.path.exists(f"{path}.sha256"):
            raise SystemExit(f"error: {path}.sha256 is missing: the parts "
                             f"of {path} cannot be checked")
        digest = hashlib.sha256()
        for part in parts:
            with open(part, "rb") as f:
                while chunk := f.read(1 << 24):
                    digest.update(chunk)
        with open(f"{path}.sha256") as f:
            expected = f.read().split()[0]
        if digest.hexdigest() != expected:
            raise SystemExit(
                f"error: the {len(parts)} parts of {path} have SHA-256 "
                f"{digest.hexdigest()}, not {expected} ({path}.sha256): a "
                "part is missing or damaged")
        with open(path + ".tmp", "wb") as out:
            for part in parts:
                with open(part, "rb") as f:
                    while chunk := f.read(1 << 24):
                        out.write(chunk)
        os.replace(path + ".tmp", path)
        print(f"joined {len(parts)} parts into {path} (SHA-256 checked)",
              flush=True)
    with np.load(path) as data:
        return tuple(data[key] for key in ("x_train", "y_train", "x_test",
                                           "y_test"))
