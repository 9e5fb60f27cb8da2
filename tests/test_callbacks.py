import os

import keras
import numpy as np
import pytest
from conftest import random
from conftest import to_numpy

import keras_quadratic as kq
from keras_quadratic.callbacks import QuadraticMonitor


def _model():
    inputs = keras.Input((6, 6, 2))
    h = kq.QuadraticConv2D(4, 3, activation="relu", name="qconv")(inputs)
    h = keras.layers.Flatten()(h)
    inner_in = keras.Input((64,))
    nested = keras.Model(inner_in, kq.CompactQuadraticDense(
        3, name="qdense")(inner_in), name="nested")
    return keras.Model(inputs, keras.layers.Dense(1)(nested(h)))


def _fit(model, gamma, epochs=3, callbacks=()):
    model.compile(kq.optimizers.ReLinearOptimizer(keras.optimizers.Adam(1e-2), gamma,
                                         gamma), "mse")
    return model.fit(random((16, 6, 6, 2)), random((16, 1), 1), epochs=epochs,
                     batch_size=8, verbose=0, callbacks=list(callbacks))


def test_zero_at_init_and_unchanged_with_gamma_zero():
    model = _model()
    values = kq.callbacks.relinear_metrics(model)
    assert set(values) == {
        "relinear_gate", "relinear_square", "relinear_gate/qconv",
        "relinear_square/qconv", "relinear_square/nested/qdense"}
    assert all(v == 0.0 for v in values.values())
    history = _fit(model, 0.0, callbacks=[QuadraticMonitor()])
    for key in ("relinear_gate", "relinear_square", "relinear_gate/qconv",
                "relinear_square/nested/qdense"):
        assert history.history[key] == [0.0, 0.0, 0.0]


def test_grows_with_gamma_one_and_matches_a_hand_computation():
    model = _model()
    history = _fit(model, 1.0, callbacks=[QuadraticMonitor()])
    gate = history.history["relinear_gate"]
    square = history.history["relinear_square"]
    assert 0 < gate[0] < gate[-1] and 0 < square[0] < square[-1]
    assert "relinear_gate/nested/qdense" not in history.history  # compact
    # the last logged values are the weights' current values (also on JAX)
    conv = model.get_layer("qconv")
    dense = model.get_layer("nested").get_layer("qdense")
    sq = lambda v, r=0.0: float(np.sum((to_numpy(v) - r) ** 2))  # noqa
    linear = sq(conv.kernel) + sq(conv.bias) + sq(dense.kernel) + sq(
        dense.bias)
    expected_gate = np.sqrt(sq(conv.gate_kernel) + sq(conv.gate_bias, 1.0))
    expected_square = np.sqrt(sq(conv.square_kernel) + sq(conv.square_bias)
                              + sq(dense.square_kernel))
    np.testing.assert_allclose(gate[-1], expected_gate / np.sqrt(linear),
                               rtol=1e-5)
    np.testing.assert_allclose(square[-1], expected_square / np.sqrt(linear),
                               rtol=1e-5)
    np.testing.assert_allclose(
        history.history["relinear_gate/qconv"][-1],
        expected_gate / np.sqrt(sq(conv.kernel) + sq(conv.bias)), rtol=1e-5)


def test_csv_logger_and_png(tmp_path):
    png = os.path.join(tmp_path, "relinear.png")
    csv_path = os.path.join(tmp_path, "log.csv")
    monitor = QuadraticMonitor(plot_path=png)
    _fit(_model(), 0.5, epochs=2,
         callbacks=[monitor, keras.callbacks.CSVLogger(csv_path)])
    with open(png, "rb") as f:
        assert f.read(8) == b"\x89PNG\r\n\x1a\n"
    with open(csv_path) as f:
        header = f.readline()
    assert "relinear_gate" in header and "relinear_square/qconv" in header
    assert len(monitor.history) == 3  # before training + 2 epochs


@pytest.mark.parametrize("per_layer", [False])
def test_overall_values_only(per_layer):
    history = _fit(_model(), 1.0, epochs=1,
                   callbacks=[QuadraticMonitor(per_layer=per_layer)])
    assert not any("/" in key for key in history.history)


class _Holder(keras.layers.Layer):
    """A custom layer that holds a quadratic layer (not a model)."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.inner = kq.QuadraticDense(3, name="held")

    def build(self, input_shape):
        self.inner.build(input_shape)

    def call(self, x):
        return self.inner(x)


def test_finds_quadratic_layers_inside_custom_layers():
    inputs = keras.Input((4,))
    model = keras.Model(inputs, keras.layers.Dense(1)(_Holder()(inputs)))
    monitor = QuadraticMonitor()
    model.compile(kq.optimizers.ReLinearOptimizer(keras.optimizers.SGD(0.05), 1.0,
                                         1.0), "mse")
    history = model.fit(random((16, 4)), random((16, 1), 1), epochs=2,
                        batch_size=4, verbose=0, callbacks=[monitor])
    assert [layer.name for layer in kq.callbacks.quadratic_layers(model)] \
        == ["held"]
    assert history.history["relinear_gate"][-1] > 0
    holder = model.layers[1].name
    assert history.history[f"relinear_gate/{holder}/held"][-1] == (
        pytest.approx(history.history["relinear_gate"][-1]))


def test_same_named_layers_of_nested_models_log_apart():
    """Issue #26 item 9: b1/q and b2/q are two keys, each its own layer's."""
    inputs = keras.Input((4,))
    blocks = [keras.Sequential([keras.Input((4,)), kq.QuadraticDense(
        4, name="q", gate_bias_initializer=keras.initializers.Constant(c))],
        name=name) for name, c in (("b1", 1.5), ("b2", 3.0))]
    model = keras.Model(inputs, blocks[1](blocks[0](inputs)))
    metrics = kq.callbacks.relinear_metrics(model)
    assert {k for k in metrics if "/" in k} == {
        "relinear_gate/b1/q", "relinear_gate/b2/q", "relinear_square/b1/q",
        "relinear_square/b2/q"}
    for name in ("b1", "b2"):
        layer = model.get_layer(name).get_layer("q")
        linear, gate, _ = kq.callbacks.layer_norms(layer)
        assert metrics[f"relinear_gate/{name}/q"] == pytest.approx(
            np.sqrt(gate / linear))
    assert metrics["relinear_gate/b1/q"] != metrics["relinear_gate/b2/q"]


def test_plot_leaves_the_matplotlib_backend_alone(tmp_path):
    import matplotlib

    before = matplotlib.get_backend()
    matplotlib.use("svg")
    try:
        model = _model()
        monitor = QuadraticMonitor(plot_path=str(tmp_path / "r.png"))
        _fit(model, 0.1, epochs=1, callbacks=[monitor])
        assert os.path.getsize(tmp_path / "r.png") > 0
        assert matplotlib.get_backend() == "svg"
    finally:
        matplotlib.use(before)
