import os
import sys

import keras
import numpy as np
import pytest
from conftest import random
from conftest import to_numpy
from examples_util import ROOT

import keras_quadratic as kq
from keras_quadratic import quadratize

sys.path.insert(0, os.path.join(ROOT, "benchmarks"))


def _train_a_little(model, x, y):
    """Non-trivial weights and BatchNormalization statistics."""
    model.compile(keras.optimizers.SGD(0.01), "mse")
    model.fit(x, y, epochs=1, batch_size=4, verbose=0)
    return model


def _assert_same_outputs(a, b, x):
    for training in (False, True):
        ya, yb = a(x, training=training), b(x, training=training)
        ya = ya if isinstance(ya, (list, tuple)) else [ya]
        yb = yb if isinstance(yb, (list, tuple)) else [yb]
        for p, q in zip(ya, yb):
            np.testing.assert_allclose(to_numpy(q), to_numpy(p), rtol=1e-5,
                                       atol=1e-5)


def _functional():
    inputs = keras.Input((8, 8, 3))
    shared = keras.layers.Conv2D(3, 3, padding="same", name="shared")
    h = shared(inputs)
    h = keras.layers.BatchNormalization()(h)
    h = keras.layers.Add()([h, shared(h)])  # residual + shared layer
    h = keras.layers.Conv2D(4, 3, strides=2, activation="relu",
                            dilation_rate=1, name="conv")(h)
    h = keras.layers.DepthwiseConv2D(3, padding="same", depth_multiplier=2,
                                     name="depthwise")(h)
    h = keras.layers.SeparableConv2D(4, 3, padding="same",
                                     name="separable")(h)
    h = keras.layers.Conv2DTranspose(3, 2, name="transposed")(h)
    h = keras.layers.GlobalAveragePooling2D()(h)
    return keras.Model(inputs, keras.layers.Dense(2, name="head")(h))


def test_sequential_output_equality_and_input_untouched():
    model = keras.Sequential([
        keras.Input((10, 2)), keras.layers.Conv1D(4, 3, activation="relu"),
        keras.layers.Flatten(), keras.layers.Dense(5, activation="tanh"),
        keras.layers.Dense(1)])
    x = random((8, 10, 2))
    _train_a_little(model, x, random((8, 1), 1))
    before = [to_numpy(w) for w in model.weights]
    q = quadratize(model)
    _assert_same_outputs(model, q, x)
    assert [type(layer).__name__ for layer in q.layers] == [
        "QuadraticConv1D", "Flatten", "QuadraticDense", "QuadraticDense"]
    assert all(type(layer).__name__ != "QuadraticDense"
               for layer in model.layers)
    for w, b in zip(model.weights, before):
        np.testing.assert_array_equal(to_numpy(w), b)


def test_both_models_keep_working_after_the_other_is_used():
    # The converted layers must hold copies: on JAX, a shared buffer was
    # donated by one model's compiled step and deleted under the other
    # ("Array has been deleted").
    model = keras.Sequential([keras.Input((6,)), keras.layers.Dense(4),
                              keras.layers.Dense(1)])
    x, y = random((8, 6)), random((8, 1), 1)
    q = quadratize(model)
    before = [to_numpy(w) for w in model.weights]
    for first, second in ((model, q), (q, model)):
        first.predict(x, verbose=0)
        second.predict(x, verbose=0)
    q.compile(keras.optimizers.SGD(0.1), "mse")
    q.fit(x, y, epochs=2, batch_size=4, verbose=0)
    np.testing.assert_allclose(model.predict(x, verbose=0),
                               to_numpy(model(x)), rtol=1e-5, atol=1e-6)
    for w, b in zip(model.weights, before):
        np.testing.assert_array_equal(to_numpy(w), b)
    model.compile(keras.optimizers.SGD(0.1), "mse")
    model.fit(x, y, epochs=1, batch_size=4, verbose=0)
    q.predict(x, verbose=0)


def test_functional_with_residual_shared_and_batchnorm():
    model = _functional()
    x = random((8, 8, 8, 3))
    _train_a_little(model, x, random((8, 2), 1))
    with pytest.warns(UserWarning, match="transposed .Conv2DTranspose"):
        q = quadratize(model)
    _assert_same_outputs(model, q, x)
    assert isinstance(q.get_layer("shared"), kq.QuadraticConv2D)
    assert isinstance(q.get_layer("depthwise"), kq.QuadraticDepthwiseConv2D)
    assert isinstance(q.get_layer("separable"), kq.QuadraticSeparableConv2D)
    # a linear pointwise part (Keras's Conv2D, computed by the package)
    assert isinstance(q.get_layer("separable").pointwise, keras.layers.Conv2D)
    assert type(q.get_layer("transposed")) is keras.layers.Conv2DTranspose
    bn = [layer for layer in q.layers
          if isinstance(layer, keras.layers.BatchNormalization)][0]
    original_bn = [layer for layer in model.layers
                   if isinstance(layer, keras.layers.BatchNormalization)][0]
    np.testing.assert_array_equal(to_numpy(bn.moving_mean),
                                  to_numpy(original_bn.moving_mean))


def test_selection_by_names_and_predicate_and_compact():
    model = _functional()
    x = random((4, 8, 8, 3))
    by_name = quadratize(model, layers=["conv"])
    assert isinstance(by_name.get_layer("conv"), kq.QuadraticConv2D)
    assert type(by_name.get_layer("head")) is keras.layers.Dense
    assert type(by_name.get_layer("shared")) is keras.layers.Conv2D
    _assert_same_outputs(model, by_name, x)
    # (a call in training mode moved the BN statistics: convert anew)
    by_predicate = quadratize(
        model, neuron="compact",
        layers=lambda layer: isinstance(layer, keras.layers.Dense))
    assert isinstance(by_predicate.get_layer("head"), kq.CompactQuadraticDense)
    assert type(by_predicate.get_layer("conv")) is keras.layers.Conv2D
    _assert_same_outputs(model, by_predicate, x)


def test_multi_input_output_and_nested_models():
    inner_in = keras.Input((6,))
    inner = keras.Model(
        inner_in, keras.layers.Dense(4, activation="relu", name="inner")(
            inner_in), name="block")
    a, b = keras.Input((6,)), keras.Input((3,))
    h = inner(a)
    h = keras.layers.Concatenate()([h, keras.layers.Dense(2)(b)])
    frozen = keras.layers.Dense(3, name="frozen")
    frozen.trainable = False
    model = keras.Model([a, b], [frozen(h), keras.layers.Dense(1)(h)])
    xs = [random((4, 6)), random((4, 3), 1)]
    q = quadratize(model)
    _assert_same_outputs(model, q, xs)
    assert isinstance(q.get_layer("block").get_layer("inner"),
                      kq.QuadraticDense)
    assert q.get_layer("frozen").trainable is False
    assert isinstance(q.get_layer("frozen"), kq.QuadraticDense)


# The representative set of issue #14 (benchmarks/quadratize_applications.py
# lists all of keras.applications): ops on symbolic tensors (MobileNetV3's
# hard sigmoid, ConvNeXt's layer scale), grouped convolutions that are
# depthwise (ConvNeXt), separable (Xception) and depthwise ones
# (EfficientNetV2), dense connectivity (DenseNet), pre-activation ResNets.
APPLICATIONS = ["ResNet50V2", "MobileNetV3Small", "ConvNeXtTiny", "Xception",
                "EfficientNetV2B0", "DenseNet121"]


@pytest.mark.parametrize("name", APPLICATIONS)
def test_keras_applications_convert_whole_with_equal_outputs(name):
    import quadratize_applications as apps

    model = apps.build_application(name)
    row, q = apps.compare(model)
    assert row["left_unchanged"] == []
    assert row["converted"] == row["linear_map_layers"] > 0
    assert row["max_abs_output"] > 0
    # tolerance as in the other tests, relative to the output's scale
    # (random-init logits range from 1e-11 to 1e3)
    assert row["max_abs_difference"] <= 1e-5 * row["max_abs_output"]
    assert row["quadratic_params"] > row["params"]
    kinds = {type(layer).__name__ for layer in q.layers}
    assert not kinds & {"Conv2D", "Dense", "DepthwiseConv2D",
                        "SeparableConv2D"}, kinds


def test_operations_in_a_functional_model_are_cloned():
    # `h + 3.0` and ops.relu6 on symbolic tensors make operation nodes
    # (not layers): Keras's clone hands them to the clone function too.
    inputs = keras.Input((6, 6, 2))
    h = keras.layers.Conv2D(3, 3, name="conv")(inputs)
    h = keras.ops.relu6(h + 3.0) / 6.0 * h
    outputs = keras.layers.Dense(2, name="head")(
        keras.layers.Flatten()(h))
    model = keras.Model(inputs, outputs)
    q = quadratize(model)
    assert isinstance(q.get_layer("conv"), kq.QuadraticConv2D)
    assert isinstance(q.get_layer("head"), kq.QuadraticDense)
    _assert_same_outputs(model, q, random((3, 6, 6, 2)))


@pytest.mark.parametrize("rank", [1, 2])
def test_grouped_convolution_with_one_group_per_channel_is_depthwise(rank):
    conv = {1: keras.layers.Conv1D, 2: keras.layers.Conv2D}[rank]
    inputs = keras.Input((7,) * rank + (4,))
    h = conv(8, 3, groups=4, padding="same", name="depthwise_like",
             kernel_regularizer="l2")(inputs)
    h = conv(4, 1, groups=2, name="grouped")(h)  # two channels per group
    model = keras.Model(inputs, h)
    with pytest.warns(UserWarning, match="grouped .grouped convolution "
                                         ".groups=2"):
        q = quadratize(model, neuron="compact")
    converted = q.get_layer("depthwise_like")
    depthwise = {1: kq.CompactQuadraticDepthwiseConv1D,
                 2: kq.CompactQuadraticDepthwiseConv2D}[rank]
    assert type(converted) is depthwise
    assert converted.depth_multiplier == 2
    assert isinstance(converted.kernel_regularizer, keras.regularizers.L2)
    assert type(q.get_layer("grouped")) is conv
    _assert_same_outputs(model, q, random((2,) + (7,) * rank + (4,)))


def test_causal_grouped_conv1d_converts_to_a_causal_depthwise_one():
    inputs = keras.Input((9, 4))
    model = keras.Model(inputs, keras.layers.Conv1D(
        4, 3, groups=4, padding="causal", dilation_rate=2)(inputs))
    q = quadratize(model)
    assert type(q.layers[-1]) is kq.QuadraticDepthwiseConv1D
    assert q.layers[-1].padding == "causal"
    _assert_same_outputs(model, q, random((2, 9, 4)))


def test_pointwise_part_of_separable_layers_as_chosen():
    inputs = keras.Input((8, 8, 3))
    h = keras.layers.SeparableConv2D(4, 3, name="first")(inputs)
    h = keras.layers.SeparableConv2D(4, 3, name="second")(h)
    model = keras.Model(inputs, h)
    x = random((2, 8, 8, 3))
    for choice, expected in [
        (False, (keras.layers.Conv2D, keras.layers.Conv2D)),
        (True, (kq.QuadraticConv2D, kq.QuadraticConv2D)),
        (lambda layer: layer.name == "second",
         (keras.layers.Conv2D, kq.QuadraticConv2D)),
    ]:
        q = quadratize(model, quadratic_pointwise=choice)
        assert all(isinstance(q.get_layer(name).pointwise, cls)
                   for name, cls in zip(("first", "second"), expected))
        _assert_same_outputs(model, q, x)
    with pytest.raises(TypeError, match="quadratic_pointwise"):
        quadratize(model, quadratic_pointwise="yes")


def test_subclassed_model_is_refused():
    class Net(keras.Model):
        def __init__(self):
            super().__init__()
            self.dense = keras.layers.Dense(2)

        def call(self, x):
            return self.dense(x)

    model = Net()
    model(random((1, 3)))
    with pytest.raises(ValueError, match="Sequential and Functional"):
        quadratize(model)
    with pytest.raises(ValueError, match="neuron"):
        quadratize(_functional(), neuron="cubic")


def test_quadratized_model_trains_with_relinear_and_round_trips(tmp_path):
    model = keras.Sequential([keras.Input((5,)),
                              keras.layers.Dense(8, activation="relu"),
                              keras.layers.Dense(1)])
    q = quadratize(model)
    q.compile(kq.optimizers.ReLinearOptimizer(keras.optimizers.Adam(1e-2), 0.5, 0.5),
              "mse")
    x, y = random((32, 5)), random((32, 1), 1)
    q.fit(x, y, epochs=2, verbose=0)
    gates = [layer.gate_kernel for layer in q.layers]
    assert all(float(np.abs(to_numpy(g)).max()) > 0 for g in gates)
    path = os.path.join(tmp_path, "q.keras")
    q.save(path)
    loaded = keras.saving.load_model(path)
    np.testing.assert_array_equal(to_numpy(loaded(x)), to_numpy(q(x)))


@pytest.mark.parametrize("gamma", ["0", "0.01"])
def test_finetune_example_on_mock_data_with_its_control(tmp_path, gamma):
    """With gamma 0 the quadratic terms stay frozen at their ReLinear values,
    so the quadratized model must train exactly as its control: the same
    batches, augmentations, optimizer and seed."""
    import json

    from examples_util import run_example

    out = str(tmp_path / "ft")
    result = run_example("finetune", [
        "--mock-data", "--mock-examples", "64", "--batch-size", "32",
        "--width", "8", "--pretrain-epochs", "1", "--epochs", "2",
        "--gamma-g", gamma, "--gamma-b", gamma, "--verbose", "0",
        "--output-dir", out])
    assert result.returncode == 0, result.stderr[-2000:]
    assert "control (conventional)" in result.stdout
    with open(os.path.join(out, "summary.json")) as f:
        summary = json.load(f)
    assert summary["quadratized_accuracy"] == pytest.approx(
        summary["conventional_accuracy"], abs=1e-6)
    assert summary["quadratize"] == "depthwise"
    assert summary["quadratic_layers"] == 6  # the six DepthwiseConv2D
    assert len(summary["accuracy_per_epoch"]) == 2
    assert summary["quadratic_params"] > summary["conventional_params"]
    for name in ("curves.png", "relinear.png", "quadratized.keras"):
        assert os.path.getsize(os.path.join(out, name)) > 0
    if gamma == "0":
        assert summary["relinear_gate"] == 0 == summary["relinear_square"]
        # (mock data's accuracy hardly moves: the training loss shows it)
        assert summary["loss_per_epoch"] == pytest.approx(
            summary["control_loss_per_epoch"], rel=1e-5)
        assert summary["accuracy_per_epoch"] == pytest.approx(
            summary["control_accuracy_per_epoch"], abs=1e-6)
    else:
        assert summary["relinear_gate"] > 0 and summary["relinear_square"] > 0
        assert summary["loss_per_epoch"] != pytest.approx(
            summary["control_loss_per_epoch"], rel=1e-5)


def _dense_model():
    keras.utils.set_random_seed(3)
    inputs = keras.Input((6,))
    h = keras.layers.Dense(8, activation="relu", name="first")(inputs)
    return keras.Model(inputs, keras.layers.Dense(2, name="second")(h))


@pytest.mark.parametrize("adapter", ["int8", "lora"])
def test_layers_it_cannot_convert_faithfully_are_kept_with_the_reason(
        adapter):
    model = _dense_model()
    layer = model.get_layer("first")
    reason = {"int8": "quantized", "lora": "LoRA is enabled"}[adapter]
    if adapter == "int8":
        layer.quantize("int8")
    else:
        layer.enable_lora(2)
    x = random((5, 6), 1)
    expected = to_numpy(model(x))
    with pytest.warns(UserWarning, match=f"first.*{reason}"):
        converted = kq.quadratize(model)
    assert type(converted.get_layer("first")) is type(layer)
    assert isinstance(converted.get_layer("second"), kq.QuadraticDense)
    np.testing.assert_allclose(to_numpy(converted(x)), expected, rtol=1e-5,
                               atol=1e-5)


def test_an_argument_the_quadratic_layer_lacks_is_a_reason(monkeypatch):
    """A newer Keras's argument in use (e.g. DoRA's) would be lost."""
    import importlib

    module = importlib.import_module("keras_quadratic.quadratize")
    layer = _dense_model().get_layer("first")
    assert module._why_not(layer) is None
    config = layer.get_config()
    monkeypatch.setattr(layer, "get_config",
                        lambda: dict(config, dora_rank=4))
    assert "dora_rank=4" in module._why_not(layer)
    monkeypatch.setattr(layer, "get_config",
                        lambda: dict(config, dora_rank=None))
    assert module._why_not(layer) is None


def test_what_stays_linear_is_named_and_unknown_names_refused():
    """Issue #26 item 8: Dense layers inside TimeDistributed and inside a
    custom layer are named in the warning; a layer name the model lacks is
    a ValueError, a named layer without counterpart is named."""

    class Holder(keras.layers.Layer):
        def __init__(self, **kwargs):
            super().__init__(**kwargs)
            self.inner = keras.layers.Dense(3, name="held_dense")

        def build(self, input_shape):
            self.inner.build(input_shape)

        def call(self, x):
            return self.inner(x)

    inputs = keras.Input((2, 4))
    h = keras.layers.TimeDistributed(keras.layers.Dense(
        4, name="td_dense"), name="td")(inputs)
    h = keras.layers.Flatten(name="flat")(h)
    h = Holder(name="holder")(h)
    model = keras.Model(inputs, keras.layers.Dense(1, name="head")(h))
    with pytest.warns(UserWarning) as caught:
        q = quadratize(model)
    message = " ".join(str(w.message) for w in caught
                       if "quadratize" in str(w.message))
    assert "td_dense inside td (a TimeDistributed" in message
    assert "held_dense inside holder (a Holder" in message
    assert isinstance(q.get_layer("head"), kq.QuadraticDense)
    _assert_same_outputs(model, q, random((3, 2, 4)))
    with pytest.raises(ValueError, match=r"not have: \['haed'\]"):
        quadratize(model, layers=["haed"])
    with pytest.warns(UserWarning, match=r"flat \(a Flatten: no quadratic"):
        quadratize(model, layers=["head", "flat"])
