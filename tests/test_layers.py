import functools
import os

import keras
import numpy as np
import pytest
from conftest import random
from conftest import to_numpy
from reference import conv_nd
from reference import quadratic

import keras_quadratic as kq
from keras_quadratic import regularizers

FULL = {1: kq.QuadraticConv1D, 2: kq.QuadraticConv2D, 3: kq.QuadraticConv3D}
COMPACT = {
    1: kq.CompactQuadraticConv1D,
    2: kq.CompactQuadraticConv2D,
    3: kq.CompactQuadraticConv3D,
}
KERAS_CONV = {1: keras.layers.Conv1D, 2: keras.layers.Conv2D,
              3: keras.layers.Conv3D}
SPATIAL = {1: (11,), 2: (9, 8), 3: (6, 5, 7)}

CONV_CASES = [
    # rank, kwargs
    (1, dict(kernel_size=3)),
    (1, dict(kernel_size=3, padding="causal", dilation_rate=2)),
    (1, dict(kernel_size=4, strides=2, padding="same")),
    (2, dict(kernel_size=3, padding="same")),
    (2, dict(kernel_size=(3, 2), strides=(2, 1))),
    (2, dict(kernel_size=3, dilation_rate=2, padding="same")),
    (2, dict(kernel_size=3, strides=2, padding="same",
             data_format="channels_first")),
    (2, dict(kernel_size=3, use_bias=False)),
    (3, dict(kernel_size=2, strides=(1, 2, 1))),
    (3, dict(kernel_size=3, padding="same", data_format="channels_first")),
]


def _input(rank, kwargs, channels=3, batch=2, seed=0):
    if kwargs.get("data_format") == "channels_first":
        return random((batch, channels) + SPATIAL[rank], seed)
    return random((batch,) + SPATIAL[rank] + (channels,), seed)


def _randomize(layer, seed=1):
    """Random values for every weight (no ReLinear structure left)."""
    for i, w in enumerate(layer.weights):
        w.assign(random(w.shape, seed + i, scale=0.3))
    return {w.path.split("/")[-1]: to_numpy(w) for w in layer.weights}


@pytest.mark.parametrize("compact", [False, True], ids=["full", "compact"])
@pytest.mark.parametrize("rank,kwargs", CONV_CASES)
def test_relinear_init_equals_keras_conv(rank, kwargs, compact):
    x = _input(rank, kwargs)
    layer = (COMPACT if compact else FULL)[rank](5, activation="relu",
                                                 **kwargs)
    conv = KERAS_CONV[rank](5, activation="relu", **kwargs)
    y = to_numpy(layer(x))
    conv.build(x.shape)
    conv.set_weights([to_numpy(layer.kernel)]
                     + ([to_numpy(layer.bias)] if layer.use_bias else []))
    # the linear part's shapes are exactly the Keras layer's
    assert [tuple(w.shape) for w in conv.weights] == [
        tuple(layer.kernel.shape)
    ] + ([tuple(layer.bias.shape)] if layer.use_bias else [])
    expected = to_numpy(conv(x))
    assert y.shape == expected.shape
    assert np.abs(expected).max() > 0
    np.testing.assert_allclose(y, expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("compact", [False, True], ids=["full", "compact"])
@pytest.mark.parametrize("rank,kwargs", CONV_CASES)
def test_conv_matches_float64_reference(rank, kwargs, compact):
    x = _input(rank, kwargs)
    layer = (COMPACT if compact else FULL)[rank](4, **kwargs)
    layer.build(x.shape)
    weights = _randomize(layer)
    y = to_numpy(layer(x))
    cf = kwargs.get("data_format") == "channels_first"
    padding = kwargs.get("padding", "valid")
    norm = lambda v: (v,) * rank if isinstance(v, int) else tuple(v)  # noqa
    strides = norm(kwargs.get("strides", 1))
    dilation = norm(kwargs.get("dilation_rate", 1))

    def linear(inputs, kernel):
        return conv_nd(inputs, kernel, strides, padding, dilation, cf)

    expected = quadratic(linear, x, weights, compact,
                         kwargs.get("use_bias", True), cf)
    assert y.shape == expected.shape
    np.testing.assert_allclose(y, expected, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("compact", [False, True], ids=["full", "compact"])
@pytest.mark.parametrize("use_bias", [True, False])
def test_dense_matches_keras_and_reference(compact, use_bias):
    x = random((4, 3, 6))
    cls = kq.CompactQuadraticDense if compact else kq.QuadraticDense
    layer = cls(5, use_bias=use_bias)
    dense = keras.layers.Dense(5, use_bias=use_bias)
    y = to_numpy(layer(x))
    dense.build(x.shape)
    dense.set_weights([to_numpy(w) for w in (layer.kernel, layer.bias)
                       if w is not None])
    np.testing.assert_allclose(y, to_numpy(dense(x)), rtol=1e-5, atol=1e-5)
    weights = _randomize(layer)
    expected = quadratic(lambda a, k: a @ k, x, weights, compact, use_bias)
    np.testing.assert_allclose(to_numpy(layer(x)), expected, rtol=1e-4,
                               atol=1e-4)


def test_weight_names_and_shapes():
    full = kq.QuadraticConv2D(6, 3)
    full.build((None, 8, 8, 4))
    assert [w.path.split("/")[-1] for w in full.weights] == [
        "kernel", "bias", "gate_kernel", "gate_bias", "square_kernel",
        "square_bias"]
    assert tuple(full.gate_kernel.shape) == (3, 3, 4, 6)
    compact = kq.CompactQuadraticConv2D(6, 3)
    compact.build((None, 8, 8, 4))
    assert [w.path.split("/")[-1] for w in compact.weights] == [
        "kernel", "bias", "square_kernel"]
    no_bias = kq.QuadraticDense(3, use_bias=False)
    no_bias.build((None, 4))
    assert [w.path.split("/")[-1] for w in no_bias.weights] == [
        "kernel", "gate_kernel", "gate_bias", "square_kernel"]
    np.testing.assert_array_equal(to_numpy(no_bias.gate_bias), np.ones(3))
    np.testing.assert_array_equal(to_numpy(no_bias.gate_kernel), 0)
    np.testing.assert_array_equal(to_numpy(no_bias.square_kernel), 0)


def test_global_image_data_format():
    keras.config.set_image_data_format("channels_first")
    layer = kq.QuadraticConv2D(5, 3, padding="same")
    assert layer.data_format == "channels_first"
    x = random((2, 3, 8, 8))
    assert tuple(layer(x).shape) == (2, 5, 8, 8)


@pytest.mark.parametrize(
    "layer,input_shape,expected",
    [
        (kq.QuadraticConv2D(7, 3, strides=2), (None, 15, 16, 3),
         (None, 7, 7, 7)),
        (kq.CompactQuadraticConv1D(4, 5, padding="same"), (None, None, 2),
         (None, None, 4)),
        (kq.QuadraticConv3D(2, 3, data_format="channels_first"),
         (None, 3, 5, 6, 7), (None, 2, 3, 4, 5)),
        (kq.QuadraticDense(9), (None, 4, 5), (None, 4, 9)),
    ],
)
def test_symbolic_shapes(layer, input_shape, expected):
    inputs = keras.Input(batch_shape=input_shape)
    outputs = layer(inputs)
    assert tuple(outputs.shape) == expected
    assert layer.compute_output_shape(input_shape) == expected
    model = keras.Model(inputs, outputs)
    concrete = tuple(2 if d is None else d for d in input_shape)
    y = model(random(concrete))
    assert tuple(y.shape) == tuple(
        2 if d is None else d for d in layer.compute_output_shape(concrete))


def _train_one_step(model, x, y):
    before = [to_numpy(w) for w in model.trainable_weights]
    model.compile(keras.optimizers.SGD(0.01), "mse")
    model.fit(x, y, batch_size=len(x), epochs=1, verbose=0)
    return [
        (w.path, float(np.abs(to_numpy(w) - b).max()))
        for w, b in zip(model.trainable_weights, before)
    ]


@pytest.mark.parametrize("compact", [False, True], ids=["full", "compact"])
def test_gradients_reach_every_weight(compact):
    conv = kq.CompactQuadraticConv2D if compact else kq.QuadraticConv2D
    dense = kq.CompactQuadraticDense if compact else kq.QuadraticDense
    model = keras.Sequential([
        keras.Input((6, 6, 2)),
        conv(3, 3, activation="tanh"),
        keras.layers.Flatten(),
        dense(2),
    ])
    moved = _train_one_step(model, random((8, 6, 6, 2)), random((8, 2), 1))
    assert len(moved) == (6 if not compact else 3) * 2
    for path, change in moved:
        assert change > 0, f"{path} did not move"


def _all_kwargs_layer():
    return kq.QuadraticConv2D(
        4, (3, 2), strides=(1, 2), padding="same", data_format="channels_last",
        activation="relu", use_bias=True, kernel_initializer="he_normal",
        bias_initializer=keras.initializers.Constant(0.1),
        kernel_regularizer=keras.regularizers.L2(1e-3),
        bias_regularizer=keras.regularizers.L1(1e-3),
        activity_regularizer=keras.regularizers.L2(1e-4),
        kernel_constraint=keras.constraints.MaxNorm(3.0),
        bias_constraint=keras.constraints.NonNeg(),
        gate_kernel_initializer=keras.initializers.RandomNormal(stddev=0.01),
        gate_bias_initializer="ones", square_kernel_initializer="zeros",
        square_bias_initializer="zeros",
        gate_kernel_regularizer=keras.regularizers.L2(1e-2),
        gate_bias_regularizer=None, square_kernel_regularizer="l1",
        square_bias_regularizer=None,
        gate_kernel_constraint=keras.constraints.MaxNorm(1.0),
        gate_bias_constraint=None, square_kernel_constraint=None,
        square_bias_constraint=keras.constraints.NonNeg(),
        relinear_regularizer=regularizers.ReLinearRegularizer(1e-3, 1e-2, 1e-4, 1e-3),
        name="q",
    )


def test_get_config_round_trip():
    layer = _all_kwargs_layer()
    config = layer.get_config()
    clone = kq.QuadraticConv2D.from_config(config)
    assert clone.get_config() == config
    assert config["relinear_regularizer"]["config"]["gate_l2"] == 1e-2
    # every constructor argument is in the config
    import inspect
    params = set()
    for cls in (kq.layers.BaseQuadraticConv, kq.layers.QuadraticLayer):
        params |= set(inspect.signature(cls.__init__).parameters)
    params -= {"self", "rank", "kwargs"}
    assert params <= set(config), params - set(config)
    dense = kq.CompactQuadraticDense(3, activation="gelu")
    assert kq.CompactQuadraticDense.from_config(
        dense.get_config()).get_config() == dense.get_config()
    # the registered name is what Keras deserializes
    restored = keras.layers.deserialize(keras.layers.serialize(layer))
    assert type(restored) is kq.QuadraticConv2D


@pytest.mark.parametrize("compact", [False, True], ids=["full", "compact"])
def test_keras_file_round_trip(tmp_path, compact):
    conv = kq.CompactQuadraticConv2D if compact else kq.QuadraticConv2D
    inputs = keras.Input((8, 8, 3))
    h = conv(4, 3, padding="same", activation="relu",
             relinear_regularizer=regularizers.ReLinearRegularizer(square_l2=1e-3))(inputs)
    h = kq.QuadraticConv1D(2, 3)(keras.layers.Reshape((64, 4))(h))
    outputs = kq.QuadraticDense(3)(keras.layers.Flatten()(h))
    model = keras.Model(inputs, outputs)
    for layer in model.layers:
        if isinstance(layer, kq.layers.QuadraticLayer):
            _randomize(layer)
    x = random((2, 8, 8, 3), 5)
    path = os.path.join(tmp_path, "model.keras")
    model.save(path)
    loaded = keras.saving.load_model(path)
    np.testing.assert_array_equal(to_numpy(loaded(x)), to_numpy(model(x)))
    assert isinstance(loaded.layers[1].relinear_regularizer,
                      regularizers.ReLinearRegularizer)
    np.testing.assert_allclose(
        sum(float(to_numpy(v)) for v in loaded.losses),
        sum(float(to_numpy(v)) for v in model.losses), rtol=1e-6)


@pytest.mark.parametrize("policy", ["mixed_float16", "mixed_bfloat16"])
@pytest.mark.parametrize("compact", [False, True], ids=["full", "compact"])
def test_mixed_precision(policy, compact):
    x = random((2, 8, 8, 3), scale=0.5)
    conv = kq.CompactQuadraticConv2D if compact else kq.QuadraticConv2D
    reference = conv(4, 3, padding="same")
    reference.build(x.shape)
    weights = _randomize(reference)
    expected = to_numpy(reference(x))
    keras.config.set_dtype_policy(policy)
    layer = conv(4, 3, padding="same")
    layer.build(x.shape)
    for w in layer.weights:
        w.assign(weights[w.path.split("/")[-1]])
    assert all(w.dtype == "float32" for w in layer.weights)
    y = layer(x)
    compute = policy.split("_")[1]
    assert keras.backend.standardize_dtype(y.dtype) == compute
    tolerance = 2e-2 if compute == "float16" else 1e-1
    np.testing.assert_allclose(to_numpy(y).astype("float32"), expected,
                               rtol=tolerance, atol=tolerance)


def test_mixed_precision_trains():
    keras.config.set_dtype_policy("mixed_float16")
    model = keras.Sequential([
        keras.Input((6, 6, 2)), kq.QuadraticConv2D(3, 3), keras.layers.Flatten(),
        keras.layers.Dense(2, dtype="float32")])
    model.compile(kq.optimizers.ReLinearOptimizer(keras.optimizers.SGD(0.01),
                                         gamma_g=1.0, gamma_b=1.0),
                  "mse", auto_scale_loss=True)
    history = model.fit(random((8, 6, 6, 2)), random((8, 2), 1), epochs=2,
                        verbose=0)
    assert np.all(np.isfinite(history.history["loss"]))
    assert float(np.abs(to_numpy(model.layers[0].gate_kernel)).max()) > 0


def test_relinear_regularizer_values():
    reg = regularizers.ReLinearRegularizer(gate_l1=0.1, gate_l2=0.2, square_l1=0.3,
                                square_l2=0.4)
    layer = kq.QuadraticDense(3, relinear_regularizer=reg,
                              kernel_regularizer=keras.regularizers.L2(0.5))
    layer.build((None, 4))
    # zero at the ReLinear initialization (the kernel's own L2 aside)
    kernel_l2 = 0.5 * np.sum(to_numpy(layer.kernel) ** 2)
    np.testing.assert_allclose(float(sum(to_numpy(v) for v in layer.losses)),
                               kernel_l2, rtol=1e-5)
    w = _randomize(layer)
    gate = [w["gate_kernel"], w["gate_bias"] - 1.0]
    square = [w["square_kernel"], w["square_bias"]]
    expected = 0.5 * np.sum(w["kernel"] ** 2)
    expected += sum(0.1 * np.abs(a).sum() + 0.2 * (a ** 2).sum() for a in gate)
    expected += sum(0.3 * np.abs(a).sum() + 0.4 * (a ** 2).sum()
                    for a in square)
    total = float(sum(to_numpy(v) for v in layer.losses))
    np.testing.assert_allclose(total, expected, rtol=1e-5)
    # in model.losses too
    model = keras.Sequential([keras.Input((4,)), layer])
    np.testing.assert_allclose(
        float(sum(to_numpy(v) for v in model.losses)), expected, rtol=1e-5)


def test_relinear_regularizer_combines_with_weight_regularizer():
    layer = kq.QuadraticDense(
        2, gate_bias_regularizer=keras.regularizers.L1(1.0),
        relinear_regularizer=regularizers.ReLinearRegularizer(gate_l2=1.0))
    layer.build((None, 3))
    layer.gate_bias.assign(np.array([2.0, -1.0], "float32"))
    # L1 on the value (3) + L2 on the distance from 1 (1 + 4)
    np.testing.assert_allclose(
        float(sum(to_numpy(v) for v in layer.losses)), 8.0, rtol=1e-6)


@pytest.mark.parametrize(
    "build,match",
    [
        (lambda: kq.QuadraticConv2D(0, 3), "filters"),
        (lambda: kq.QuadraticConv2D(-2, 3), "filters"),
        (lambda: kq.QuadraticConv2D(4, 0), "kernel_size"),
        (lambda: kq.QuadraticConv2D(4, (3, 3, 3)), "kernel_size"),
        (lambda: kq.QuadraticConv2D(4, 3, padding="full"), "padding"),
        (lambda: kq.QuadraticConv2D(4, 3, padding="causal"), "padding"),
        (lambda: kq.CompactQuadraticConv3D(4, 3, data_format="nhwc"),
         "data_format"),
        (lambda: kq.QuadraticDense(0), "units"),
        (lambda: kq.CompactQuadraticDense(2.5), "units"),
        (lambda: regularizers.ReLinearRegularizer(gate_l1=-1.0), "gate_l1"),
        (lambda: regularizers.ReLinearRegularizer(square_l2=float("nan")), "square_l2"),
        (lambda: kq.QuadraticDense(3, relinear_regularizer="l2"),
         "relinear_regularizer"),
    ],
)
def test_bad_arguments(build, match):
    with pytest.raises((ValueError, TypeError), match=match):
        build()


def test_bad_inputs_at_call():
    layer = kq.QuadraticConv2D(4, 3)
    layer(random((1, 8, 8, 3)))
    with pytest.raises(ValueError, match="quadratic_conv2d"):
        layer(random((1, 8, 8, 5)))  # channels differ from the build
    with pytest.raises(ValueError, match="ndim"):
        layer(random((1, 8, 3)))  # wrong rank
    dense = kq.QuadraticDense(2)
    dense(random((2, 4)))
    with pytest.raises(ValueError, match="quadratic_dense"):
        dense(random((2, 5)))


@pytest.mark.parametrize("cls", [kq.QuadraticDense, kq.CompactQuadraticDense])
def test_dense_passes_the_mask_on_as_keras_dense(cls):
    """Embedding(mask_zero=True) -> dense -> LSTM: with the mask passed on
    (as keras.layers.Dense does) the LSTM skips the padding, so a padded
    sequence gives what its unpadded prefix gives."""
    inputs = keras.Input((None,), dtype="int32")
    h = keras.layers.Embedding(10, 6, mask_zero=True)(inputs)
    model = keras.Model(inputs, keras.layers.LSTM(3)(cls(4)(h)))
    padded = to_numpy(model(np.array([[3, 5, 2, 0, 0]])))
    prefix = to_numpy(model(np.array([[3, 5, 2]])))
    np.testing.assert_allclose(padded, prefix, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("cls", [kq.CompactQuadraticConv2D,
                                 kq.CompactQuadraticDense])
def test_compact_layers_refuse_the_full_neurons_arguments(cls):
    # The compact neuron has no gate and one bias: these are not silently
    # dropped.
    args = (4, 3) if cls is kq.CompactQuadraticConv2D else (4,)
    with pytest.raises(TypeError, match="gate_kernel_initializer"):
        cls(*args, gate_kernel_initializer="ones")
    with pytest.raises(TypeError, match="square_bias_regularizer"):
        cls(*args, square_bias_regularizer="l2")


@pytest.mark.parametrize("cls,keras_cls", [
    (kq.QuadraticConv2D, keras.layers.Conv2D),
    (kq.CompactQuadraticConv1D, keras.layers.Conv1D),
])
def test_positional_arguments_line_up_with_keras(cls, keras_cls):
    # A drop-in: the same positional call means the same thing.
    rank = 2 if keras_cls is keras.layers.Conv2D else 1
    args = (4, 3, 2, "same", "channels_last", 1, 1, "relu", False)
    layer, conv = cls(*args), keras_cls(*args)
    for name in ("filters", "kernel_size", "strides", "padding",
                 "data_format", "dilation_rate", "groups", "use_bias"):
        assert layer.get_config()[name] == conv.get_config()[name], name
    assert layer.activation is conv.activation
    x = random((2,) + (8,) * rank + (3,))
    assert tuple(layer(x).shape) == tuple(conv(x).shape)
    with pytest.raises(ValueError, match="groups"):
        cls(4, 3, groups=3)


# Every kind of quadratic convolution, channels_first: TensorFlow's CPU
# kernels refuse NCHW in float16 and float64 on some processors (AMD EPYC:
# also keras.layers.Conv2D), so these layers compute it as NHWC there.
CHANNELS_FIRST_LAYERS = [
    (kq.QuadraticConv1D, dict(filters=3, kernel_size=3, padding="causal")),
    (kq.QuadraticConv2D, dict(filters=3, kernel_size=3, strides=2)),
    (kq.CompactQuadraticConv2D, dict(filters=3, kernel_size=(3, 2),
                                     padding="same", dilation_rate=2)),
    (kq.QuadraticConv3D, dict(filters=2, kernel_size=2)),
    (kq.QuadraticDepthwiseConv2D, dict(kernel_size=3, depth_multiplier=2)),
    (kq.CompactQuadraticDepthwiseConv1D, dict(kernel_size=3, padding="same")),
    (kq.QuadraticSeparableConv2D, dict(filters=3, kernel_size=3)),
    (kq.CompactQuadraticSeparableConv1D, dict(filters=3, kernel_size=3,
                                              quadratic_pointwise=True)),
]


@pytest.mark.skipif(keras.backend.backend() != "torch",
                    reason="about torch's memory layouts")
@pytest.mark.parametrize("cls,kwargs", [
    (kq.QuadraticConv2D, dict(filters=4, kernel_size=3, padding="same")),
    (kq.CompactQuadraticConv2D, dict(filters=4, kernel_size=3, strides=2)),
    (kq.QuadraticConv3D, dict(filters=2, kernel_size=2)),
    (kq.QuadraticDepthwiseConv2D, dict(kernel_size=3, depth_multiplier=2)),
], ids=["conv2d", "compact_strided", "conv3d", "depthwise"])
def test_torch_convolves_a_channels_last_input_without_copying_it(cls,
                                                                   kwargs):
    # Keras's torch convolution copies a channels_last input into NCHW
    # memory and back; the layers hand torch the transposed view instead
    # (an NCHW tensor in channels-last memory), which it takes as it is.
    import torch
    from torch.profiler import ProfilerActivity
    from torch.profiler import profile

    rank = int(cls.__name__[-2])
    spatial = SPATIAL[rank][:rank]
    x = torch.tensor(random((2, *spatial, 3), scale=0.5), requires_grad=True)
    layer = cls(**kwargs)
    layer(x)
    with profile(activities=[ProfilerActivity.CPU],
                 record_shapes=True) as trace:
        y = layer(x)
        (gradient,) = torch.autograd.grad(y, x, torch.ones_like(y))
    copies = [e.input_shapes[0] for e in trace.events()
              if e.name == "aten::copy_"]
    assert copies  # the profiler saw the step's copies (of the kernels)
    assert [2, 3, *spatial] not in copies  # and none of the input
    assert gradient.shape == x.shape


@pytest.mark.skipif(keras.backend.backend() != "torch",
                    reason="about torch's memory layouts")
@pytest.mark.parametrize("rank", [1, 2, 3])
@pytest.mark.parametrize("depthwise", [False, True], ids=["conv", "depthwise"])
@pytest.mark.parametrize("kwargs", [
    dict(strides=1, padding="same", dilation_rate=1),
    dict(strides=2, padding="same", dilation_rate=1),
    dict(strides=1, padding="valid", dilation_rate=2),
], ids=["same", "strided", "dilated"])
@pytest.mark.parametrize("memory", ["nhwc", "nchw"])
def test_torch_convolve_equals_keras_ops_to_the_bit(rank, depthwise, kwargs,
                                                    memory):
    import torch

    from keras_quadratic.layers.conv import convolve

    operation = (keras.ops.depthwise_conv if depthwise else keras.ops.conv)
    x = random((2, *SPATIAL[rank][:rank], 3), scale=0.5)
    if memory == "nhwc":
        x = torch.tensor(x, requires_grad=True)
    else:  # channels_last values in NCHW memory, as Keras's pooling returns
        x = torch.tensor(np.moveaxis(x, -1, 1).copy(), requires_grad=True)
        x = x.permute(0, *range(2, rank + 2), 1)
    kernel = torch.tensor(random((2,) * rank + (3, 2), 1),
                          requires_grad=True)
    results = []
    for function in (operation, functools.partial(convolve,
                                                  operation=operation)):
        y = function(x, kernel, data_format="channels_last", **kwargs)
        gradients = torch.autograd.grad(y, (x, kernel),
                                        torch.cos(torch.arange(y.numel())
                                                  ).reshape(y.shape))
        results.append([y.detach().numpy()]
                       + [g.numpy() for g in gradients])
    for got, expected in zip(*results):
        np.testing.assert_array_equal(got, expected)


@pytest.mark.skipif(keras.backend.backend() != "torch",
                    reason="about torch.compile")
def test_torch_compiled_training_takes_new_image_sizes():
    # Inductor's stride analysis fails on the transposed view for a second,
    # dynamic image size (torch 2.13): under torch.compile the layers
    # (the convolution and the batch norm) leave the layout to Keras.
    model = keras.Sequential([keras.Input((None, None, 3)),
                              kq.QuadraticConv2D(2, 3),
                              kq.layers.BatchNormalization(),
                              keras.layers.GlobalAveragePooling2D()])
    model.compile("sgd", "mse", jit_compile=True)
    for size in (6, 7):
        history = model.fit(random((2, size, size, 3)), random((2, 2), 1),
                            verbose=0)
        assert np.isfinite(history.history["loss"][0])


@pytest.mark.parametrize("dtype", ["float16", "bfloat16", "float32",
                                   "float64"])
@pytest.mark.parametrize("cls,kwargs", CHANNELS_FIRST_LAYERS,
                         ids=[c.__name__ for c, _ in CHANNELS_FIRST_LAYERS])
def test_channels_first_in_every_dtype(cls, kwargs, dtype):
    if dtype == "float64" and keras.backend.backend() == "jax":
        import jax

        if not jax.config.jax_enable_x64:
            pytest.skip("JAX without jax_enable_x64 computes float64 as "
                        "float32")
    rank = int(cls.__name__[-2])
    channels_last = random((2, *SPATIAL[rank][:rank], 2), scale=0.5)
    x = np.moveaxis(channels_last, -1, 1)
    layer = cls(**kwargs, data_format="channels_first", dtype=dtype)
    layer.build(x.shape)
    weights = [random(w.shape, i + 1, scale=0.3)
               for i, w in enumerate(layer.weights)]
    layer.set_weights(weights)
    # The reference: the same weights in float64, channels_last.
    reference = cls(**kwargs, data_format="channels_last", dtype="float64")
    reference.build(channels_last.shape)
    reference.set_weights(weights)
    expected = np.moveaxis(to_numpy(reference(channels_last.astype("float64"))),
                           -1, 1)
    y = layer(x.astype(dtype) if dtype != "bfloat16" else x)
    assert keras.backend.standardize_dtype(y.dtype) == dtype
    tolerance = {"float16": 2e-2, "bfloat16": 1e-1, "float32": 1e-5,
                 "float64": 1e-12}[dtype]
    assert np.abs(expected).max() > 0.1
    np.testing.assert_allclose(to_numpy(y).astype("float64"), expected,
                               rtol=tolerance, atol=tolerance)
