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
    epochs = []
    for number in range(2):
        a, b = list(first.epoch(number)), list(second.epoch(number))
        assert len(a) == len(b) == 5
        labels = []
        for (xa, ya), (xb, yb) in zip(a, b):
            np.testing.assert_array_equal(xa, xb.transpose(0, 2, 3, 1))
            np.testing.assert_array_equal(ya, yb)
            labels.append(ya)
        # every example once per epoch, in a new order each epoch
        assert sorted(np.concatenate(labels)) == sorted(y.astype("int64"))
        epochs.append(np.concatenate([xa for xa, _ in a]))
    assert not np.array_equal(epochs[0], epochs[1])
    # epoch 0 asked again: the same batches
    np.testing.assert_array_equal(
        np.concatenate([xa for xa, _ in first.epoch(0)]), epochs[0])
    # augmented: each training image is a crop (and maybe a flip) of the
    # zero-padded original, which the test batches leave as they are
    plain = parity.NumpyBatches(x, y, 8, False, "channels_last", seed=3)
    (xs, _), = list(plain.epoch(0))[:1]
    augmented, _ = next(first.epoch(0))
    assert xs.shape == augmented.shape == (8, 32, 32, 3)
    assert not np.array_equal(
        np.sort(xs.reshape(8, -1), axis=1),
        np.sort(augmented.reshape(8, -1), axis=1))


class _NumberedBatches:
    """Batches whose labels say (epoch, step) = 10 * epoch + step."""

    steps, training = 3, True

    def epoch(self, number):
        for step in range(self.steps):
            yield (np.ones((4, 2), "float32"),
                   np.full((4, 1), 10 * number + step, "float32"))


def test_keras_fit_gets_the_epochs_in_order():
    # What model.fit really reads, epoch by epoch: the same sequence the
    # PyTorch loop takes (reads of epoch 0's first batches before training,
    # to build the model or to peek at the spec, aside).
    dataset, callback = parity.keras_batches(_NumberedBatches())
    reads = []
    read = type(dataset).__getitem__

    def recording(self, index):
        batch = read(self, index)
        reads.append(int(batch[1][0, 0]))
        return batch

    type(dataset).__getitem__ = recording
    model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])
    model.compile("sgd", "mse")
    model.fit(dataset, epochs=3, shuffle=False, callbacks=[callback],
              verbose=0)
    expected = [10 * e + s for e in range(3) for s in range(3)]
    assert reads[len(reads) - len(expected):] == expected
    extra = reads[:len(reads) - len(expected)]
    assert len(extra) <= 2 and all(value < 10 for value in extra), reads


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
