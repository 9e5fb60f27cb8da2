"""kq.callbacks.CUDAGraphTrainStep. The CUDA part (recording and replaying
the step) needs a GPU: benchmarks/gpu_check.py checks it there (weights
after CUDA-graph steps against eager steps). Here, on every backend: the
arguments, what it does where no graph can be used; on torch: the
bookkeeping around the graph (static inputs refilled every step, one graph
per batch shape after the warm-up, outputs, fallback when recording fails),
with a stand-in for the recording that re-runs the step on the graph's
input tensors, and the host constants made on the device."""

import warnings

import keras
import numpy as np
import pytest

import keras_quadratic as kq
from keras_quadratic import cuda_graph

torch_only = pytest.mark.skipif(keras.backend.backend() != "torch",
                                reason="the torch backend's training step")


def _model():
    keras.utils.set_random_seed(1)
    model = keras.Sequential([
        keras.Input((6, 6, 2)), kq.QuadraticConv2D(3, 3),
        keras.layers.BatchNormalization(),
        keras.layers.GlobalAveragePooling2D(), keras.layers.Dense(4)])
    model.compile(
        kq.optimizers.ReLinearOptimizer(kq.optimizers.PyTorchSGD(
            keras.optimizers.schedules.CosineDecay(0.1, 20), momentum=0.9)),
        keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"])
    return model


def _data():
    rng = np.random.default_rng(0)
    # 22 examples in batches of 4: five of 4 and one of 2 (two shapes)
    return (rng.standard_normal((22, 6, 6, 2)).astype("float32"),
            rng.integers(0, 4, 22).astype("int32"))


def _fit(model, callbacks=()):
    x, y = _data()
    history = model.fit(x, y, batch_size=4, epochs=3, shuffle=False,
                        verbose=0, callbacks=list(callbacks))
    return history.history


def _assert_same_training(eager, graphed, eager_logs, graphed_logs):
    for a, b in zip(eager.get_weights(), graphed.get_weights()):
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-6)
    for key in eager_logs:
        np.testing.assert_allclose(eager_logs[key], graphed_logs[key],
                                   rtol=1e-6)


@pytest.mark.parametrize("kwargs, match", [
    (dict(warmup_steps=0), "warmup_steps"),
    (dict(warmup_steps=True), "warmup_steps"),
    (dict(warmup_steps=2.0), "warmup_steps"),
    (dict(fallback="ignore"), "fallback"),
])
def test_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        kq.callbacks.CUDAGraphTrainStep(**kwargs)
    with pytest.raises(TypeError, match="cudnn_benchmark"):
        kq.callbacks.CUDAGraphTrainStep(cudnn_benchmark="yes")


def test_where_no_graph_can_be_used():
    """JAX and TensorFlow: nothing to do (Keras compiles their steps);
    torch on the CPU: a warning, or an error with fallback='raise'. The
    training is the eager one either way."""
    eager, graphed = _model(), _model()
    eager_logs = _fit(eager)
    callback = kq.callbacks.CUDAGraphTrainStep()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        graphed_logs = _fit(graphed, [callback])
    messages = [str(w.message) for w in caught
                if "CUDAGraphTrainStep" in str(w.message)]
    _assert_same_training(eager, graphed, eager_logs, graphed_logs)
    assert callback.recorded_graphs == 0
    if keras.backend.backend() == "torch":
        assert messages and "CUDA GPU" in messages[0], messages
        assert "CUDA GPU" in callback.fallback_reason
        with pytest.raises(RuntimeError, match="CUDA GPU"):
            _fit(_model(), [kq.callbacks.CUDAGraphTrainStep(
                fallback="raise")])
    else:
        assert not messages and callback.fallback_reason is None


@pytest.fixture
def stand_in_recording(monkeypatch):
    """A 'GPU' whose recording keeps the step to re-run on each replay,
    on the graph's input tensors, as a CUDA graph replays its kernels."""
    monkeypatch.setattr(cuda_graph, "_cuda_ready", lambda: None)
    monkeypatch.setattr(cuda_graph, "_on_side_stream", lambda f: f())
    monkeypatch.setattr(cuda_graph, "_capture", lambda f: f)


@torch_only
def test_replayed_steps_train_as_eager_steps(stand_in_recording):
    eager, graphed = _model(), _model()
    eager_logs = _fit(eager)
    graphed.make_train_function()
    eager_function = graphed.train_function
    callback = kq.callbacks.CUDAGraphTrainStep(warmup_steps=2)
    graphed_logs = _fit(graphed, [callback])
    # The batch of 4 is recorded after 2 eager steps; the last batch, of
    # 2, comes 3 times: 2 eager steps, then its own graph.
    assert callback.recorded_graphs == 2
    assert callback.fallback_reason is None
    _assert_same_training(eager, graphed, eager_logs, graphed_logs)
    assert graphed.train_function is eager_function  # restored


@torch_only
def test_a_step_that_cannot_be_recorded_runs_eagerly(monkeypatch,
                                                     stand_in_recording):
    def refuse(function):
        raise RuntimeError("CUDA error: operation not permitted when stream "
                           "is capturing")

    monkeypatch.setattr(cuda_graph, "_capture", refuse)
    eager, graphed = _model(), _model()
    eager_logs = _fit(eager)
    callback = kq.callbacks.CUDAGraphTrainStep(warmup_steps=1)
    with pytest.warns(UserWarning, match="could not be recorded.*stream is "
                      "capturing.*training steps run eagerly"):
        graphed_logs = _fit(graphed, [callback])
    assert callback.recorded_graphs == 0
    _assert_same_training(eager, graphed, eager_logs, graphed_logs)
    with pytest.raises(RuntimeError, match="could not be recorded"):
        _fit(_model(), [kq.callbacks.CUDAGraphTrainStep(
            warmup_steps=1, fallback="raise")])


@torch_only
def test_not_with_torch_compile():
    model = _model()
    model.compile("sgd", "mse", jit_compile=True)
    callback = kq.callbacks.CUDAGraphTrainStep()
    callback.set_model(model)
    with pytest.raises(ValueError, match="jit_compile=True"):
        callback.on_train_begin()


@torch_only
@pytest.mark.parametrize("data, dtype", [
    (0.9, "float32"), (0.9, "bfloat16"), (512, "int32"), (3, None),
    (True, None), (2.5, None), ((512, 3), "int32"), ([[1, 2], [3, 4]],
                                                     "float32"),
    (np.float32(2.5), None), (np.arange(6).reshape(2, 3), "float64"),
    ([], "float32"),
])
def test_host_constants_made_on_the_device(monkeypatch, data, dtype):
    """What Keras turns into tensors inside a step comes out of the
    recording's torch mode as torch.as_tensor/torch.tensor make it (made
    by fills on the device; 'cpu' stands in for 'cuda' here)."""
    import torch

    dtype = dtype and getattr(torch, dtype)
    expected = torch.as_tensor(data, dtype=dtype, device="cpu")
    made = []
    full = torch.full

    def spy(*args, **kwargs):
        made.append(args)
        return full(*args, **kwargs)

    monkeypatch.setattr(cuda_graph, "_GRAPH_DEVICE_TYPES", ("cpu",))
    monkeypatch.setattr(torch, "full", spy)
    with cuda_graph._constants_on_device():
        for function in (torch.as_tensor, torch.tensor):
            result = function(data, dtype=dtype, device="cpu")
            assert result.dtype == expected.dtype
            assert result.shape == expected.shape
            assert torch.equal(result, expected)
    assert len(made) == 2 * expected.numel()


def test_the_examples_flag(capsys):
    """`--cuda-graph`: auto turns it on for torch on a CUDA GPU (warning
    where it falls back), on insists (errors), off never; exit 2 where
    `on` cannot apply."""
    from argparse import Namespace

    from keras_quadratic.cifar import cuda_graph_callbacks

    cpu, gpu = {"platform": "cpu"}, {"platform": "gpu"}

    def callbacks(flag, backend, device, jit="auto"):
        return cuda_graph_callbacks(
            Namespace(cuda_graph=flag, jit_compile=jit), backend, device)

    [auto] = callbacks("auto", "torch", gpu)
    [on] = callbacks("on", "torch", gpu)
    assert (auto.fallback, on.fallback) == ("warn", "raise")
    assert callbacks("off", "torch", gpu) == []
    assert callbacks("auto", "torch", gpu, jit="true") == []
    assert callbacks("auto", "torch", cpu) == []
    assert callbacks("auto", "jax", gpu) == []
    for flag, backend, device, jit in (("on", "torch", cpu, "auto"),
                                       ("on", "jax", gpu, "auto"),
                                       ("on", "torch", gpu, "true")):
        with pytest.raises(SystemExit) as exit_:
            callbacks(flag, backend, device, jit)
        assert exit_.value.code == 2
        assert "--cuda-graph on" in capsys.readouterr().err


@torch_only
def test_host_overhead_benchmark_runs(capsys):
    import sys

    from examples_util import ROOT

    sys.path.insert(0, f"{ROOT}/benchmarks")
    import torch_host_overhead

    torch_host_overhead.main(["--depth", "8", "--steps", "1"])
    out = capsys.readouterr().out
    assert "QResNet8: torch backend" in out and "ResNet8:" in out


@torch_only
def test_a_fit_that_raised_leaves_nothing_behind(stand_in_recording):
    """A fit stopped by an error never reaches on_train_end: the next fit,
    with the same callback, starts from the eager step again."""

    class Stop(keras.callbacks.Callback):
        def on_train_batch_end(self, batch, logs=None):
            if batch == 3:
                raise KeyboardInterrupt

    model = _model()
    model.make_train_function()
    eager_function = model.train_function
    callback = kq.callbacks.CUDAGraphTrainStep(warmup_steps=1)
    with pytest.raises(KeyboardInterrupt):
        _fit(model, [callback, Stop()])
    assert model.train_function != eager_function  # still wrapped
    _fit(model, [callback])  # no recursion into the stale wrapper
    assert model.train_function is eager_function
    assert callback.recorded_graphs == 2


@torch_only
def test_eager_steps_for_too_many_shapes_are_announced(monkeypatch,
                                                      stand_in_recording):
    monkeypatch.setattr(cuda_graph, "MAX_GRAPHS", 1)
    callback = kq.callbacks.CUDAGraphTrainStep(warmup_steps=1)
    with pytest.warns(UserWarning, match="more than 1 shapes of batch"):
        _fit(_model(), [callback])
    assert callback.recorded_graphs == 1
