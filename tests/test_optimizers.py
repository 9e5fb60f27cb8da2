import os
import subprocess
import sys
import textwrap

import keras
import numpy as np
import pytest
from conftest import random
from conftest import to_numpy

import keras_quadratic as kq
from keras_quadratic.optimizers import ReLinearOptimizer

GROUPS = {"gate_kernel": "g", "gate_bias": "g", "square_kernel": "b",
          "square_bias": "b"}

OPTIMIZERS = {
    "sgd": lambda: keras.optimizers.SGD(0.05),
    "sgd_momentum": lambda: keras.optimizers.SGD(0.05, momentum=0.9),
    "pytorch_sgd_momentum": lambda: kq.optimizers.PyTorchSGD(
        0.05, momentum=0.9, nesterov=True),
    "adam": lambda: keras.optimizers.Adam(1e-2),
    "adamw": lambda: keras.optimizers.AdamW(1e-2, weight_decay=0.1),
    # The wrapped optimizer's options: the step must stay gamma times the
    # unwrapped optimizer's whatever they are.
    "sgd_loss_scale": lambda: keras.optimizers.SGD(0.05,
                                                   loss_scale_factor=128.0),
    "sgd_clipnorm": lambda: keras.optimizers.SGD(1.0, momentum=0.9,
                                                 clipnorm=0.1),
    "adam_global_clipnorm": lambda: keras.optimizers.Adam(
        1e-2, global_clipnorm=0.05),
    "sgd_ema": lambda: keras.optimizers.SGD(0.05, use_ema=True,
                                            ema_momentum=0.5),
    "sgd_accumulate": lambda: keras.optimizers.SGD(
        0.05, momentum=0.9, gradient_accumulation_steps=2),
}
# One fit step updates nothing with gradient accumulation over 2 steps.
FIT_OPTIMIZERS = sorted(set(OPTIMIZERS) - {"sgd_accumulate"})


def _model(seed=0):
    keras.utils.set_random_seed(seed)
    inputs = keras.Input((6, 6, 2))
    h = kq.QuadraticConv2D(
        3, 3, activation="relu",
        gate_kernel_initializer=keras.initializers.RandomNormal(0.0, 0.1),
        square_kernel_initializer=keras.initializers.RandomNormal(0.0, 0.1),
    )(inputs)
    h = keras.layers.Flatten()(h)
    outputs = kq.CompactQuadraticDense(2)(h)
    return keras.Model(inputs, outputs)


def _data():
    return random((16, 6, 6, 2), 3), random((16, 2), 4)


def _reference(name):
    """The unwrapped optimizer, with weight decay excluded from the
    quadratic weights as the wrapper does."""
    optimizer = OPTIMIZERS[name]()
    optimizer.exclude_from_weight_decay(var_names=["gate_", "square_"])
    return optimizer


def _steps(model, before):
    """Step of each weight, keyed by position and weight name."""
    return {(i, w.path.split("/")[-1]): to_numpy(w) - b
            for i, (w, b) in enumerate(zip(model.weights, before))}


def _one_fit_step(optimizer, weights):
    model = _model()
    model.set_weights(weights)
    model.compile(optimizer, "mse")
    x, y = _data()
    model.fit(x, y, batch_size=16, epochs=1, shuffle=False, verbose=0)
    return model


@pytest.mark.parametrize("name", FIT_OPTIMIZERS)
def test_step_ratios_inside_fit(name):
    gamma_g, gamma_b = 0.1, 0.01
    base = _model()
    weights = base.get_weights()
    plain = _one_fit_step(_reference(name), weights)
    wrapped = _one_fit_step(
        ReLinearOptimizer(OPTIMIZERS[name](), gamma_g=gamma_g, gamma_b=gamma_b),
        weights)
    plain_steps = _steps(plain, weights)
    wrapped_steps = _steps(wrapped, weights)
    seen = set()
    for path, step in plain_steps.items():
        group = GROUPS.get(path[1])
        gamma = {"g": gamma_g, "b": gamma_b, None: 1.0}[group]
        assert np.abs(step).max() > 0, path
        np.testing.assert_allclose(wrapped_steps[path], gamma * step,
                                   rtol=1e-3, atol=2e-8,  # float32 ulp
                                   err_msg=str(path))
        seen.add(group)
    assert seen == {"g", "b", None}


@pytest.mark.parametrize("name", sorted(OPTIMIZERS))
def test_step_ratios_over_several_applies(name):
    """Same gradients, several steps: the wrapped optimizer's state sees
    the same gradients, so each step keeps the ratio."""
    model = _model()
    variables = model.trainable_variables
    start = [to_numpy(v) for v in variables]
    grads = [[random(v.shape, 10 * s + i) for i, v in enumerate(variables)]
             for s in range(3)]
    results, iterations = {}, {}
    for label, optimizer in (
        ("plain", _reference(name)),
        ("wrapped", ReLinearOptimizer(OPTIMIZERS[name](), gamma_g=0.5, gamma_b=0.25)),
    ):
        for v, s in zip(variables, start):
            v.assign(s)
        for g in grads:
            optimizer.apply([keras.ops.convert_to_tensor(x) for x in g],
                            variables)
        optimizer.finalize_variable_values(variables)  # EMA, if any
        results[label] = [to_numpy(v) - s for v, s in zip(variables, start)]
        iterations[label] = int(to_numpy(optimizer.iterations))
        assert max(np.abs(r).max() for r in results[label]) > 0
    assert iterations["plain"] == iterations["wrapped"] > 0
    for v, plain, wrapped in zip(variables, results["plain"],
                                 results["wrapped"]):
        gamma = {"g": 0.5, "b": 0.25}.get(GROUPS.get(v.path.split("/")[-1]),
                                          1.0)
        np.testing.assert_allclose(wrapped, gamma * plain, rtol=1e-3,
                                   atol=1e-6, err_msg=v.path)


def test_gamma_zero_freezes_and_gamma_one_reproduces():
    x, y = _data()
    weights = _model().get_weights()
    frozen = _model()
    frozen.set_weights(weights)
    frozen.compile(ReLinearOptimizer(keras.optimizers.Adam(1e-2), 0.0, 0.0), "mse")
    frozen.fit(x, y, batch_size=4, epochs=2, verbose=0)
    for w, start in zip(frozen.weights, weights):
        name = w.path.split("/")[-1]
        if name in GROUPS:
            np.testing.assert_array_equal(to_numpy(w), start)
        else:
            assert np.abs(to_numpy(w) - start).max() > 0
    plain, wrapped = _model(), _model()
    plain.set_weights(weights)
    wrapped.set_weights(weights)
    plain.compile(keras.optimizers.Adam(1e-2), "mse")
    wrapped.compile(ReLinearOptimizer(keras.optimizers.Adam(1e-2), 1.0, 1.0), "mse")
    for m in (plain, wrapped):
        m.fit(x, y, batch_size=4, epochs=2, shuffle=False, verbose=0)
    for a, b in zip(plain.weights, wrapped.weights):
        np.testing.assert_allclose(to_numpy(a), to_numpy(b), rtol=1e-5,
                                   atol=1e-6)


def test_nested_and_subclassed_models():
    class Net(keras.Model):
        def __init__(self):
            super().__init__()
            inner_in = keras.Input((5,))
            self.block = keras.Model(
                inner_in, kq.QuadraticDense(4, name="clash")(inner_in))
            # a user layer whose weight names look quadratic, but is not
            self.head = keras.layers.Dense(1, name="gate_kernel_like")

        def call(self, x):
            return self.head(self.block(x))

    model = Net()
    model(random((2, 5)))
    before = [to_numpy(w) for w in model.weights]
    model.compile(ReLinearOptimizer(keras.optimizers.SGD(0.1), 0.0, 0.0), "mse")
    model.fit(random((8, 5)), random((8, 1), 1), epochs=1, verbose=0)
    moved = sorted(
        (w.path.split("/")[-1], bool(np.abs(to_numpy(w) - b).max() > 0))
        for w, b in zip(model.weights, before))
    assert moved == [("bias", True), ("bias", True), ("gate_bias", False),
                     ("gate_kernel", False), ("kernel", True),
                     ("kernel", True), ("square_bias", False),
                     ("square_kernel", False)]


def test_schedule_learning_rate_and_callbacks():
    schedule = keras.optimizers.schedules.PiecewiseConstantDecay([4], [0.1,
                                                                      0.01])
    optimizer = ReLinearOptimizer(keras.optimizers.SGD(schedule, momentum=0.9))
    model = _model()
    model.compile(optimizer, "mse")
    x, y = _data()
    model.fit(x, y, batch_size=4, epochs=2, verbose=0)  # 8 steps
    assert int(to_numpy(optimizer.iterations)) == 8
    assert int(to_numpy(optimizer.inner_optimizer.iterations)) == 8
    np.testing.assert_allclose(float(to_numpy(optimizer.learning_rate)), 0.01)
    # callbacks that read and set the rate act on the wrapped optimizer
    optimizer = ReLinearOptimizer(keras.optimizers.Adam(0.01))
    model = _model()
    model.compile(optimizer, "mse")
    history = model.fit(
        x, y, batch_size=4, epochs=3, verbose=0,
        callbacks=[keras.callbacks.LearningRateScheduler(
            lambda epoch, lr: 0.01 * 0.5 ** epoch)])
    np.testing.assert_allclose(history.history["learning_rate"],
                               [0.01, 0.005, 0.0025], rtol=1e-6)
    np.testing.assert_allclose(
        float(to_numpy(optimizer.inner_optimizer.learning_rate)), 0.0025,
        rtol=1e-6)
    model.fit(x, y, batch_size=16, epochs=3, verbose=0, callbacks=[
        keras.callbacks.ReduceLROnPlateau("loss", factor=0.5, patience=0,
                                          min_delta=1e9)])
    assert float(to_numpy(optimizer.inner_optimizer.learning_rate)) < 0.0025


@pytest.mark.parametrize("decayed", ["adamw", "sgd"])
def test_weight_decay_never_pulls_gate_bias_to_zero(decayed):
    make = {
        "adamw": lambda: keras.optimizers.AdamW(0.1, weight_decay=0.5),
        "sgd": lambda: keras.optimizers.SGD(0.1, weight_decay=0.5),
    }[decayed]
    model = _model()
    variables = model.trainable_variables
    zero_grads = [keras.ops.zeros(v.shape) for v in variables]
    optimizer = ReLinearOptimizer(make(), gamma_g=1.0, gamma_b=1.0)
    for _ in range(3):
        optimizer.apply(zero_grads, variables)
    gate_bias = model.layers[1].gate_bias
    np.testing.assert_array_equal(to_numpy(gate_bias), np.ones(3))
    kernel = model.layers[1].kernel
    assert np.abs(to_numpy(kernel)).sum() < np.abs(
        to_numpy(_model().layers[1].kernel)).sum()  # the rest is decayed
    # the unwrapped optimizer would have pulled it toward 0
    plain_model = _model()
    plain = make()
    for _ in range(3):
        plain.apply(zero_grads, plain_model.trainable_variables)
    assert float(to_numpy(plain_model.layers[1].gate_bias).max()) < 1.0


@pytest.mark.parametrize("policy", ["mixed_float16", "mixed_bfloat16"])
def test_mixed_precision_step_ratio(policy):
    keras.config.set_dtype_policy(policy)
    weights = _model().get_weights()
    x, y = _data()
    runs = {}
    for label, optimizer in (
        ("plain", keras.optimizers.SGD(0.05)),
        ("wrapped", ReLinearOptimizer(keras.optimizers.SGD(0.05), 0.1, 0.01)),
    ):
        model = _model()
        model.set_weights(weights)
        model.compile(optimizer, "mse",
                      auto_scale_loss=policy == "mixed_float16")
        model.fit(x, y, batch_size=16, epochs=1, verbose=0)
        if policy == "mixed_float16":
            assert isinstance(model.optimizer,
                              keras.optimizers.LossScaleOptimizer)
        runs[label] = _steps(model, weights)
    for path, step in runs["plain"].items():
        gamma = {"g": 0.1, "b": 0.01}.get(GROUPS.get(path[1]), 1)
        np.testing.assert_allclose(runs["wrapped"][path], gamma * step,
                                   rtol=2e-2, atol=1e-4 * gamma,
                                   err_msg=str(path))


@pytest.mark.parametrize("sgd", [keras.optimizers.SGD,
                                 kq.optimizers.PyTorchSGD])
def test_save_load_resume(tmp_path, sgd):
    x, y = _data()
    model = _model()
    model.compile(ReLinearOptimizer(sgd(0.05, momentum=0.9),
                           gamma_g=0.3, gamma_b=0.2), "mse")
    model.fit(x, y, batch_size=4, epochs=2, shuffle=False, verbose=0)
    path = os.path.join(tmp_path, "m.keras")
    model.save(path)
    loaded = keras.saving.load_model(path)
    assert isinstance(loaded.optimizer, ReLinearOptimizer)
    assert loaded.optimizer.gamma_g == 0.3 and loaded.optimizer.gamma_b == 0.2
    assert int(to_numpy(loaded.optimizer.iterations)) == 8
    for a, b in zip(model.optimizer.variables, loaded.optimizer.variables):
        np.testing.assert_array_equal(to_numpy(a), to_numpy(b))
    for m in (model, loaded):
        m.fit(x, y, batch_size=4, epochs=1, shuffle=False, verbose=0)
    for a, b in zip(model.weights, loaded.weights):
        np.testing.assert_allclose(to_numpy(a), to_numpy(b), rtol=1e-6,
                                   atol=1e-7)
    config = model.optimizer.get_config()
    clone = ReLinearOptimizer.from_config(config)
    assert type(clone.inner_optimizer) is type(model.optimizer.inner_optimizer)
    assert clone.inner_optimizer.get_config() == (
        model.optimizer.inner_optimizer.get_config())


@pytest.mark.parametrize(
    "args,error,match",
    [
        (("sgd",), TypeError, "optimizer"),
        ((object(),), TypeError, "optimizer"),
        ((keras.optimizers.SGD(), -1.0), ValueError, "gamma_g"),
        ((keras.optimizers.SGD(), 0.1, float("inf")), ValueError, "gamma_b"),
        ((keras.optimizers.SGD(), 0.1, float("nan")), ValueError, "gamma_b"),
        ((keras.optimizers.SGD(), "0.1"), TypeError, "gamma_g"),
    ],
)
def test_bad_arguments(args, error, match):
    with pytest.raises(error, match=match):
        ReLinearOptimizer(*args)


@pytest.mark.skipif(not hasattr(keras.optimizers, "MultiOptimizer"),
                    reason="this Keras has no MultiOptimizer")
def test_a_multi_optimizer_is_refused():
    multi = keras.optimizers.MultiOptimizer(lambda v: keras.optimizers.SGD())
    with pytest.raises(TypeError, match="MultiOptimizer"):
        ReLinearOptimizer(multi)


@pytest.mark.skipif(keras.backend.backend() != "tensorflow",
                    reason="tf.distribute is TensorFlow's")
def test_tf_distribute_mirrored_strategy():
    script = textwrap.dedent("""
        import numpy as np, tensorflow as tf
        cpu = tf.config.list_physical_devices("CPU")[0]
        tf.config.set_logical_device_configuration(
            cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
        import keras, keras_quadratic as kq
        keras.utils.set_random_seed(0)
        strategy = tf.distribute.MirroredStrategy(["CPU:0", "CPU:1"])
        x = np.random.rand(16, 5).astype("float32")
        y = np.random.rand(16, 1).astype("float32")
        steps = {}
        for gamma in (1.0, 0.1):
            with strategy.scope():
                keras.utils.set_random_seed(0)
                model = keras.Sequential([keras.Input((5,)),
                    kq.QuadraticDense(4, gate_kernel_initializer="ones"),
                    keras.layers.Dense(1)])
                start = [w.numpy() for w in model.weights]
                model.compile(kq.optimizers.ReLinearOptimizer(
                    keras.optimizers.SGD(0.1), gamma, gamma), "mse")
            model.fit(x, y, batch_size=16, epochs=1, verbose=0)
            steps[gamma] = [w.numpy() - s for w, s in
                            zip(model.weights, start)]
        names = [w.path.split("/")[-1] for w in model.weights]
        for name, full, shrunk in zip(names, steps[1.0], steps[0.1]):
            factor = 0.1 if name.startswith(("gate", "square")) else 1.0
            np.testing.assert_allclose(shrunk, factor * full, rtol=1e-3,
                                       atol=2e-7)
        print("replicas", strategy.num_replicas_in_sync)
    """)
    result = subprocess.run([sys.executable, "-c", script],
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-1500:]
    assert "replicas 2" in result.stdout


def test_ema_of_frozen_weights_stays_frozen():
    """EMA is taken after the shrink: with gamma 0, finalize_variable_values
    (called by fit at its end) writes the unchanged values back."""
    model = _model()
    before = [to_numpy(w) for w in model.weights]
    inner = keras.optimizers.SGD(0.1, momentum=0.9, use_ema=True,
                                 ema_momentum=0.9, ema_overwrite_frequency=2)
    model.compile(ReLinearOptimizer(inner, 0.0, 0.0), "mse")
    x, y = _data()
    model.fit(x, y, batch_size=4, epochs=3, verbose=0)
    for w, b in zip(model.weights, before):
        if w.path.split("/")[-1] in GROUPS:
            # the average of a constant, up to float32 rounding
            np.testing.assert_allclose(to_numpy(w), b, rtol=1e-6, atol=1e-9,
                                       err_msg=w.path)
        else:
            assert np.abs(to_numpy(w) - b).max() > 1e-3, w.path


def test_constraints_hold_after_the_shrink():
    keras.utils.set_random_seed(0)
    inputs = keras.Input((6, 6, 2))
    layer = kq.QuadraticConv2D(
        3, 3, gate_kernel_initializer=keras.initializers.RandomNormal(0, 1),
        gate_kernel_constraint=keras.constraints.UnitNorm(axis=[0, 1, 2]),
        square_bias_constraint=keras.constraints.NonNeg())
    model = keras.Model(inputs, keras.layers.Flatten()(layer(inputs)))
    model.compile(ReLinearOptimizer(keras.optimizers.SGD(0.5), 0.1, 0.1), "mse")
    x = random((16, 6, 6, 2), 3)
    model.fit(x, random((16, 48), 4) - 3.0, batch_size=8, epochs=2,
              verbose=0)
    norms = np.sqrt((to_numpy(layer.gate_kernel) ** 2).sum(axis=(0, 1, 2)))
    np.testing.assert_allclose(norms, np.ones(3), rtol=1e-5)
    assert to_numpy(layer.square_bias).min() >= 0.0


def test_prebuilt_wrapped_optimizer():
    model = _model()
    variables = model.trainable_variables
    inner = keras.optimizers.SGD(0.1, weight_decay=0.5)
    inner.build(variables)
    optimizer = ReLinearOptimizer(inner, gamma_g=0.1)
    zero_grads = [keras.ops.zeros(v.shape) for v in variables]
    optimizer.apply(zero_grads, variables)
    gate_bias = model.layers[1].gate_bias
    np.testing.assert_array_equal(to_numpy(gate_bias), np.ones(3))
    assert int(to_numpy(optimizer.iterations)) == 1
    # built on another model's variables: a clear error
    inner = keras.optimizers.SGD(0.1)
    inner.build(_model().trainable_variables)
    with pytest.raises(ValueError, match="already built on other variables"):
        ReLinearOptimizer(inner).apply(zero_grads, variables)


def test_one_optimizer_wrapped_twice_is_refused():
    inner = keras.optimizers.SGD(0.1)
    ReLinearOptimizer(inner)
    with pytest.raises(ValueError, match="already wrapped"):
        ReLinearOptimizer(inner)


def test_keras_internals_used_by_relinear():
    """keras_quadratic.optimizers relies on these private parts of Keras's
    optimizers (see its `_wrap_update_rule` and `_exclude_from_weight_decay`);
    if a Keras release changes them, this fails first."""
    for optimizer in (keras.optimizers.SGD(0.1, momentum=0.9),
                      keras.optimizers.Adam(), keras.optimizers.AdamW()):
        assert callable(getattr(type(optimizer), "_backend_update_step"))
        model = _model()
        variables = model.trainable_variables
        optimizer.build(variables)
        assert {optimizer._var_key(v) for v in variables} == {
            optimizer._var_key(v) for v in optimizer._trainable_variables}
        optimizer._exclude_from_weight_decay = {
            optimizer._var_key(variables[0])}
        optimizer._exclude_from_weight_decay_cache = {}
        assert not optimizer._use_weight_decay(variables[0])
        assert optimizer._use_weight_decay(variables[1])
    # the fused torch shrink steps aside where assignments are recorded
    from keras_quadratic.optimizers import _in_stateless_scope

    assert not _in_stateless_scope()
    with keras.StatelessScope():
        assert _in_stateless_scope()
    # apply() runs the update rule through the instance attribute
    optimizer = keras.optimizers.SGD(0.1)
    calls = []
    rule = type(optimizer)._backend_update_step
    optimizer._backend_update_step = lambda *args: calls.append(
        rule(optimizer, *args))
    model = _model()
    optimizer.apply([keras.ops.ones(v.shape) for v in
                     model.trainable_variables], model.trainable_variables)
    assert len(calls) == 1


def test_loss_scale_optimizer_around_the_wrapper_with_loss_scale_factor():
    """LossScaleOptimizer turns the inner loss_scale_factor off: it must
    reach the optimizer that ReLinear wraps."""
    wrapped = ReLinearOptimizer(keras.optimizers.SGD(0.05, loss_scale_factor=128.0),
                       1.0, 1.0)
    keras.optimizers.LossScaleOptimizer(wrapped)
    assert wrapped.inner_optimizer.loss_scale_factor is None
    assert wrapped.loss_scale_factor is None
    wrapped.loss_scale_factor = 4.0
    assert wrapped.inner_optimizer.loss_scale_factor == 4.0
    assert float(to_numpy(wrapped.scale_loss(keras.ops.ones(())))) == 4.0


def test_distinct_public_names_and_old_aliases():
    # One name per concept; the old shared name `ReLinear` still works in
    # each module, and both save under their registered names.
    assert kq.optimizers.ReLinear is kq.optimizers.ReLinearOptimizer
    assert kq.regularizers.ReLinear is kq.regularizers.ReLinearRegularizer
    assert kq.optimizers.ReLinearOptimizer is not (
        kq.regularizers.ReLinearRegularizer)
    optimizer = kq.optimizers.ReLinearOptimizer(keras.optimizers.SGD(0.1))
    regularizer = kq.regularizers.ReLinearRegularizer(gate_l2=1e-3)
    assert keras.saving.serialize_keras_object(optimizer)[
        "registered_name"] == "keras_quadratic>ReLinearOptimizer"
    assert keras.saving.serialize_keras_object(regularizer)[
        "registered_name"] == "keras_quadratic>ReLinearRegularizer"


@pytest.mark.parametrize("momentum,nesterov",
                         [(0.9, False), (0.9, True), (0.0, False)])
def test_pytorch_sgd_equals_torch_optim_sgd(momentum, nesterov):
    # Under a changing learning rate (a warm-up, then a decay), where
    # Keras's momentum rule differs from PyTorch's; with the rate given as
    # a Keras schedule, as in training.
    torch = pytest.importorskip("torch")
    rates = np.concatenate([np.linspace(0.005, 0.05, 8),
                            np.linspace(0.05, 0.001, 12)]).astype("float32")

    class Rates(keras.optimizers.schedules.LearningRateSchedule):
        def __call__(self, step):
            return keras.ops.take(keras.ops.convert_to_tensor(rates),
                                  keras.ops.cast(step, "int32"))

    shapes = [(3, 4), (4,), (2, 2, 3)]
    starts = [random(s, i) for i, s in enumerate(shapes)]
    gradients = [[random(s, 100 * t + i) for i, s in enumerate(shapes)]
                 for t in range(len(rates))]
    variables = [keras.Variable(w) for w in starts]
    ours = kq.optimizers.PyTorchSGD(Rates(), momentum=momentum,
                                    nesterov=nesterov)
    parameters = [torch.nn.Parameter(torch.from_numpy(w.copy()))
                  for w in starts]
    theirs = torch.optim.SGD(parameters, lr=float(rates[0]),
                             momentum=momentum, nesterov=nesterov)
    for rate, grads in zip(rates, gradients):
        ours.apply([keras.ops.convert_to_tensor(g) for g in grads],
                   variables)
        for group in theirs.param_groups:
            group["lr"] = float(rate)
        for p, g in zip(parameters, grads):
            p.grad = torch.from_numpy(g)
        theirs.step()
    for v, p in zip(variables, parameters):
        np.testing.assert_allclose(to_numpy(v), p.detach().numpy(),
                                   rtol=1e-5, atol=1e-6)
    if momentum:  # Keras's own SGD lands elsewhere: the test can fail
        plain = [keras.Variable(w) for w in starts]
        sgd = keras.optimizers.SGD(Rates(), momentum=momentum,
                                   nesterov=nesterov)
        for grads in gradients:
            sgd.apply([keras.ops.convert_to_tensor(g) for g in grads], plain)
        assert max(np.abs(to_numpy(v) - p.detach().numpy()).max()
                   for v, p in zip(plain, parameters)) > 1e-3


def test_pytorch_sgd_in_fit_under_a_schedule_equals_torch():
    # model.fit (jax.jit, tf.function, torch eager) through a Keras
    # schedule, against torch.optim.SGD on the same linear least squares
    torch = pytest.importorskip("torch")
    schedule = keras.optimizers.schedules.CosineDecay(
        0.005, 6, warmup_target=0.05, warmup_steps=4)
    x, y = random((32, 3), 1), random((32, 2), 2)
    kernel, bias = random((3, 2), 3), random((2,), 4)
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)])
    model.set_weights([kernel, bias])
    model.compile(kq.optimizers.PyTorchSGD(schedule, momentum=0.9,
                                           nesterov=True), "mse")
    model.fit(x, y, batch_size=8, epochs=3, shuffle=False, verbose=0)

    linear = torch.nn.Linear(3, 2)
    with torch.no_grad():
        linear.weight.copy_(torch.from_numpy(kernel.T.copy()))
        linear.bias.copy_(torch.from_numpy(bias))
    reference = torch.optim.SGD(linear.parameters(), lr=0.0, momentum=0.9,
                                nesterov=True)
    for step in range(12):
        reference.param_groups[0]["lr"] = float(to_numpy(schedule(step)))
        batch = slice(8 * (step % 4), 8 * (step % 4) + 8)
        reference.zero_grad()
        torch.nn.functional.mse_loss(
            linear(torch.from_numpy(x[batch])),
            torch.from_numpy(y[batch])).backward()
        reference.step()
    np.testing.assert_allclose(to_numpy(model.weights[0]),
                               linear.weight.detach().numpy().T,
                               rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(to_numpy(model.weights[1]),
                               linear.bias.detach().numpy(),
                               rtol=1e-5, atol=1e-6)


def test_pytorch_sgd_config_and_bad_momentum():
    optimizer = kq.optimizers.PyTorchSGD(0.1, momentum=1, nesterov=True,
                                         weight_decay=1e-3)
    assert optimizer.name == "pytorch_sgd" and optimizer.momentum == 1.0
    config = keras.optimizers.serialize(optimizer)
    clone = keras.optimizers.deserialize(config)
    assert type(clone) is kq.optimizers.PyTorchSGD
    assert clone.get_config() == optimizer.get_config()
    for bad in (-0.1, 1.5, "0.9", True, float("nan")):
        with pytest.raises(ValueError, match="PyTorchSGD.*`momentum`"):
            kq.optimizers.PyTorchSGD(0.1, momentum=bad)
    with pytest.raises(ValueError, match="PyTorchSGD.*`nesterov=True`"):
        kq.optimizers.PyTorchSGD(0.1, nesterov=True)


def test_pytorch_sgd_momentum_exact_in_float64():
    # 0.9 itself, not its float32 rounding (TensorFlow's ops.cast would)
    variable = keras.Variable(np.zeros(1), dtype="float64")
    optimizer = kq.optimizers.PyTorchSGD(1.0, momentum=0.9)
    for _ in range(2):
        optimizer.apply([keras.ops.ones((1,), dtype="float64")], [variable])
    assert to_numpy(optimizer.momentums[0])[0] == 0.9 + 1.0


# -- the wrapper is transparent (issue #26, items 1-4) ---------------------
def _two_weights():
    """A conventional weight (2.0) and a quadratic gate weight (0.5)."""
    layer = kq.QuadraticDense(1, use_bias=False)
    layer.build((None, 1))
    layer.kernel.assign([[2.0]])
    layer.gate_kernel.assign([[0.5]])
    return layer


def test_exclude_from_weight_decay_reaches_the_wrapped_optimizer():
    layer = _two_weights()
    other = keras.Variable([[3.0]], name="other")
    optimizer = kq.optimizers.ReLinearOptimizer(
        keras.optimizers.SGD(1.0, weight_decay=0.004))
    optimizer.exclude_from_weight_decay(var_list=[layer.kernel])
    variables = [layer.kernel, layer.gate_kernel, other]
    optimizer.apply([keras.ops.zeros(v.shape) for v in variables], variables)
    # excluded by the user, excluded as quadratic, decayed
    np.testing.assert_allclose(to_numpy(layer.kernel), [[2.0]])
    np.testing.assert_allclose(to_numpy(layer.gate_kernel), [[0.5]])
    np.testing.assert_allclose(to_numpy(other), [[3.0 * (1 - 0.004)]],
                               rtol=1e-6)


def test_set_weights_restores_the_wrapped_optimizers_state_too():
    def trained(steps):
        layer = _two_weights()
        optimizer = kq.optimizers.ReLinearOptimizer(
            keras.optimizers.SGD(0.1, momentum=0.9))
        variables = [layer.kernel, layer.gate_kernel]
        for step in range(steps):
            optimizer.apply([keras.ops.ones(v.shape) * (step + 1)
                             for v in variables], variables)
        return optimizer

    source, target = trained(3), trained(1)
    target.set_weights([to_numpy(v) for v in source.variables])
    # its own and SGD's (iterations, learning rate, momentums)
    assert len(source.variables) == len(target.variables) > 4
    for a, b in zip(source.variables, target.variables):
        np.testing.assert_array_equal(to_numpy(a), to_numpy(b))
    assert int(to_numpy(target.iterations)) == 3
    with pytest.raises(ValueError, match=f"expected {len(source.variables)} "
                       "arrays"):
        target.set_weights([to_numpy(v) for v in source.variables][:3])


def test_the_wrapped_optimizers_options_read_and_set_through_the_wrapper():
    inner = keras.optimizers.SGD(0.1, weight_decay=0.01, clipnorm=1.0,
                                 use_ema=True, ema_momentum=0.9,
                                 ema_overwrite_frequency=5,
                                 gradient_accumulation_steps=2)
    optimizer = kq.optimizers.ReLinearOptimizer(inner)
    assert (optimizer.weight_decay, optimizer.clipnorm, optimizer.use_ema,
            optimizer.ema_momentum, optimizer.ema_overwrite_frequency,
            optimizer.gradient_accumulation_steps) == (0.01, 1.0, True, 0.9,
                                                       5, 2)
    assert optimizer.clipvalue is None and optimizer.global_clipnorm is None
    optimizer.clipnorm = 2.0
    assert inner.clipnorm == 2.0
    # the averages and accumulators are the wrapped optimizer's only
    layer = _two_weights()
    optimizer.build([layer.kernel, layer.gate_kernel])
    assert len(optimizer.variables) == len(optimizer._variables) + len(
        inner.variables)
    assert optimizer._model_variables_moving_average is (
        inner._model_variables_moving_average)


def test_swap_ema_weights_under_loss_scaling():
    """What compile builds under mixed_float16: LossScaleOptimizer around
    ReLinearOptimizer(SGD(use_ema=True)); SwapEMAWeights finds the averages
    through it."""
    model = keras.Sequential([keras.Input((3,)), kq.QuadraticDense(2),
                              keras.layers.Dense(1)])
    model.compile(keras.optimizers.LossScaleOptimizer(
        kq.optimizers.ReLinearOptimizer(keras.optimizers.SGD(
            0.1, use_ema=True, ema_momentum=0.5))), "mse")
    x, y = random((16, 3)), random((16, 1), 1)
    model.fit(x, y, epochs=2, batch_size=8, verbose=0, validation_data=(x, y),
              callbacks=[keras.callbacks.SwapEMAWeights(swap_on_epoch=True)])
    inner = model.optimizer.inner_optimizer.inner_optimizer
    for variable, average in zip(model.trainable_variables,
                                 inner._model_variables_moving_average):
        # after fit, the model holds the averages (finalized)
        np.testing.assert_allclose(to_numpy(variable), to_numpy(average),
                                   rtol=1e-6)


@pytest.mark.parametrize("nesterov", [False, True])
def test_pytorch_sgd_on_bfloat16_variables_computes_in_float32(nesterov):
    """bfloat16 variables: the momentum (0.9, not its bfloat16 0.8984375)
    and the rate act in float32, each stored value rounded once to
    bfloat16 (issue #26 item 7): one unit gradient, then 29 zero ones,
    against NumPy, and against torch.optim.SGD's momentum buffer."""
    import ml_dtypes

    torch = pytest.importorskip("torch")
    bf16 = ml_dtypes.bfloat16

    def stored(x):
        return np.asarray(x, "float32").astype(bf16).astype("float32")

    start = np.array([1.0, -2.0, 0.5], "float32")
    variable = keras.Variable(start, dtype="bfloat16")
    ours = kq.optimizers.PyTorchSGD(0.01, momentum=0.9, nesterov=nesterov)
    parameter = torch.nn.Parameter(torch.from_numpy(start).bfloat16())
    theirs = torch.optim.SGD([parameter], lr=0.01, momentum=0.9)
    lr, m = np.float32(0.01), np.float32(0.9)
    value, buffer = stored(start), np.zeros(3, "float32")
    for step in range(30):
        gradient = np.full(3, 1.0 if step == 0 else 0.0, "float32")
        ours.apply([keras.ops.convert_to_tensor(gradient, "bfloat16")],
                   [variable])
        parameter.grad = torch.from_numpy(gradient).bfloat16()
        theirs.step()
        buffer = stored(stored(buffer * m) + gradient)
        direction = stored(gradient + buffer * m) if nesterov else buffer
        value = stored(value - lr * direction)
    np.testing.assert_array_equal(
        to_numpy(ours.momentums[0]).astype("float32"), buffer)
    np.testing.assert_array_equal(to_numpy(variable).astype("float32"),
                                  value)
    # torch.optim.SGD's buffer (buf.mul_(0.9).add_(grad)) is the same
    np.testing.assert_array_equal(
        buffer, theirs.state[parameter]["momentum_buffer"].float().numpy())
    # 0.9^29 = 0.0471 in exact arithmetic; bfloat16's 0.8984375^29 = 0.0447
    assert abs(buffer[0] - 0.9 ** 29) < 1e-3


def test_gammas_changed_between_fits_and_epochs_act_on_every_backend(
        tmp_path):
    """Issue #26 item 6: the gammas are variables: a change after a fit, or
    a callback's gamma warm-up between epochs, acts on JAX and TensorFlow
    too (whose steps are traced once), and saves with the optimizer."""
    x, y = random((16, 4)), random((16, 1), 1)

    def quadratic_weights(model):
        return [to_numpy(w) for w in model.weights
                if kq.groups.quadratic_group(w) is not None]

    model = keras.Sequential([keras.Input((4,)), kq.QuadraticDense(3),
                              keras.layers.Dense(1)])
    optimizer = ReLinearOptimizer(keras.optimizers.SGD(0.1), 0.0, 0.0)
    model.compile(optimizer, "mse")
    start = quadratic_weights(model)
    model.fit(x, y, batch_size=8, verbose=0)
    for a, b in zip(start, quadratic_weights(model)):
        np.testing.assert_array_equal(a, b)  # gamma 0: frozen
    optimizer.gamma_g, optimizer.gamma_b = 1.0, 0.5
    model.fit(x, y, batch_size=8, verbose=0)
    moved = quadratic_weights(model)
    assert all(np.abs(a - b).max() > 0 for a, b in zip(start, moved))

    class WarmUp(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            self.model.optimizer.gamma_g = self.model.optimizer.gamma_b = (
                [0.0, 1.0][epoch])

        def on_epoch_end(self, epoch, logs=None):
            self.seen = getattr(self, "seen", []) + [quadratic_weights(
                self.model)]

    warm_up = WarmUp()
    model.fit(x, y, batch_size=8, epochs=2, verbose=0, callbacks=[warm_up])
    after_first, after_second = warm_up.seen
    for a, b in zip(moved, after_first):
        np.testing.assert_array_equal(a, b)
    assert all(np.abs(a - b).max() > 0
               for a, b in zip(after_first, after_second))
    path = str(tmp_path / "m.keras")
    model.save(path)
    loaded = keras.saving.load_model(path)
    assert (loaded.optimizer.gamma_g, loaded.optimizer.gamma_b) == (1.0, 1.0)


@pytest.mark.parametrize("gamma", [0.0, 0.01, 0.3, 1.0])
def test_the_shrink_is_old_plus_gamma_times_the_step_exactly(gamma):
    """float32 variables end at old + gamma * (new - old) as NumPy computes
    it in float32 (new: the unwrapped optimizer's result), bit for bit, the
    fused torch path included, also where the update overflows to inf and
    for -0.0; gamma 1 leaves the update as it is."""
    def start(shape, seed):
        values = random(shape, seed)  # none 0 or 1
        values.reshape(-1)[:2] = (-0.0, 3.3e38)
        return values

    def layer_and_variables():
        layer = kq.QuadraticDense(64)
        layer.build((None, 32))
        for i, variable in enumerate(layer.trainable_variables):
            variable.assign(start(variable.shape, 10 + i))
        return layer.trainable_variables

    wrapped, plain = layer_and_variables(), layer_and_variables()
    olds = [to_numpy(v) for v in wrapped]
    grads = []
    for i, v in enumerate(wrapped):
        grad = random(v.shape, i)
        grad.reshape(-1)[:2] = (0.0, -3.3e38)  # -0.0 stays; 3.3e38 -> inf
        grads.append(keras.ops.convert_to_tensor(grad))
    ReLinearOptimizer(keras.optimizers.SGD(0.1), gamma,
                      gamma).apply(grads, wrapped)
    keras.optimizers.SGD(0.1).apply(grads, plain)
    for v, p, old in zip(wrapped, plain, olds):
        new = to_numpy(p)
        assert np.signbit(new.reshape(-1)[0]) and np.isinf(new.reshape(-1)[1])
        expected = new
        if v.path.split("/")[-1] in GROUPS and gamma != 1.0:
            with np.errstate(all="ignore"):  # inf - inf
                expected = old + np.float32(gamma) * (new - old)
        assert expected.dtype == np.float32
        actual = to_numpy(v)
        np.testing.assert_array_equal(actual, expected, v.path)
        np.testing.assert_array_equal(np.signbit(actual),
                                      np.signbit(expected), v.path)


@pytest.mark.parametrize("inner", ["sgd", "adafactor"])
def test_stateless_apply_shrinks_too(inner):
    """Under `stateless_apply` (assignments recorded, not made), gamma 0
    keeps the quadratic weights and the others move, whatever the wrapped
    optimizer's update rule does (Adafactor assigns its updates)."""
    if keras.backend.backend() == "tensorflow":
        pytest.skip("Keras has no stateless_apply on TensorFlow")
    layer = kq.QuadraticDense(5)
    layer.build((None, 4))
    variables = layer.trainable_variables
    optimizer = ReLinearOptimizer(
        {"sgd": keras.optimizers.SGD,
         "adafactor": keras.optimizers.Adafactor}[inner](0.1), 0.0, 0.0)
    optimizer.build(variables)
    before = [to_numpy(v) for v in variables]
    grads = [keras.ops.convert_to_tensor(random(v.shape, i))
             for i, v in enumerate(variables)]
    new_values, _ = optimizer.stateless_apply(  # (copies: torch's SGD
        # updates the values it is given in place)
        [keras.ops.copy(v.value) for v in optimizer.variables], grads,
        [keras.ops.copy(v.value) for v in variables])
    for variable, value, old in zip(variables, new_values, before):
        if variable.path.split("/")[-1] in GROUPS:
            np.testing.assert_array_equal(to_numpy(value), old)
        else:
            assert np.abs(to_numpy(value) - old).max() > 0
        np.testing.assert_array_equal(to_numpy(variable), old)  # untouched
