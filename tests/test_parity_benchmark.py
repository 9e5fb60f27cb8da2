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


@pytest.mark.parametrize("schedule", ["step", "cosine"])
def test_the_reference_follows_the_examples_schedule(schedule):
    """The reference's learning rate at each step is the one Keras's
    optimizer uses at that step of examples/cifar10.py's recipe."""
    args = parity.main_parser().parse_args(
        ["--epochs", "4", "--lr-schedule", schedule, "--warmup-epochs", "1"])
    args.seed = 0
    rates = parity.learning_rates(args, 5)
    assert rates.shape == (20,)
    from keras_quadratic import cifar

    model = keras.Sequential([keras.Input((1,)), keras.layers.Dense(1)])
    optimizer = keras.optimizers.SGD(cifar.learning_rate_schedule(
        cifar.parse_args(parity.recipe_flags(args, "quadratic")), 5))
    model.compile(optimizer, "mse")
    used = []
    for _ in range(20):
        used.append(float(keras.ops.convert_to_numpy(
            optimizer.learning_rate)))
        model.train_on_batch(np.ones((1, 1)), np.ones((1, 1)))
    np.testing.assert_allclose(rates, used, rtol=1e-6)
    if schedule == "step":  # /10 after epoch 2, /100 after epoch 3
        np.testing.assert_allclose(rates, [0.1] * 10 + [0.01] * 5
                                   + [0.001] * 5, rtol=1e-6)
    else:  # up from lr/10 over epoch 1, then down to 0
        assert rates[0] == pytest.approx(0.01)
        assert rates[5] == pytest.approx(0.1)
        assert np.all(np.diff(rates[:6]) > 0)
        assert np.all(np.diff(rates[5:]) < 0) and rates[-1] < 0.01


@pytest.mark.parametrize("keras_init", ["own", "reference"])
def test_tiny_run_in_memory(keras_init, tmp_path):
    x, y = _arrays(64)
    path = tmp_path / "tiny.npz"
    np.savez(path, x_train=x, y_train=y, x_test=x[:32], y_test=y[:32])
    env = dict(os.environ, PYTHONPATH=ROOT)
    result = subprocess.run(
        [sys.executable, os.path.join(ROOT, "benchmarks", "parity.py"),
         "--npz", str(path), "--epochs", "1", "--depth", "8",
         "--batch-size", "16", "--neurons", "quadratic", "--seeds", "0",
         "--lr-schedule", "cosine", "--keras-init", keras_init,
         "--backend", keras.backend.backend(), "--output-dir",
         str(tmp_path)],
        capture_output=True, text=True, timeout=600, env=env)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "| QResNet8 | 0 |" in result.stdout
    # both sides show their progress on stderr (stdout is the table)
    assert "pytorch-reference quadratic epoch 1" in result.stderr
    assert "val_accuracy" in result.stderr
    assert "val_accuracy" not in result.stdout
    assert (tmp_path / "parity.png").stat().st_size > 0
    with open(tmp_path / "parity.json") as f:
        (run,) = json.load(f)["results"]
    for side in ("pytorch_reference", "keras_quadratic"):
        assert len(run[side]) == 1 and 0.0 <= run[side][0] <= 1.0
    # the reference's initial weights, handed over as a file or not at all
    handed_over = tmp_path / "reference-initial-quadratic-depth8-seed0.npz"
    assert handed_over.exists() == (keras_init == "reference")


def test_table_rows_and_paired_differences():
    args = parity.main_parser().parse_args(["--neurons", "quadratic",
                                            "--seeds", "0", "1", "2"])
    results = [{"neuron": "quadratic", "seed": seed,
                "pytorch_reference": [0.1, ref],
                "keras_quadratic": [0.2, ours]}
               for seed, ref, ours in ((0, 0.60, 0.62), (1, 0.50, 0.51),
                                       (2, 0.70, 0.67))]
    lines = parity.table(results, args, "data").splitlines()
    assert "| QResNet20 | 1 | 50.00 | 51.00 | +1.00 |" in lines
    # differences +2, +1, -3: mean 0, sd of the paired differences
    assert ("| QResNet20 | mean +- sd | 60.00 +- 10.00 | 60.00 +- 8.19 | "
            "+0.00 +- 2.65 |") in lines


@pytest.mark.parametrize("data_format", ["channels_last", "channels_first"])
@pytest.mark.parametrize("neuron", ["quadratic", "linear"])
def test_keras_init_reference_starts_from_the_reference_weights(
        neuron, data_format, tmp_path):
    import torch

    from torch_reference import ResNet

    keras.config.set_image_data_format(data_format)  # reset by conftest
    args = parity.main_parser().parse_args(
        ["--npz", "unused.npz", "--depth", "8", "--seeds", "3",
         "--keras-init", "reference", "--output-dir", str(tmp_path)])
    args.seed = 3
    torch.manual_seed(3)
    reference = ResNet(8, neuron).eval()
    # what torch_run leaves for the Keras side
    np.savez(parity.initial_weights_path(args, neuron),
             **{k: v.numpy() for k, v in reference.state_dict().items()})
    model = parity.keras_model(args, neuron, 5, data_format)
    x = np.random.default_rng(0).standard_normal(
        (4, 32, 32, 3)).astype("float32")
    with torch.no_grad():
        expected = reference(torch.from_numpy(
            x.transpose(0, 3, 1, 2).copy())).numpy()
    inputs = x if data_format == "channels_last" else x.transpose(0, 3, 1, 2)
    # At initialization the gates and squares are 1 and 0 and batch norm
    # the identity on both sides, so this checks the drawn weights (He
    # kernels, PyTorch's biases); test_torch_parity checks the full map.
    np.testing.assert_allclose(model.predict(inputs, verbose=0), expected,
                               rtol=1e-4, atol=1e-4)
    # and not by chance: keras-quadratic's own draw predicts otherwise
    args.keras_init = "own"
    own = parity.keras_model(args, neuron, 5, data_format)
    assert np.abs(own.predict(inputs, verbose=0) - expected).max() > 1e-2


def test_a_weight_the_reference_lacks_is_an_error():
    import keras_quadratic as kq
    from reference_weights import keras_counterparts

    model = kq.models.QResNet(8, "quadratic", rezero=True,
                              input_shape=(32, 32, 3))
    with pytest.raises(ValueError, match="no counterpart"):
        keras_counterparts(model)


def test_keras_init_reference_needs_npz(capsys, tmp_path):
    with pytest.raises(SystemExit) as exit_:
        parity.main(["--keras-init", "reference", "--epochs", "1",
                     "--output-dir", str(tmp_path)])
    assert exit_.value.code == 2
    assert "--keras-init reference needs --npz" in capsys.readouterr().err


def _sgd_runs(rates, momentum, gamma=0.1, sgd=None):
    """The weights of a QuadraticDense layer after len(rates) SGD steps
    (momentum 0.9, coupled weight decay 1e-2) on the least-squares loss
    0.5 |A w - b|^2 of all its weights w, from the same start: `sgd`
    (Keras's SGD by default) in kq's ReLinearOptimizer (the quadratic
    weights at rate * gamma), and
    torch.optim.SGD with those weights in a group of their own, given its
    rates by parity.set_step_rate as torch_run does."""
    import torch

    import keras_quadratic as kq
    from keras_quadratic.groups import quadratic_group

    layer = kq.layers.QuadraticDense(2)
    layer.build((None, 3))
    variables = layer.trainable_variables
    sizes = [int(np.prod(v.shape)) for v in variables]
    rng = np.random.default_rng(1)
    start = rng.normal(size=sum(sizes)).astype("float32")
    a = rng.normal(size=(10, len(start))).astype("float32")
    b = rng.normal(size=10).astype("float32")
    split = lambda w: np.split(w, np.cumsum(sizes)[:-1])  # noqa: E731
    gradient = lambda w: a.T @ (a @ w - b)  # noqa: E731

    for v, value in zip(variables, split(start)):
        v.assign(value.reshape(v.shape))
    sgd = sgd or keras.optimizers.SGD
    optimizer = kq.optimizers.ReLinearOptimizer(
        sgd(learning_rate=float(rates[0]), momentum=0.9),
        gamma_g=gamma, gamma_b=gamma)
    optimizer.build(variables)
    for rate in rates:
        optimizer.learning_rate.assign(float(rate))
        w = np.concatenate([keras.ops.convert_to_numpy(v).ravel()
                            for v in variables])
        optimizer.apply([keras.ops.convert_to_tensor(g.reshape(v.shape))
                         for g, v in zip(split(gradient(w) + 1e-2 * w),
                                         variables)], variables)
    ours = np.concatenate([keras.ops.convert_to_numpy(v).ravel()
                           for v in variables])

    parameters = [torch.nn.Parameter(torch.from_numpy(value.copy()))
                  for value in split(start)]
    quadratic = [quadratic_group(v) is not None for v in variables]
    assert 0 < sum(quadratic) < len(quadratic)
    reference = torch.optim.SGD(
        [{"params": [p for p, q in zip(parameters, quadratic) if not q]},
         {"params": [p for p, q in zip(parameters, quadratic) if q],
          "lr": float(rates[0]) * gamma}],
        lr=float(rates[0]), momentum=0.9, weight_decay=1e-2)
    for step in range(len(rates)):
        parity.set_step_rate(reference, [1.0, gamma], rates, step, momentum)
        w = np.concatenate([p.detach().numpy() for p in parameters])
        for p, g in zip(parameters, split(gradient(w))):
            p.grad = torch.from_numpy(np.ascontiguousarray(g))
        reference.step()
    return ours, np.concatenate([p.detach().numpy() for p in parameters])


def test_reference_momentum_keras_takes_keras_steps():
    # a warm-up, then a decay (the rate held for one step at the top)
    rates = np.concatenate([np.linspace(0.005, 0.05, 10),
                            np.linspace(0.05, 0.001, 20)])
    ours, reference = _sgd_runs(rates, "keras")
    np.testing.assert_allclose(reference, ours, rtol=1e-5, atol=1e-6)
    # without it, PyTorch's momentum lands elsewhere (the test can fail)
    ours, reference = _sgd_runs(rates, "pytorch")
    assert np.abs(reference - ours).max() > 1e-3
    # at a constant rate the two formulations agree anyway
    ours, reference = _sgd_runs(np.full(30, 0.02), "pytorch")
    np.testing.assert_allclose(reference, ours, rtol=1e-5, atol=1e-6)


def test_pytorch_sgd_in_relinear_takes_the_references_steps():
    # examples/cifar10.py's default SGD and the reference's parameter
    # groups, under a changing rate: the same weights
    import keras_quadratic as kq

    rates = np.concatenate([np.linspace(0.005, 0.05, 10),
                            np.linspace(0.05, 0.001, 20)])
    ours, reference = _sgd_runs(rates, "pytorch",
                                sgd=kq.optimizers.PyTorchSGD)
    np.testing.assert_allclose(reference, ours, rtol=1e-5, atol=1e-6)


def test_reference_momentum_keras_refuses_a_drop_to_zero():
    import torch

    parameter = torch.nn.Parameter(torch.ones(2))
    optimizer = torch.optim.SGD([parameter], lr=0.1, momentum=0.9)
    with pytest.raises(ValueError, match="drops to 0.0"):
        parity.keras_style_momentum(optimizer, 0.1, 0.0)


@pytest.mark.parametrize("rule", ["pytorch", "keras"])
def test_divergence_keras_steps_equal_the_references_in_float64(tmp_path,
                                                                 rule):
    # benchmarks/divergence.py, tiny: keras-quadratic's first steps stay
    # within rounding of the reference's (same weights, batches, rates,
    # momentum rule), far below the distance that a 1e-5 perturbation of
    # the rates makes. (Rounding: 2e-14 after a step on TensorFlow; about
    # 2e-10, float32's level, on JAX and torch, where some intermediate of
    # Keras's float64 path is rounded to float32. A step that does
    # nothing is 1e-3 off; decaying the quadratic weights, about 5e-9.)
    x, y = _arrays(64)
    np.savez(tmp_path / "tiny.npz", x_train=x, y_train=y, x_test=x[:16],
             y_test=y[:16])
    env = dict(os.environ, PYTHONPATH=ROOT)
    result = subprocess.run(
        [sys.executable, os.path.join(ROOT, "benchmarks", "divergence.py"),
         "--npz", str(tmp_path / "tiny.npz"), "--depth", "8", "--steps",
         "3", "--batch-size", "16", "--epochs", "2", "--epsilon", "1e-5",
         "--sgd", rule],
        capture_output=True, text=True, env=env, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    rows = [line.split("|")[1:-1] for line in result.stdout.splitlines()
            if line.startswith("| ") and line.split("|")[1].strip().isdigit()]
    assert [int(r[0]) for r in rows] == [1, 2, 3]
    ours = [float(r[2]) for r in rows]
    perturbed = [float(r[3]) for r in rows]
    assert ours[0] < 1e-9, result.stdout
    assert all(10 * o < q for o, q in zip(ours, perturbed)), result.stdout
