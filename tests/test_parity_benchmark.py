"""benchmarks/parity.py's in-memory mode: both frameworks get the same
batches, and a tiny run goes end to end."""

import json
import os
import subprocess
import sys

import keras
import numpy as np
import pytest

from examples_util import ROOT

pytest.importorskip("torch")
sys.path.insert(0, os.path.join(ROOT, "benchmarks"))
sys.path.insert(0, os.path.join(ROOT, "examples"))
import parity  # noqa: E402


def _arrays(n=40):
    rng = np.random.default_rng(0)
    return (rng.integers(0, 256, (n, 32, 32, 3), dtype="uint8"),
            rng.integers(0, 10, n).astype("uint8"))


def test_same_seed_same_batches_and_each_epoch_a_permutation():
    x, y = _arrays()
    first = parity.NumpyBatches(x, y, 8, True, "channels_last", seed=3)
    second = parity.NumpyBatches(x, y, 8, True, "channels_first", seed=3)
    for _ in range(2):
        a, b = list(first.epoch()), list(second.epoch())
        assert len(a) == len(b) == 5
        labels = []
        for (xa, ya), (xb, yb) in zip(a, b):
            np.testing.assert_array_equal(xa, xb.transpose(0, 2, 3, 1))
            np.testing.assert_array_equal(ya, yb)
            labels.append(ya)
        # every example once per epoch
        assert sorted(np.concatenate(labels)) == sorted(y.astype("int64"))
    # augmented: crops and flips change the images, normalized around 0
    plain = parity.NumpyBatches(x, y, 8, False, "channels_last", seed=3)
    xs, _ = next(plain.epoch())
    assert xs.shape == (8, 32, 32, 3) and abs(float(xs.mean())) < 1.0


def test_tiny_run_in_memory(tmp_path):
    x, y = _arrays(64)
    path = tmp_path / "tiny.npz"
    np.savez(path, x_train=x, y_train=y, x_test=x[:32], y_test=y[:32])
    env = dict(os.environ, PYTHONPATH=ROOT)
    result = subprocess.run(
        [sys.executable, os.path.join(ROOT, "benchmarks", "parity.py"),
         "--npz", str(path), "--epochs", "1", "--depth", "8",
         "--batch-size", "16", "--neurons", "quadratic", "--seeds", "0",
         "--backend", keras.backend.backend(), "--output-dir",
         str(tmp_path)],
        capture_output=True, text=True, timeout=600, env=env)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "| QResNet8 | 0 |" in result.stdout
    with open(tmp_path / "parity.json") as f:
        (run,) = json.load(f)["results"]
    for side in ("pytorch_reference", "keras_quadratic"):
        assert len(run[side]) == 1 and 0.0 <= run[side][0] <= 1.0
