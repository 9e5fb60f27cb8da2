"""Quadratic depthwise and separable convolutions: equal to Keras's
DepthwiseConv/SeparableConv at the ReLinear initialization, to a float64
reference with random weights, and as well-behaved as Keras's layers
(config, .keras files, mixed precision, ReLinear groups, errors)."""

import os

import keras
import numpy as np
import pytest
from conftest import random
from conftest import to_numpy
from reference import conv_nd
from reference import depthwise_nd
from reference import quadratic

import keras_quadratic as kq
from keras_quadratic import regularizers
from keras_quadratic.groups import quadratic_group

DEPTHWISE = {
    (1, False): kq.QuadraticDepthwiseConv1D,
    (2, False): kq.QuadraticDepthwiseConv2D,
    (1, True): kq.CompactQuadraticDepthwiseConv1D,
    (2, True): kq.CompactQuadraticDepthwiseConv2D,
}
SEPARABLE = {
    (1, False): kq.QuadraticSeparableConv1D,
    (2, False): kq.QuadraticSeparableConv2D,
    (1, True): kq.CompactQuadraticSeparableConv1D,
    (2, True): kq.CompactQuadraticSeparableConv2D,
}
KERAS_DEPTHWISE = {1: keras.layers.DepthwiseConv1D,
                   2: keras.layers.DepthwiseConv2D}
KERAS_SEPARABLE = {1: keras.layers.SeparableConv1D,
                   2: keras.layers.SeparableConv2D}
SPATIAL = {1: (11,), 2: (9, 8)}

CASES = [
    # rank, kwargs (shared by the depthwise and separable layers)
    (1, dict(kernel_size=3)),
    (1, dict(kernel_size=4, strides=2, padding="same", depth_multiplier=2)),
    (1, dict(kernel_size=3, dilation_rate=2, data_format="channels_first")),
    (2, dict(kernel_size=3, padding="same")),
    (2, dict(kernel_size=(3, 2), strides=(2, 1), depth_multiplier=3)),
    (2, dict(kernel_size=3, dilation_rate=2, padding="same",
             use_bias=False)),
    (2, dict(kernel_size=3, strides=2, padding="same", depth_multiplier=2,
             data_format="channels_first")),
]
NEURONS = [False, True]
NEURON_IDS = ["full", "compact"]


def _input(rank, kwargs, channels=3, batch=2, seed=0):
    if kwargs.get("data_format") == "channels_first":
        return random((batch, channels) + SPATIAL[rank], seed)
    return random((batch,) + SPATIAL[rank] + (channels,), seed)


def _norm(value, rank):
    return (value,) * rank if isinstance(value, int) else tuple(value)


def _geometry(rank, kwargs):
    return (_norm(kwargs.get("strides", 1), rank),
            kwargs.get("padding", "valid"),
            _norm(kwargs.get("dilation_rate", 1), rank),
            kwargs.get("data_format") == "channels_first")


def _randomize(layer, seed=1):
    """Random values for every weight (no ReLinear structure left), by the
    weight's path relative to `layer`."""
    values = {}
    for i, w in enumerate(layer.weights):
        w.assign(random(w.shape, seed + i, scale=0.3))
        values["/".join(w.path.split("/")[1:])] = to_numpy(w)
    return values


def _part(values, prefix):
    """The weights of one part of a separable layer, by their own names."""
    return {key.split("/")[-1]: value for key, value in values.items()
            if key.split("/")[0].endswith(prefix)}


@pytest.mark.parametrize("compact", NEURONS, ids=NEURON_IDS)
@pytest.mark.parametrize("rank,kwargs", CASES)
def test_depthwise_at_init_equals_keras_and_random_equals_float64(
        rank, kwargs, compact):
    x = _input(rank, kwargs)
    layer = DEPTHWISE[(rank, compact)](activation="relu", **kwargs)
    keras_layer = KERAS_DEPTHWISE[rank](activation="relu", **kwargs)
    y = to_numpy(layer(x))
    keras_layer.build(x.shape)
    keras_layer.set_weights([to_numpy(w) for w in (layer.kernel, layer.bias)
                             if w is not None])
    assert [tuple(w.shape) for w in keras_layer.weights] == [
        tuple(w.shape) for w in (layer.kernel, layer.bias) if w is not None]
    expected = to_numpy(keras_layer(x))
    assert np.abs(expected).max() > 0
    np.testing.assert_allclose(y, expected, rtol=1e-5, atol=1e-5)

    layer.activation = None
    weights = _randomize(layer)
    strides, padding, dilation, cf = _geometry(rank, kwargs)

    def linear(inputs, kernel):
        return depthwise_nd(inputs, kernel, strides, padding, dilation, cf)

    expected = quadratic(linear, x, weights, compact,
                         kwargs.get("use_bias", True), cf)
    y = to_numpy(layer(x))
    assert y.shape == expected.shape == tuple(layer.compute_output_shape(
        x.shape))
    np.testing.assert_allclose(y, expected, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("quadratic_pointwise", [False, True],
                         ids=["linear_pointwise", "quadratic_pointwise"])
@pytest.mark.parametrize("compact", NEURONS, ids=NEURON_IDS)
@pytest.mark.parametrize("rank,kwargs", CASES)
def test_separable_at_init_equals_keras_and_random_equals_float64(
        rank, kwargs, compact, quadratic_pointwise):
    x = _input(rank, kwargs)
    layer = SEPARABLE[(rank, compact)](
        5, activation="relu", quadratic_pointwise=quadratic_pointwise,
        **kwargs)
    keras_layer = KERAS_SEPARABLE[rank](5, activation="relu", **kwargs)
    y = to_numpy(layer(x))
    keras_layer.build(x.shape)
    ours = [w for w in (layer.depthwise_kernel, layer.pointwise_kernel,
                        layer.bias) if w is not None]
    assert [tuple(w.shape) for w in keras_layer.weights] == [
        tuple(w.shape) for w in ours]
    keras_layer.set_weights([to_numpy(w) for w in ours])
    expected = to_numpy(keras_layer(x))
    assert np.abs(expected).max() > 0
    np.testing.assert_allclose(y, expected, rtol=1e-5, atol=1e-5)

    layer.activation = None
    weights = _randomize(layer)
    strides, padding, dilation, cf = _geometry(rank, kwargs)
    use_bias = kwargs.get("use_bias", True)

    def depthwise(inputs, kernel):
        return depthwise_nd(inputs, kernel, strides, padding, dilation, cf)

    def pointwise(inputs, kernel):
        return conv_nd(inputs, kernel, (1,) * rank, "valid", (1,) * rank, cf)

    hidden = quadratic(depthwise, x, _part(weights, "_depthwise"), compact,
                       False, cf)
    point = _part(weights, "_pointwise")
    if quadratic_pointwise:
        expected = quadratic(pointwise, hidden, point, compact, use_bias, cf)
    else:
        expected = pointwise(hidden, point["kernel"])
        if use_bias:
            # the linear pointwise part's bias is the layer's own weight
            expected += (weights["bias"].reshape((-1,) + (1,) * rank) if cf
                         else weights["bias"])
    y = to_numpy(layer(x))
    assert y.shape == expected.shape == tuple(layer.compute_output_shape(
        x.shape))
    np.testing.assert_allclose(y, expected, rtol=1e-4, atol=1e-4)


def test_weights_their_groups_and_names():
    layer = kq.QuadraticSeparableConv2D(6, 3, depth_multiplier=2,
                                        name="sep")
    layer.build((None, 8, 8, 4))
    names = {w.path: quadratic_group(w) for w in layer.weights}
    assert names == {
        "sep/sep_depthwise/kernel": None,
        "sep/sep_depthwise/gate_kernel": "gate",
        "sep/sep_depthwise/gate_bias": "gate",
        "sep/sep_depthwise/square_kernel": "square",
        "sep/sep_pointwise/kernel": None,
        "sep/bias": None,
    }
    assert tuple(layer.depthwise_kernel.shape) == (3, 3, 4, 2)
    assert tuple(layer.pointwise_kernel.shape) == (1, 1, 8, 6)
    np.testing.assert_array_equal(to_numpy(layer.depthwise.gate_bias),
                                  np.ones(8))
    depthwise = kq.CompactQuadraticDepthwiseConv1D(3, depth_multiplier=2)
    depthwise.build((None, 10, 4))
    assert [(w.path.split("/")[-1], tuple(w.shape), quadratic_group(w))
            for w in depthwise.weights] == [
        ("kernel", (3, 4, 2), None), ("bias", (8,), None),
        ("square_kernel", (3, 4, 2), "square")]


def test_relinear_optimizer_moves_only_what_it_should():
    """gamma 0 freezes the quadratic parts; the linear ones train."""
    model = keras.Sequential([
        keras.Input((8, 8, 3)),
        kq.QuadraticDepthwiseConv2D(3, activation="relu"),
        kq.QuadraticSeparableConv2D(4, 3, quadratic_pointwise=True),
        keras.layers.GlobalAveragePooling2D(), keras.layers.Dense(2)])
    before = {w.path: to_numpy(w) for w in model.trainable_weights}
    model.compile(kq.optimizers.ReLinearOptimizer(
        keras.optimizers.SGD(0.1), gamma_g=0.0, gamma_b=0.0), "mse")
    model.fit(random((8, 8, 8, 3)), random((8, 2), 1), epochs=2, verbose=0)
    for w in model.trainable_weights:
        moved = float(np.abs(to_numpy(w) - before[w.path]).max())
        if quadratic_group(w) is None:
            assert moved > 0, w.path
        else:
            assert moved == 0, w.path
    metrics = kq.callbacks.relinear_metrics(model)
    # (the separable layer's parts, keyed by their path inside it)
    assert {"relinear_gate/quadratic_depthwise_conv2d",
            "relinear_gate/quadratic_separable_conv2d/"
            "quadratic_separable_conv2d_depthwise",
            "relinear_gate/quadratic_separable_conv2d/"
            "quadratic_separable_conv2d_pointwise"} <= set(metrics)


def _all_kwargs_separable():
    return kq.QuadraticSeparableConv2D(
        4, (3, 2), strides=(1, 2), padding="same",
        data_format="channels_last", depth_multiplier=2, activation="relu",
        use_bias=True, depthwise_initializer="he_normal",
        pointwise_initializer=keras.initializers.Orthogonal(),
        bias_initializer=keras.initializers.Constant(0.1),
        depthwise_regularizer=keras.regularizers.L2(1e-3),
        pointwise_regularizer="l1",
        bias_regularizer=keras.regularizers.L1(1e-3),
        activity_regularizer=keras.regularizers.L2(1e-4),
        depthwise_constraint=keras.constraints.MaxNorm(3.0),
        pointwise_constraint=keras.constraints.UnitNorm(),
        bias_constraint=keras.constraints.NonNeg(),
        gate_kernel_initializer=keras.initializers.RandomNormal(stddev=0.01),
        gate_bias_initializer="ones", gate_kernel_regularizer="l2",
        gate_bias_regularizer="l1", gate_kernel_constraint="non_neg",
        gate_bias_constraint=None, square_kernel_initializer="zeros",
        square_bias_initializer="ones", square_kernel_regularizer="l2",
        square_bias_regularizer="l1", square_kernel_constraint=None,
        square_bias_constraint="non_neg", quadratic_pointwise=True,
        relinear_regularizer=regularizers.ReLinearRegularizer(1e-3, 1e-2),
        name="sep")


def test_config_lists_every_argument_and_round_trips():
    import inspect

    for layer in (_all_kwargs_separable(),
                  kq.CompactQuadraticSeparableConv1D(3, 5),
                  kq.QuadraticDepthwiseConv2D(
                      3, depth_multiplier=2,
                      depthwise_regularizer="l2",
                      square_bias_constraint="non_neg"),
                  kq.CompactQuadraticDepthwiseConv1D(
                      2, data_format="channels_first")):
        cls = type(layer)
        config = layer.get_config()
        assert cls.from_config(config).get_config() == config
        params = set(inspect.signature(cls.__init__).parameters)
        assert params - {"self", "kwargs"} <= set(config), (
            params - set(config))
        restored = keras.layers.deserialize(keras.layers.serialize(layer))
        assert type(restored) is cls
    config = _all_kwargs_separable().get_config()
    assert config["quadratic_pointwise"] is True
    assert config["square_bias_initializer"]["class_name"] == "Ones"
    assert config["pointwise_constraint"]["class_name"] == "UnitNorm"


@pytest.mark.parametrize("compact", NEURONS, ids=NEURON_IDS)
def test_keras_file_round_trip_and_penalties(tmp_path, compact):
    penalty = regularizers.ReLinearRegularizer(gate_l2=1e-2, square_l2=1e-2)
    inputs = keras.Input((8, 8, 3))
    h = DEPTHWISE[(2, compact)](3, padding="same", depth_multiplier=2,
                                relinear_regularizer=penalty)(inputs)
    h = SEPARABLE[(2, compact)](4, 3, quadratic_pointwise=True,
                                relinear_regularizer=penalty)(h)
    h = keras.layers.Reshape((36, 4))(h)
    h = SEPARABLE[(1, compact)](3, 3, activation="relu")(h)
    h = DEPTHWISE[(1, compact)](2)(h)
    outputs = keras.layers.Dense(2)(keras.layers.Flatten()(h))
    model = keras.Model(inputs, outputs)
    for layer in model.layers:
        if layer.weights:
            _randomize(layer, seed=len(layer.name))
    x = random((2, 8, 8, 3), 5)
    path = os.path.join(tmp_path, "model.keras")
    model.save(path)
    loaded = keras.saving.load_model(path)
    np.testing.assert_array_equal(to_numpy(loaded(x)), to_numpy(model(x)))
    assert [type(layer) for layer in loaded.layers] == [
        type(layer) for layer in model.layers]
    # one penalty per quadratic weight of the penalized layers: compact,
    # square_kernel in each of 3 parts; full, gate_kernel, gate_bias,
    # square_kernel and (in the two parts with a bias) square_bias
    expected = 3 if compact else 4 + 3 + 4
    assert len(model.losses) == len(loaded.losses) == expected
    total = sum(float(to_numpy(v)) for v in model.losses)
    assert total > 0
    np.testing.assert_allclose(
        sum(float(to_numpy(v)) for v in loaded.losses), total, rtol=1e-6)


@pytest.mark.parametrize("policy", ["mixed_float16", "mixed_bfloat16"])
@pytest.mark.parametrize("cls", [kq.QuadraticDepthwiseConv2D,
                                 kq.CompactQuadraticSeparableConv2D,
                                 kq.QuadraticSeparableConv1D])
def test_mixed_precision(policy, cls):
    separable = issubclass(cls, kq.layers.BaseQuadraticSeparableConv)
    rank = 1 if cls is kq.QuadraticSeparableConv1D else 2
    args = (4, 3) if separable else (3,)
    kwargs = dict(padding="same")
    if separable:
        kwargs["quadratic_pointwise"] = True
    x = random((2,) + (8,) * rank + (3,), scale=0.5)
    reference = cls(*args, **kwargs)
    reference.build(x.shape)
    weights = _randomize(reference)
    expected = to_numpy(reference(x))
    keras.config.set_dtype_policy(policy)
    layer = cls(*args, **kwargs)
    layer.build(x.shape)
    for w, value in zip(layer.weights, weights.values()):
        w.assign(value)
    assert all(w.dtype == "float32" for w in layer.weights)
    y = layer(x)
    compute = policy.split("_")[1]
    assert keras.backend.standardize_dtype(y.dtype) == compute
    tolerance = 3e-2 if compute == "float16" else 1.5e-1
    np.testing.assert_allclose(to_numpy(y).astype("float32"), expected,
                               rtol=tolerance, atol=tolerance)


@pytest.mark.parametrize(
    "layer,input_shape,expected",
    [
        (kq.QuadraticDepthwiseConv2D(3, strides=2, depth_multiplier=2),
         (None, 15, None, 3), (None, 7, None, 6)),
        (kq.CompactQuadraticDepthwiseConv1D(5, padding="same"),
         (None, None, 2), (None, None, 2)),
        (kq.QuadraticSeparableConv2D(4, 3, data_format="channels_first"),
         (None, 3, 7, 6), (None, 4, 5, 4)),
        (kq.CompactQuadraticSeparableConv1D(4, 3, quadratic_pointwise=True),
         (None, None, 3), (None, None, 4)),
    ],
)
def test_symbolic_shapes(layer, input_shape, expected):
    inputs = keras.Input(batch_shape=input_shape)
    outputs = layer(inputs)
    assert tuple(outputs.shape) == expected
    model = keras.Model(inputs, outputs)
    concrete = tuple(9 if d is None else d for d in input_shape)
    assert tuple(model(random(concrete)).shape) == tuple(
        layer.compute_output_shape(concrete))


@pytest.mark.parametrize(
    "build,error,match",
    [
        (lambda: kq.QuadraticDepthwiseConv2D(3, depth_multiplier=0),
         ValueError, "depth_multiplier"),
        (lambda: kq.QuadraticDepthwiseConv2D(3, padding="causal"),
         ValueError, "padding"),
        (lambda: kq.QuadraticSeparableConv2D(4, 3, kernel_initializer="ones"),
         TypeError, "pointwise"),
        (lambda: kq.QuadraticDepthwiseConv2D(3, kernel_initializer="ones"),
         TypeError, "depthwise_initializer"),
        (lambda: kq.CompactQuadraticDepthwiseConv2D(
            3, gate_bias_initializer="ones"), TypeError,
         "gate_bias_initializer"),
        (lambda: kq.QuadraticSeparableConv2D(0, 3), ValueError, "filters"),
        (lambda: kq.QuadraticSeparableConv2D(4, (3, 3, 3)), ValueError,
         "QuadraticSeparableConv2D: argument `kernel_size`"),
        (lambda: kq.QuadraticSeparableConv2D(4, 3, quadratic_pointwise="yes"),
         TypeError, "quadratic_pointwise"),
        (lambda: kq.CompactQuadraticSeparableConv1D(
            4, 3, square_bias_regularizer="l2"), TypeError,
         "square_bias_regularizer"),
        (lambda: kq.QuadraticSeparableConv1D(4, 3, data_format="ncw"),
         ValueError, "data_format"),
    ],
)
def test_bad_arguments(build, error, match):
    with pytest.raises(error, match=match):
        build()


def test_bad_inputs_at_call():
    layer = kq.QuadraticSeparableConv2D(4, 3)
    layer(random((1, 8, 8, 3)))
    with pytest.raises(ValueError, match="quadratic_separable_conv2d"):
        layer(random((1, 8, 8, 5)))  # channels differ from the build
    with pytest.raises(ValueError, match="ndim"):
        kq.QuadraticDepthwiseConv2D(3)(random((1, 8, 3)))


@pytest.mark.parametrize("cls,keras_cls,args", [
    (kq.QuadraticDepthwiseConv2D, keras.layers.DepthwiseConv2D,
     (3, 2, "same", 2, "channels_last", 1, "relu", False)),
    (kq.CompactQuadraticSeparableConv1D, keras.layers.SeparableConv1D,
     (4, 3, 1, "same", "channels_last", 2, 2, "relu", False)),
])
def test_positional_arguments_line_up_with_keras(cls, keras_cls, args):
    layer, keras_layer = cls(*args), keras_cls(*args)
    for name, value in keras_layer.get_config().items():
        if name in ("name", "dtype") or name.endswith(
                ("initializer", "regularizer", "constraint")):
            continue
        assert layer.get_config()[name] == value, name
    rank = 2 if keras_cls is keras.layers.DepthwiseConv2D else 1
    x = random((2,) + (8,) * rank + (3,))
    assert tuple(layer(x).shape) == tuple(keras_layer(x).shape)


def _frozen_separable_model():
    return keras.Sequential([
        keras.Input((8, 8, 3)),
        kq.QuadraticSeparableConv2D(4, 3, trainable=False, name="frozen"),
        keras.layers.Flatten(), keras.layers.Dense(2)])


def test_a_frozen_separable_layer_stays_frozen(tmp_path):
    """Its parts are frozen with it: at construction, after a .keras round
    trip, in a clone, and when quadratize converts a frozen Keras layer."""
    model = _frozen_separable_model()
    assert len(model.trainable_weights) == 2  # the Dense's
    path = os.path.join(tmp_path, "frozen.keras")
    model.save(path)
    for copy in (keras.saving.load_model(path),
                 keras.models.clone_model(model)):
        assert len(copy.trainable_weights) == 2
    inputs = keras.Input((8, 8, 3))
    separable = keras.layers.SeparableConv2D(4, 3, name="sep")
    separable.trainable = False
    keras_model = keras.Model(inputs, keras.layers.Dense(2)(
        keras.layers.Flatten()(separable(inputs))))
    q = kq.quadratize(keras_model)
    before = [to_numpy(w) for w in q.get_layer("sep").weights]
    assert q.get_layer("sep").trainable_weights == []
    assert len(q.trainable_weights) == 6  # the quadratic Dense's
    q.compile(keras.optimizers.SGD(0.1), "mse")
    q.fit(random((4, 8, 8, 3)), random((4, 2), 1), epochs=1, verbose=0)
    for w, b in zip(q.get_layer("sep").weights, before):
        np.testing.assert_array_equal(to_numpy(w), b)


@pytest.mark.parametrize("quadratic_pointwise", [False, True])
def test_channels_first_bias_when_a_spatial_size_equals_the_filters(
        quadratic_pointwise):
    """Keras 3.15's TensorFlow Conv adds a channels_first bias on the wrong
    axis when the last spatial size equals the number of filters; ours
    must not (compared with the float64 reference on every backend)."""
    x = random((2, 3, 4, 5))  # channels_first, last spatial size 5
    layer = kq.QuadraticSeparableConv2D(
        5, 1, data_format="channels_first",
        quadratic_pointwise=quadratic_pointwise)
    layer.build(x.shape)
    weights = _randomize(layer)
    depthwise, point = _part(weights, "_depthwise"), _part(weights,
                                                           "_pointwise")
    if not quadratic_pointwise:
        point["bias"] = weights["bias"]
    ones = (1, 1)

    def linear(inputs, kernel):
        return conv_nd(inputs, kernel, ones, "valid", ones, True)

    hidden = quadratic(lambda a, k: depthwise_nd(a, k, ones, "valid", ones,
                                                 True),
                       x, depthwise, False, False, True)
    expected = (quadratic(linear, hidden, point, False, True, True)
                if quadratic_pointwise
                else linear(hidden, point["kernel"])
                + point["bias"].reshape(-1, 1, 1))
    np.testing.assert_allclose(to_numpy(layer(x)), expected, rtol=1e-4,
                               atol=1e-4)
