"""kq.layers.BatchNormalization: Keras's BatchNormalization, computed by
PyTorch's fused kernel on torch. Checked against a float64 NumPy batch norm
and against keras.layers.BatchNormalization itself, on every backend."""

import keras
import numpy as np
import pytest
from conftest import random
from conftest import to_numpy

import keras_quadratic as kq

CASES = [
    # input shape, axis
    ((6, 5), -1),
    ((3, 4, 5), -1),
    ((3, 4, 5), 1),
    ((2, 4, 5, 3), -1),
    ((2, 3, 4, 5), 1),
    ((2, 3, 4, 5), 2),
    ((2, 3, 4, 3, 2), -1),
]
TOLERANCE = {"float32": 1e-5, "mixed_bfloat16": 2e-2, "mixed_float16": 2e-3}


def _layer(cls, shape, seed=3, **kwargs):
    layer = cls(momentum=0.8, epsilon=1e-3, **kwargs)
    layer.build(shape)
    channels = shape[layer.axis]
    for i, variable in enumerate(layer.weights):
        values = random((channels,), seed + i)
        if "variance" in variable.path:
            values = values ** 2 + 0.5
        variable.assign(values)
    return layer


def _numpy_batch_norm(x, axis, gamma, beta, mean, variance, epsilon):
    shape = [1] * x.ndim
    shape[axis] = -1
    return ((x - mean.reshape(shape)) / np.sqrt(variance.reshape(shape)
                                                + epsilon)
            * gamma.reshape(shape) + beta.reshape(shape))


@pytest.mark.parametrize("policy", list(TOLERANCE))
@pytest.mark.parametrize("shape,axis", CASES)
def test_equals_a_float64_batch_norm(shape, axis, policy):
    x = random(shape, scale=3.0) + 2.0
    layer = _layer(kq.layers.BatchNormalization, shape, axis=axis,
                   dtype=policy)
    gamma, beta, moving_mean, moving_variance = [
        to_numpy(v).astype("float64") for v in layer.weights]
    x_in = to_numpy(keras.ops.cast(keras.ops.cast(x, layer.compute_dtype),
                                   "float32")).astype("float64")
    reduced = tuple(i for i in range(len(shape)) if i != axis % len(shape))
    mean, variance = x_in.mean(reduced), x_in.var(reduced)

    y = layer(x, training=True)
    assert keras.backend.standardize_dtype(y.dtype) == layer.compute_dtype
    tolerance = TOLERANCE[policy]
    np.testing.assert_allclose(
        to_numpy(keras.ops.cast(y, "float32")),
        _numpy_batch_norm(x_in, axis, gamma, beta, mean, variance, 1e-3),
        rtol=tolerance, atol=tolerance)
    np.testing.assert_allclose(to_numpy(layer.moving_mean),
                               0.8 * moving_mean + 0.2 * mean, rtol=1e-5,
                               atol=1e-5)
    np.testing.assert_allclose(to_numpy(layer.moving_variance),
                               0.8 * moving_variance + 0.2 * variance,
                               rtol=1e-5, atol=1e-5)

    # inference: the moving statistics, which the call left unchanged
    moving = [to_numpy(layer.moving_mean), to_numpy(layer.moving_variance)]
    y = layer(x, training=False)
    np.testing.assert_allclose(
        to_numpy(keras.ops.cast(y, "float32")),
        _numpy_batch_norm(x_in, axis, gamma, beta, *moving, 1e-3),
        rtol=tolerance, atol=tolerance)
    np.testing.assert_array_equal(to_numpy(layer.moving_mean), moving[0])


@pytest.mark.parametrize("policy", ["float32", "mixed_bfloat16"])
@pytest.mark.parametrize("shape,axis,center,scale", [
    ((6, 5), -1, True, True),
    ((2, 4, 5, 3), -1, True, True),
    ((2, 3, 4, 5), 1, False, True),
    ((2, 4, 5, 3), -1, True, False),
])
def test_trains_as_keras_batch_normalization(shape, axis, center, scale,
                                             policy):
    # One SGD step of Dense -> batch norm: the updated weights of both
    # layers hold the gradients for the input, gamma and beta.
    x, target = random(shape, 1), random(shape[:-1] + (4,), 2)
    weights = []
    for cls in (keras.layers.BatchNormalization,
                kq.layers.BatchNormalization):
        model = keras.Sequential([
            keras.Input(shape[1:]),
            keras.layers.Dense(shape[-1], dtype=policy),
            cls(axis=axis, center=center, scale=scale, momentum=0.8,
                dtype=policy),
            keras.layers.Dense(4, dtype=policy)])
        for i, variable in enumerate(model.weights):
            variable.assign(random(variable.shape, 10 + i) ** 2 + 0.1)
        model.compile(keras.optimizers.SGD(0.5), "mse")
        model.train_on_batch(x, target)
        weights.append([to_numpy(w) for w in model.weights])
    tolerance = TOLERANCE[policy]
    for expected, got in zip(*weights):
        np.testing.assert_allclose(got, expected, rtol=tolerance,
                                   atol=tolerance)


@pytest.mark.parametrize("case", [
    "mask", "renorm", "one_value", "float64", "bfloat16_variables",
    "frozen", "rank3_channels_last", "middle_axis"])
def test_equals_keras_where_the_kernel_does_not_apply_or_is_frozen(case):
    # shapes the kernel would take, but for the case
    shape, kwargs, mask = (6, 5), {}, None
    if case == "mask":
        shape = (2, 4, 5, 3)
        mask = np.random.default_rng(0).random(shape[:-1]) < 0.6
    elif case == "renorm":
        kwargs = dict(renorm=True)
    elif case == "one_value":  # PyTorch refuses one value per channel
        shape = (1, 5)
    elif case in ("float64", "bfloat16_variables"):
        kwargs = dict(dtype=case.split("_")[0])
    elif case == "frozen":
        shape = (2, 4, 5, 3)
    elif case == "rank3_channels_last":
        shape = (4, 3, 5)
    elif case == "middle_axis":
        shape, kwargs = (2, 3, 4, 5), dict(axis=2)
    x = random(shape, scale=2.0) + 1.0
    results = []
    for cls in (keras.layers.BatchNormalization,
                kq.layers.BatchNormalization):
        layer = _layer(cls, shape, **kwargs)
        # frozen: training=True with trainable=False normalizes with the
        # moving statistics and leaves them as they are
        layer.trainable = case != "frozen"
        y = layer(x, training=True, mask=mask)
        results.append([to_numpy(keras.ops.cast(y, "float32"))]
                       + [to_numpy(keras.ops.cast(w, "float32"))
                          for w in layer.weights])
    # Keras's own computation, to the bit; frozen, the kernel's inference
    tolerance = 1e-6 if case == "frozen" else 0
    for expected, got in zip(*results):
        np.testing.assert_allclose(got, expected, rtol=tolerance,
                                   atol=tolerance)


def test_stateless_call_returns_the_new_statistics_and_keeps_the_variables():
    x = random((6, 4, 4, 3), scale=2.0) + 1.0
    results = []
    for cls in (keras.layers.BatchNormalization,
                kq.layers.BatchNormalization):
        layer = _layer(cls, x.shape)
        before = [to_numpy(v) for v in layer.non_trainable_weights]
        y, statistics = layer.stateless_call(
            [v.value for v in layer.trainable_weights],
            [v.value for v in layer.non_trainable_weights], x, training=True)
        for variable, value in zip(layer.non_trainable_weights, before):
            np.testing.assert_array_equal(to_numpy(variable), value)
        results.append([to_numpy(y)] + [to_numpy(v) for v in statistics])
        assert not np.allclose(results[-1][1], before[0])
    for expected, got in zip(*results):
        np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5)


@pytest.mark.skipif(keras.backend.backend() != "torch",
                    reason="about torch's autograd")
def test_torch_differentiates_inference_by_the_moving_statistics():
    # A functional training loop may differentiate by every variable: the
    # fused kernel takes the statistics as buffers, so Keras's way computes.
    import torch

    x = torch.tensor(random((4, 3)))
    gradients = []
    for cls in (keras.layers.BatchNormalization,
                kq.layers.BatchNormalization):
        layer = _layer(cls, (4, 3))
        statistics = [v.value.detach().clone().requires_grad_()
                      for v in layer.non_trainable_weights]
        y, _ = layer.stateless_call(
            [v.value for v in layer.trainable_weights], statistics, x,
            training=False)
        gradients.append([g.numpy() for g in torch.autograd.grad(
            (y * torch.tensor(random((4, 3), 5))).sum(), statistics)])
    for expected, got in zip(*gradients):
        np.testing.assert_allclose(got, expected, rtol=1e-6)


@pytest.mark.skipif(keras.backend.backend() != "torch",
                    reason="about the torch kernels that run")
@pytest.mark.parametrize("shape,axis", [((2, 4, 5, 3), -1),
                                        ((2, 3, 4, 5), 1),
                                        ((2, 3, 4, 2, 3), -1)])
def test_torch_runs_one_fused_kernel_and_copies_no_input(shape, axis):
    import torch
    from torch.profiler import ProfilerActivity
    from torch.profiler import profile

    x = torch.tensor(random(shape), requires_grad=True)
    layer = kq.layers.BatchNormalization(axis=axis)
    layer(x, training=True)
    with profile(activities=[ProfilerActivity.CPU],
                 record_shapes=True) as trace:
        y = layer(x, training=True)
        torch.autograd.grad(y, x, torch.ones_like(y))
    names = [e.name for e in trace.events()]
    assert names.count("aten::native_batch_norm") == 1
    assert names.count("aten::native_batch_norm_backward") == 1
    assert "aten::mean" not in names and "aten::var" not in names
    copied = [e.input_shapes[0] for e in trace.events()
              if e.name in ("aten::copy_", "aten::clone", "aten::contiguous")]
    channels_first = [shape[0], shape[axis],
                      *(s for i, s in enumerate(shape)
                        if i not in (0, axis % len(shape)))]
    assert list(shape) not in copied and channels_first not in copied


def test_qresnet_uses_it():
    model = kq.models.QResNet(8, "quadratic", input_shape=(8, 8, 3))
    norms = [layer for layer in model.layers
             if isinstance(layer, keras.layers.BatchNormalization)]
    assert norms and all(isinstance(layer, kq.layers.BatchNormalization)
                         for layer in norms)


def test_weight_files_are_interchangeable_with_keras_batch_normalization(
        tmp_path):
    # Keras names the variables in a .weights.h5 after the layers' classes.
    def model(cls):
        return keras.Sequential([keras.Input((4, 4, 3)),
                                 keras.layers.Conv2D(2, 3), cls(),
                                 keras.layers.Flatten(), cls()])

    x = random((2, 4, 4, 3))
    for source, target in ((keras.layers.BatchNormalization,
                            kq.layers.BatchNormalization),
                           (kq.layers.BatchNormalization,
                            keras.layers.BatchNormalization)):
        saved = model(source)
        for i, variable in enumerate(saved.weights):
            variable.assign(random(variable.shape, i) ** 2 + 0.5)
        path = str(tmp_path / f"{source.__module__}.weights.h5")
        saved.save_weights(path)
        loaded = model(target)
        loaded.load_weights(path)
        np.testing.assert_allclose(to_numpy(loaded(x)), to_numpy(saved(x)),
                                   rtol=1e-5, atol=1e-5)
