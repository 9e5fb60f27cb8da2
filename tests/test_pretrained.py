"""The CIFAR-10 weights that ship with the package and `preprocess_input`."""

import json
import os

import keras
import numpy as np
import pytest
from conftest import to_numpy

import keras_quadratic as kq
from keras_quadratic.models import QResNet
from keras_quadratic.models import preprocess_input
from keras_quadratic.models.qresnet import CIFAR10_WEIGHTS
from keras_quadratic.models.qresnet import WEIGHTS_DIR

RESULTS = os.path.join(os.path.dirname(os.path.dirname(__file__)), "docs",
                       "results", "cifar10.json")


def _images(n=4, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (n, 32, 32, 3),
                                                dtype="uint8")


def test_preprocess_input_is_the_per_channel_normalization():
    x = _images()
    expected = (x / 255.0 - np.array(kq.models.qresnet.CIFAR10_MEAN)) / (
        np.array(kq.models.qresnet.CIFAR10_STD))
    y = preprocess_input(x)
    assert isinstance(y, np.ndarray) and y.dtype == np.float32
    np.testing.assert_allclose(y, expected, rtol=1e-5, atol=1e-5)
    # one image, a tensor, channels_first
    np.testing.assert_allclose(preprocess_input(x[0]), y[0], rtol=1e-6)
    tensor = preprocess_input(keras.ops.convert_to_tensor(x))
    np.testing.assert_allclose(to_numpy(tensor), y, rtol=1e-6)
    first = preprocess_input(np.moveaxis(x, -1, 1), "channels_first")
    np.testing.assert_allclose(first, np.moveaxis(y, -1, 1), rtol=1e-6)
    if keras.backend.backend() == "torch":  # stays in torch (no NumPy)
        import torch

        grad = torch.tensor(x, dtype=torch.float32, requires_grad=True)
        np.testing.assert_allclose(
            preprocess_input(grad).detach().numpy(), y, rtol=1e-6)


@pytest.mark.parametrize("x,kwargs,match", [
    (np.zeros((2, 32, 32, 4), "uint8"), {}, "3 channels"),
    (np.zeros((32, 32), "uint8"), {}, "one image"),
    (np.zeros((2, 32, 32, 3), "uint8"), dict(data_format="nchw"),
     "data_format"),
])
def test_preprocess_input_refuses_what_it_cannot_read(x, kwargs, match):
    with pytest.raises(ValueError, match=match):
        preprocess_input(x, **kwargs)


@pytest.fixture(scope="module")
def shipped():
    """Each shipped model, built once (channels_last, float32)."""
    return {(depth, neuron): QResNet(depth, neuron, weights="cifar10")
            for depth, neuron in CIFAR10_WEIGHTS}


def test_every_listed_file_ships_and_is_small():
    sizes = [os.path.getsize(os.path.join(WEIGHTS_DIR, name))
             for name in CIFAR10_WEIGHTS.values()]
    assert sum(sizes) < 15e6


def test_the_weights_load_and_are_trained(shipped):
    for (depth, neuron), model in shipped.items():
        fresh = QResNet(depth, neuron)
        # every weight loaded (none left at its initial value, but the
        # batch norms' that training does not move)
        for loaded, initial in zip(model.weights, fresh.weights):
            assert loaded.path == initial.path
            assert not np.array_equal(to_numpy(loaded), to_numpy(initial)), (
                loaded.path)
        if neuron != "linear":  # ReLinear let the quadratic terms grow
            square = model.get_layer("stage1_block1_conv1").square_kernel
            assert float(np.abs(to_numpy(square)).max()) > 1e-3


def test_the_weights_serve_both_data_formats_and_a_path(shipped):
    x = preprocess_input(_images())
    model = shipped[(20, "quadratic")]
    expected = to_numpy(model(x))
    first = QResNet(20, weights="cifar10", data_format="channels_first")
    np.testing.assert_allclose(to_numpy(first(np.moveaxis(x, -1, 1))),
                               expected, rtol=1e-4, atol=1e-4)
    path = os.path.join(WEIGHTS_DIR, CIFAR10_WEIGHTS[(20, "quadratic")])
    np.testing.assert_allclose(to_numpy(QResNet(20, weights=path)(x)),
                               expected, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("kwargs,error,match", [
    (dict(depth=56, weights="cifar10"), ValueError,
     r"no CIFAR-10 weights ship for depth=56.*available for \(depth=20"),
    (dict(num_classes=100, weights="cifar10"), ValueError, "num_classes"),
    (dict(rezero=True, weights="cifar10"), ValueError, "rezero"),
    (dict(input_shape=(32, 32, 1), weights="cifar10"), ValueError,
     "input_shape"),
    (dict(weights="imagenet"), ValueError, "existing .weights.h5"),
    (dict(weights=True), TypeError, "`weights` must be None"),
    (dict(input_shape=32, weights="cifar10"), ValueError, "input_shape"),
])
def test_combinations_without_weights_fail_clearly(kwargs, error, match):
    with pytest.raises(error, match=match):
        QResNet(**kwargs)


def _cifar10_test_set():
    """The real CIFAR-10 test set, where tfds has it prepared (its default
    data dir, or TFDS_DATA_DIR); else None."""
    try:
        import tensorflow_datasets as tfds
    except ImportError:
        return None
    builder = tfds.builder("cifar10")
    if not builder.is_prepared():
        return None
    return tfds.as_numpy(builder.as_dataset(split="test", batch_size=-1,
                                            as_supervised=True))


def test_the_shipped_weights_reproduce_their_recorded_accuracy(shipped):
    data = _cifar10_test_set()
    if data is None:
        pytest.skip("CIFAR-10 is not prepared for tfds here (set "
                    "TFDS_DATA_DIR to a data dir that holds it)")
    images, labels = data
    with open(RESULTS) as f:
        runs = {r["weights"]: r for r in json.load(f)["runs"]
                if r.get("weights")}
    x = preprocess_input(images)
    for key, model in shipped.items():
        run = runs[CIFAR10_WEIGHTS[key]]
        predictions = model.predict(x, batch_size=500, verbose=0)
        accuracy = float(np.mean(predictions.argmax(-1) == labels))
        # float32 here against float32 recorded (a few images may flip
        # between backends), and against the run's own bf16 figure
        assert abs(accuracy - run["test_accuracy_float32"]) <= 1e-3, key
        assert abs(accuracy - run["test_accuracy"]) <= 5e-3, key
