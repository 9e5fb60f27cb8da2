import os

import keras
import numpy as np
import pytest
from conftest import random
from conftest import to_numpy

import keras_quadratic as kq
from keras_quadratic.models import QResNet


def _trainable_params(model):
    return sum(int(np.prod(w.shape)) for w in model.trainable_weights)


@pytest.mark.parametrize(
    "depth,neuron,expected",
    [(20, "quadratic", 806_266), (20, "linear", 269_722),
     (56, "quadratic", 2_554_810), (56, "linear", 853_018),
     (20, "compact", 537_658)],
)
def test_parameter_counts_match_the_original(depth, neuron, expected):
    # compact: the original keeps two additive biases per convolution
    # (538,330); here c is folded into `bias` (672 fewer).
    assert _trainable_params(QResNet(depth, neuron)) == expected


@pytest.mark.parametrize("neuron", ["quadratic", "compact", "linear"])
@pytest.mark.parametrize("data_format", ["channels_last", "channels_first"])
def test_forward_shapes(neuron, data_format):
    shape = (32, 32, 3) if data_format == "channels_last" else (3, 32, 32)
    model = QResNet(8, neuron, num_classes=7, input_shape=shape,
                    data_format=data_format)
    y = model(random((2,) + shape))
    assert tuple(y.shape) == (2, 7)
    assert np.all(np.isfinite(to_numpy(y)))
    convs = [layer for layer in model.layers
             if isinstance(layer, kq.layers.QuadraticLayer)]
    assert len(convs) == (0 if neuron == "linear" else 6)
    assert model.get_layer("stem_conv").__class__ is keras.layers.Conv2D
    assert model.get_layer("classifier").__class__ is keras.layers.Dense


def test_channels_first_equals_channels_last():
    last = QResNet(8, "quadratic")
    first = QResNet(8, "quadratic", input_shape=(3, 32, 32),
                    data_format="channels_first")
    first.set_weights(last.get_weights())
    x = random((2, 32, 32, 3))
    np.testing.assert_allclose(
        to_numpy(first(np.transpose(x, (0, 3, 1, 2)))), to_numpy(last(x)),
        rtol=1e-4, atol=1e-4)


def test_option_a_shortcut_subsamples_and_zero_pads():
    layer = kq.models.ZeroPadShortcut(8, 2)
    x = random((1, 4, 4, 4))
    y = to_numpy(layer(x))
    assert y.shape == (1, 2, 2, 8)
    np.testing.assert_array_equal(y[..., 2:6], x[:, ::2, ::2, :])
    np.testing.assert_array_equal(y[..., :2], 0)
    np.testing.assert_array_equal(y[..., 6:], 0)


def test_projection_shortcut():
    model = QResNet(8, "compact", shortcut="projection")
    assert model.get_layer("stage2_block1_shortcut_conv")
    assert tuple(model(random((1, 32, 32, 3))).shape) == (1, 10)


def test_rezero_starts_at_zero_and_learns():
    model = QResNet(14, "quadratic", rezero=True)
    alphas = [layer for layer in model.layers
              if isinstance(layer, kq.models.ReZero)]
    assert len(alphas) == 6  # one per block
    assert all(float(to_numpy(a.alpha)) == 0.0 for a in alphas)
    # with every branch off, the network is stem + shortcuts + classifier:
    # the output does not depend on the branch weights
    x = random((2, 32, 32, 3))
    before = to_numpy(model(x))
    conv = model.get_layer("stage1_block1_conv1")
    conv.kernel.assign(random(conv.kernel.shape, 9))
    np.testing.assert_allclose(to_numpy(model(x)), before, rtol=1e-6)
    model.compile(keras.optimizers.SGD(0.1),
                  keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    model.fit(x, np.array([1, 2]), epochs=1, verbose=0)
    assert any(float(to_numpy(a.alpha)) != 0.0 for a in alphas)


def test_save_and_reload(tmp_path):
    model = QResNet(8, "quadratic", rezero=True,
                    relinear_regularizer=kq.regularizers.ReLinearRegularizer(gate_l2=1e-3))
    for w in model.weights:
        if "gate_kernel" in w.path or "alpha" in w.path:
            w.assign(random(w.shape, 3, 0.1))
    path = os.path.join(tmp_path, "qresnet.keras")
    model.save(path)
    loaded = keras.saving.load_model(path)
    x = random((2, 32, 32, 3))
    np.testing.assert_allclose(to_numpy(loaded(x)), to_numpy(model(x)),
                               rtol=1e-6, atol=1e-6)
    assert len(loaded.losses) == len(model.losses) > 0


@pytest.mark.parametrize(
    "kwargs,match",
    [(dict(depth=21), "6n\\+2"), (dict(depth=2), "1202"),
     (dict(neuron="cubic"), "'quadratic', 'compact', 'linear'"),
     (dict(shortcut="B"), "projection"),
     (dict(data_format="nchw"), "channels_first"),
     (dict(neuron="linear",
           relinear_regularizer=kq.regularizers.ReLinearRegularizer(gate_l2=1.0)),
      "relinear_regularizer")],
)
def test_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        QResNet(**kwargs)


@pytest.mark.parametrize("data_format", ["channels_last", "channels_first"])
def test_strided_branch_conv_is_centred_like_pytorch(data_format):
    """The stride-2 3x3 convolution pads one pixel on every side (PyTorch's
    padding=1), so output (i, j) is centred on input (2i, 2j): the pixel the
    option-A shortcut keeps. Checked against a float64 NumPy convolution."""
    from reference import conv_nd

    model = QResNet(8, "linear", data_format=data_format,
                    input_shape=(32, 32, 3) if data_format == "channels_last"
                    else (3, 32, 32))
    pad = model.get_layer("stage2_block1_conv1_pad")
    conv = model.get_layer("stage2_block1_conv1")
    first = data_format == "channels_first"
    x = random((2, 16, 32, 32) if first else (2, 32, 32, 16), 5)
    out = to_numpy(conv(pad(x)))
    kernel = to_numpy(conv.kernel).astype("float64")
    x64 = x.astype("float64")
    padded = np.pad(x64, ((0, 0), (0, 0), (1, 1), (1, 1)) if first
                    else ((0, 0), (1, 1), (1, 1), (0, 0)))
    expected = conv_nd(padded, kernel, (2, 2), "valid", (1, 1),
                       channels_first=first)
    np.testing.assert_allclose(out, expected, rtol=1e-4, atol=1e-4)
    assert out.shape[1:3] == (16, 16) or out.shape[2:] == (16, 16)


def test_default_input_shape_follows_data_format():
    model = QResNet(8, data_format="channels_first")
    assert tuple(model.inputs[0].shape) == (None, 3, 32, 32)
    assert tuple(model.get_layer("stem_conv").kernel.shape) == (3, 3, 3, 16)
    keras.config.set_image_data_format("channels_first")
    assert tuple(QResNet(8).inputs[0].shape) == (None, 3, 32, 32)
    keras.config.set_image_data_format("channels_last")
    assert tuple(QResNet(8).inputs[0].shape) == (None, 32, 32, 3)


def test_one_version():
    from importlib import metadata

    assert metadata.version("keras-quadratic") == kq.__version__


@pytest.mark.parametrize("policy,logits", [
    ("float64", "float64"), ("mixed_bfloat16", "float32"),
    ("mixed_float16", "float32"), ("float32", "float32")])
def test_the_global_dtype_policy_reaches_the_classifier(policy, logits):
    # float64 stays float64 end to end; a mixed policy gets float32 logits
    keras.config.set_dtype_policy(policy)
    try:
        model = QResNet(8, input_shape=(16, 16, 3))
    finally:
        keras.config.set_dtype_policy("float32")
    assert model.outputs[0].dtype == logits
    classifier = model.get_layer("classifier")
    assert classifier.compute_dtype == logits
    assert {w.dtype for w in classifier.weights} == {
        "float64" if policy == "float64" else "float32"}
    variable_dtype = keras.dtype_policies.get(policy).variable_dtype
    assert {w.dtype for w in model.get_layer("stem_conv").weights} == {
        variable_dtype}
