import keras
import numpy as np
import pytest
from conftest import random
from conftest import to_numpy

import keras_quadratic as kq
from keras_quadratic.groups import quadratic_group


def test_decays_every_conventional_weight_and_no_quadratic_one():
    model = kq.models.QResNet(depth=8)
    count = kq.regularizers.add_weight_decay(model, 1e-4)
    conventional = [v for v in model.trainable_weights
                    if quadratic_group(v) is None]
    assert count == len(conventional) == len(model.losses)
    kinds = {v.path.split("/")[-1] for v in conventional}
    assert {"kernel", "bias", "gamma", "beta"} <= kinds
    expected = sum(0.5e-4 * float((to_numpy(v) ** 2).sum())
                   for v in conventional)
    total = sum(float(to_numpy(loss)) for loss in model.losses)
    np.testing.assert_allclose(total, expected, rtol=1e-5)
    for v in model.trainable_weights:
        if quadratic_group(v) is not None:
            assert v.regularizer is None


def test_two_sgd_momentum_steps_equal_pytorch_rule():
    """torch.optim.SGD(lr, momentum, weight_decay): g = grad + wd * w,
    buf = m * buf + g, w -= lr * buf; computed here in float64 NumPy."""
    lr, momentum, wd = 0.1, 0.9, 0.05
    x, y = random((8, 3), 1), random((8, 1), 2)
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(1)])
    model.layers[0].bias.assign(np.array([0.3], "float32"))
    kq.regularizers.add_weight_decay(model, wd)
    w, b = (to_numpy(v).astype("float64") for v in model.weights)
    model.compile(keras.optimizers.SGD(lr, momentum=momentum), "mse")
    model.fit(x, y, batch_size=8, epochs=2, shuffle=False, verbose=0)
    buf_w, buf_b = np.zeros_like(w), np.zeros_like(b)
    for _ in range(2):
        error = x.astype("float64") @ w + b - y
        grad_w = 2 * x.T @ error / len(x) + wd * w
        grad_b = 2 * error.mean(axis=0) + wd * b
        buf_w, buf_b = momentum * buf_w + grad_w, momentum * buf_b + grad_b
        w, b = w - lr * buf_w, b - lr * buf_b
    np.testing.assert_allclose(to_numpy(model.weights[0]), w, rtol=1e-5,
                               atol=1e-6)
    np.testing.assert_allclose(to_numpy(model.weights[1]), b, rtol=1e-5,
                               atol=1e-6)


def test_keeps_an_existing_regularizer():
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(
        2, kernel_regularizer=keras.regularizers.L1(0.1))])
    kernel = to_numpy(model.layers[0].kernel)
    kq.regularizers.add_weight_decay(model, 0.2)
    total = sum(float(to_numpy(loss)) for loss in model.losses)
    np.testing.assert_allclose(
        total, 0.1 * np.abs(kernel).sum() + 0.1 * (kernel ** 2).sum(),
        rtol=1e-5)


def test_a_second_call_replaces_the_decay_and_zero_removes_it():
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(
        2, kernel_regularizer=keras.regularizers.L1(0.1))])
    kernel, bias = (to_numpy(v) for v in model.weights)

    def total():
        return sum(float(to_numpy(loss)) for loss in model.losses)

    own = 0.1 * np.abs(kernel).sum()
    for wd in (0.2, 0.2, 0.4):  # never stacked
        assert kq.regularizers.add_weight_decay(model, wd) == 2
        np.testing.assert_allclose(
            total(), own + wd / 2 * ((kernel ** 2).sum() + (bias ** 2).sum()),
            rtol=1e-5)
    assert kq.regularizers.add_weight_decay(model, 0.0) == 0
    np.testing.assert_allclose(total(), own, rtol=1e-5)
    # a regularizer the user sets between two calls is theirs and stays
    model.layers[0].kernel.regularizer = keras.regularizers.L1(1.0)
    kq.regularizers.add_weight_decay(model, 0.2)
    np.testing.assert_allclose(
        total(), np.abs(kernel).sum()
        + 0.1 * ((kernel ** 2).sum() + (bias ** 2).sum()), rtol=1e-5)


def test_bad_arguments():
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)])
    with pytest.raises(ValueError, match="weight_decay"):
        kq.regularizers.add_weight_decay(model, -1.0)
    with pytest.raises(TypeError, match="weight_decay"):
        kq.regularizers.add_weight_decay(model, "a lot")
    with pytest.raises(ValueError, match="built Keras model"):
        kq.regularizers.add_weight_decay(keras.layers.Dense(2), 1e-4)


def test_add_weight_decay_after_training_takes_effect_at_the_next_fit():
    """Issue #26 item 5: JAX and TensorFlow trace the step once; the decay
    added after a first fit must still act in the next one."""
    x, y = random((8, 4)), random((8, 1), 1)

    def after_two_fits(decay):
        keras.utils.set_random_seed(0)
        model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(1)])
        model.compile(keras.optimizers.SGD(0.1), "mse")
        model.fit(x, y, batch_size=8, verbose=0)
        first = [to_numpy(w) for w in model.trainable_weights]
        kq.regularizers.add_weight_decay(model, decay)
        model.fit(x, y, batch_size=8, verbose=0)
        return first, [to_numpy(w) for w in model.trainable_weights]

    first, plain = after_two_fits(0.0)
    _, decayed = after_two_fits(0.5)
    # plain SGD: the decayed step is the plain one minus lr * wd * w
    for w, a, b in zip(first, plain, decayed):
        np.testing.assert_allclose(b - a, -0.1 * 0.5 * w, rtol=1e-4,
                                   atol=1e-6)
