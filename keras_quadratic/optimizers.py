"""ReLinear step shrinking: an optimizer wrapper for any Keras optimizer;
and PyTorchSGD, SGD with the momentum of the original (PyTorch) code.

For each trainable variable v, with Delta the step the wrapped optimizer
takes (its new value minus the old one):

    v <- v + gamma_g * Delta   for gate_kernel, gate_bias
    v <- v + gamma_b * Delta   for square_kernel, square_bias
    v <- v + Delta             for every other variable

Scaling the step (not the gradient) makes this hold for adaptive optimizers
(Adam, RMSprop, Lion...) as well as SGD. The quadratic variables are those
the quadratic layers tag, whatever their names.
"""

import math

import numpy as np

import keras
from keras import ops

from keras_quadratic.groups import GATE
from keras_quadratic.groups import SQUARE
from keras_quadratic.groups import quadratic_group


def _gamma(value, name):
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(
            f"ReLinearOptimizer: argument `{name}` must be a number in "
            f"[0, inf). Received: {name}={value!r}"
        )
    if not math.isfinite(value) or value < 0:
        raise ValueError(
            f"ReLinearOptimizer: argument `{name}` must be a finite, "
            f"non-negative number. Received: {name}={value!r}"
        )
    return float(value)


# -- Keras internals ---------------------------------------------------------
# Keras's public optimizer API has no place for what ReLinear needs; these
# helpers are the only code here that touches private attributes, and
# tests/test_optimizers.py::test_keras_internals_used_by_relinear fails
# loudly if a Keras release changes them.


def _wrap_update_rule(optimizer, shrink_update):
    """Makes `optimizer` call `shrink_update(update_rule, grads, variables,
    learning_rate)` in place of its update rule.

    `Optimizer.apply` runs, in order: loss-scale unscaling, gradient
    accumulation, clipping, weight decay, the update rule
    (`_backend_update_step`: fused on torch, per replica under
    tf.distribute), EMA, constraints. Shrinking the steps right after the
    update rule keeps every other stage correct: EMA averages and
    constraints see the shrunk values, and with gradient accumulation only
    the real update steps are shrunk.
    """
    if "_backend_update_step" in vars(optimizer):
        raise ValueError(
            "ReLinearOptimizer: this optimizer is already wrapped by a "
            "ReLinearOptimizer; wrap a new instance.")
    update_rule = getattr(type(optimizer), "_backend_update_step", None)
    if update_rule is None:
        raise RuntimeError(
            "ReLinearOptimizer: this Keras version has no "
            "Optimizer._backend_update_step; keras-quadratic needs updating.")

    def backend_update_step(grads, variables, learning_rate):
        rule = lambda g, v, lr: update_rule(optimizer, g, v, lr)  # noqa: E731
        return shrink_update(rule, grads, variables, learning_rate)

    optimizer._backend_update_step = backend_update_step


def _in_stateless_scope():
    """Whether variable assignments are being recorded (`stateless_apply`)
    rather than made."""
    from keras.src.backend import in_stateless_scope

    return in_stateless_scope()


def _shrink_update_torch(update_rule, grads, variables, learning_rate,
                         shrunk):
    """`ReLinearOptimizer._shrink_update` on torch, fused over the float32
    and float64 variables as torch.optim's foreach paths are (a copy and
    three launches per gamma, then one select per variable, where the
    generic path takes about seven operators per variable): the old values
    copied, the update, then old + gamma * (new - old), or the new value
    itself where gamma is 1, computed as the other backends compute it
    (the same roundings, the same select) and written in place. The gammas
    stay device tensors (no host sync, and a CUDA graph reads their current
    values). Returns what is left for the generic path: the 16-bit
    variables (a 16-bit gamma would round) and their old values."""
    import torch

    wide = [(v, gamma) for v, gamma in shrunk
            if v.dtype in ("float32", "float64")]
    narrow = [(v, gamma) for v, gamma in shrunk
              if v.dtype not in ("float32", "float64")]
    with torch.no_grad():
        old_values = [torch.empty_like(v.value) for v, _ in wide]
        if wide:
            torch._foreach_copy_(old_values, [v.value for v, _ in wide])
        narrow_old_values = [ops.copy(v.value) for v, _ in narrow]
        update_rule(grads, variables, learning_rate)
        groups = {}
        for (variable, gamma), old in zip(wide, old_values):
            group = groups.setdefault((id(gamma), variable.dtype),
                                      (gamma, [], []))
            group[1].append(variable.value)  # (the updated tensors)
            group[2].append(old)
        for gamma, new_values, shrunk_values in groups.values():
            gamma = gamma.value.to(new_values[0].dtype)
            is_one = torch.eq(gamma, 1)
            steps = torch._foreach_sub(new_values, shrunk_values)
            torch._foreach_mul_(steps, gamma)
            torch._foreach_add_(shrunk_values, steps)
            for new, shrunk in zip(new_values, shrunk_values):
                # (a select, as the generic path: also for inf, NaN, -0.0)
                torch.where(is_one, new, shrunk, out=new)
    return narrow, narrow_old_values


def _exclude_from_weight_decay(optimizer, variables):
    """Adds `variables` to the optimizer's weight-decay exclusions, keeping
    the user's own, built or not (the public `exclude_from_weight_decay()`
    replaces them, and only before `build`)."""
    excluded = set(getattr(optimizer, "_exclude_from_weight_decay", ()))
    excluded.update(optimizer._var_key(v) for v in variables)
    optimizer._exclude_from_weight_decay = excluded
    optimizer._exclude_from_weight_decay_cache = {}


def _built_on(optimizer, variables):
    """Whether a built optimizer tracks exactly these variables."""
    return [optimizer._var_key(v) for v in optimizer._trainable_variables] \
        == [optimizer._var_key(v) for v in variables]


@keras.saving.register_keras_serializable(
    package="keras_quadratic", name="ReLinearOptimizer"
)
class ReLinearOptimizer(keras.optimizers.Optimizer):
    """Wraps `optimizer` so that the quadratic weights take shrunk steps.

    For each trainable variable `w` with the wrapped optimizer's step
    `w_new - w_old` (its learning rate, momentum, clipping and decay):

        w = w_old + gamma_g * (w_new - w_old)   for gate_kernel, gate_bias
        w = w_old + gamma_b * (w_new - w_old)   for square_kernel, square_bias
        w = w_new                               for every other weight

    The quadratic layers tag the variables they create, so the groups are
    found by what a weight is, never by its name. For SGD this equals
    ReLinear's separate learning rates (lr * gamma), and it keeps its
    meaning for adaptive optimizers such as Adam, whose steps do not scale
    with the gradient.

    Args:
        optimizer: any `keras.optimizers.Optimizer` instance (SGD, Adam,
            AdamW, ...). Its learning rate (or schedule), weight decay,
            clipping and state drive the update.
        gamma_g: factor on the steps of `gate_kernel` and `gate_bias`.
        gamma_b: factor on the steps of `square_kernel` and `square_bias`.
            The defaults, 1e-2, are the ratio of the quadratic rate to the
            main rate in the paper's ReZero script (1e-3 / 0.1). 0 freezes
            the quadratic weights (a conventional network); 1 is plain
            training. Both become optimizer variables when it is built:
            setting `optimizer.gamma_g` between fits or epochs (a gamma
            warm-up callback) acts on every backend, and they save and
            resume with the optimizer.
        name: the optimizer's name; default "re_linear_optimizer" (from
            the class name, as Keras names optimizers).
        **kwargs: none are accepted: options such as `learning_rate` or
            `clipnorm` belong to the wrapped optimizer (a TypeError says
            so).

    Weight decay: the wrapped optimizer's `weight_decay` is not applied to
    the quadratic weights, since decaying `gate_bias` toward 0 would move
    the neuron away from the conventional one; shrink them with the
    `keras_quadratic.regularizers.ReLinearRegularizer` regularizer instead.

    `learning_rate`, `iterations`, `weight_decay`, the clipping options,
    `use_ema` and its options and `gradient_accumulation_steps` are those
    of the wrapped optimizer (read and set), so schedules and callbacks
    such as `ReduceLROnPlateau` and `SwapEMAWeights` act on it, as do
    `exclude_from_weight_decay` and `set_weights` (which sets `variables`,
    its own and the wrapped optimizer's). The
    wrapped optimizer's other options keep their meaning: the steps are
    shrunk right after its update rule, so `clipnorm`/`global_clipnorm`
    clip the gradients as usual, `loss_scale_factor` scales the loss (this
    wrapper's `scale_loss` is the wrapped optimizer's), with
    `gradient_accumulation_steps` only the real updates are shrunk, the
    `use_ema` moving averages and the variables' constraints see the shrunk
    values. An optimizer can be wrapped once; one already built must have
    been built on the model's trainable variables.

    Example:

    >>> import numpy as np
    >>> import keras
    >>> import keras_quadratic as kq
    >>> model = keras.Sequential([keras.Input((4,)), kq.QuadraticDense(8),
    ...                           keras.layers.Dense(1)])
    >>> optimizer = kq.optimizers.ReLinearOptimizer(
    ...     keras.optimizers.SGD(0.1, momentum=0.9), gamma_g=1e-2,
    ...     gamma_b=1e-2)
    >>> model.compile(optimizer, "mse")
    >>> history = model.fit(np.random.rand(16, 4), np.random.rand(16, 1),
    ...                     verbose=0)
    """

    def __init__(self, optimizer, gamma_g=1e-2, gamma_b=1e-2, name=None,
                 **kwargs):
        if isinstance(optimizer, dict):
            optimizer = keras.optimizers.deserialize(optimizer)
        if not isinstance(optimizer, keras.optimizers.Optimizer):
            raise TypeError(
                "ReLinearOptimizer: argument `optimizer` must be a "
                "keras.optimizers.Optimizer instance (e.g. "
                f"keras.optimizers.SGD(0.1)). Received: {optimizer!r}"
            )
        multi = getattr(keras.optimizers, "MultiOptimizer", ())
        if multi and isinstance(optimizer, multi):
            raise TypeError(
                "ReLinearOptimizer: a MultiOptimizer updates the weights "
                "through its sub-optimizers, where the steps of the "
                "quadratic weights would not be shrunk. Wrap a single "
                "optimizer (e.g. keras.optimizers.SGD(0.1)).")
        if isinstance(optimizer, keras.optimizers.LossScaleOptimizer):
            raise TypeError(
                "ReLinearOptimizer: wrap the plain optimizer and let "
                "`model.compile(auto_scale_loss=True)` add loss scaling "
                "around ReLinearOptimizer."
            )
        if kwargs:
            raise TypeError(
                "ReLinearOptimizer: unexpected arguments "
                f"{sorted(kwargs)}; set them on the wrapped optimizer."
            )
        super().__init__(learning_rate=0.0, name=name)
        # Python numbers until `build` makes them variables (see the
        # gamma_g/gamma_b properties).
        self.__dict__["_gamma_values"] = {
            "gamma_g": _gamma(gamma_g, "gamma_g"),
            "gamma_b": _gamma(gamma_b, "gamma_b")}
        self.__dict__["_gamma_variables"] = {}
        _wrap_update_rule(optimizer, self._shrink_update)
        self.inner_optimizer = optimizer

    def _gamma_of(self, variable):
        """The gamma variable of a quadratic variable's group, or None
        (built optimizers only)."""
        group = quadratic_group(variable)
        if group == GATE:
            return self._gamma_variables["gamma_g"]
        if group == SQUARE:
            return self._gamma_variables["gamma_b"]
        return None

    def _gamma_property(name):  # noqa: N805 - used in the class body
        def get(self):
            value = self._gamma_values[name]
            variable = self._gamma_variables.get(name)
            if variable is None:
                return value
            # the variable's value (restored from a checkpoint, say); the
            # number it was set from where they agree in float32 (0.3,
            # not 0.30000001192092896)
            stored = float(keras.ops.convert_to_numpy(variable))
            return value if np.float32(value) == np.float32(stored) else (
                stored)

        def set(self, value):
            value = _gamma(value, name)
            self._gamma_values[name] = value
            variable = self._gamma_variables.get(name)
            if variable is not None:
                variable.assign(value)

        return property(get, set, doc=(
            f"`{name}`, a variable once built: setting it between steps "
            "(a callback's warm-up of gamma) acts on every backend, and it "
            "saves and resumes with the optimizer."))

    gamma_g = _gamma_property("gamma_g")
    gamma_b = _gamma_property("gamma_b")
    del _gamma_property

    def build(self, var_list):
        inner = self.inner_optimizer
        quadratic = [v for v in var_list if quadratic_group(v) is not None]
        if inner.built and not _built_on(inner, var_list):
            raise ValueError(
                "ReLinearOptimizer: the wrapped optimizer was already "
                "built on other variables than the model's (or in another "
                "order). Wrap a new, "
                "unbuilt optimizer (e.g. keras.optimizers.SGD(0.1)).")
        _exclude_from_weight_decay(inner, quadratic)
        if not inner.built:
            inner.build(var_list)
        # Optimizer.build's bookkeeping, without the moving averages and
        # gradient accumulators it would add for `use_ema` and
        # `gradient_accumulation_steps`: those are the wrapped optimizer's
        # (while it runs, these options read the wrapper's own defaults).
        self.__dict__["_own_options"] = True
        try:
            super().build(var_list)
        finally:
            self.__dict__["_own_options"] = False
        for name, value in self._gamma_values.items():
            self._gamma_variables[name] = self.add_variable(
                shape=(), initializer=keras.initializers.Constant(value),
                dtype="float32", name=name)

    @property
    def variables(self):
        return self._variables + self.inner_optimizer.variables

    def apply(self, grads, trainable_variables=None):
        if not self.built:
            if trainable_variables is None:
                raise ValueError(
                    "ReLinearOptimizer: pass `trainable_variables` on the "
                    "first call, or call `build(variables)` first."
                )
            trainable_variables = list(trainable_variables)
            with keras.name_scope(self.name, caller=self):
                self.build(trainable_variables)
            self.built = True
        # The wrapped optimizer does everything (loss-scale unscaling,
        # gradient accumulation, clipping, weight decay, its update rule,
        # EMA, constraints, the iteration count); the hook installed in
        # __init__ shrinks the steps right after its update rule.
        self.inner_optimizer.apply(grads, trainable_variables)

    @property
    def loss_scale_factor(self):
        inner = self.__dict__.get("inner_optimizer")
        return None if inner is None else inner.loss_scale_factor

    @loss_scale_factor.setter
    def loss_scale_factor(self, value):
        # Keras sets it on the optimizer it holds (LossScaleOptimizer turns
        # it off, MultiOptimizer hands its own down): it is the wrapped
        # optimizer's that counts. (Set to None once by Optimizer.__init__,
        # before there is a wrapped optimizer.)
        inner = self.__dict__.get("inner_optimizer")
        if inner is not None:
            inner.loss_scale_factor = value

    def scale_loss(self, loss):
        # The wrapped optimizer unscales the gradients by its
        # `loss_scale_factor`: the loss must be scaled by it too.
        return self.inner_optimizer.scale_loss(loss)

    def _shrink_update(self, update_rule, grads, variables, learning_rate):
        """Runs the wrapped optimizer's update rule, then shrinks the steps
        of the quadratic variables."""
        shrunk = [(v, gamma) for v in variables
                  if (gamma := self._gamma_of(v)) is not None]
        if (shrunk and keras.backend.backend() == "torch"
                and not _in_stateless_scope()):
            shrunk, old_values = _shrink_update_torch(
                update_rule, grads, variables, learning_rate, shrunk)
        else:
            # Copies, not views: some optimizers update in place (torch).
            old_values = [ops.copy(v.value) for v, _ in shrunk]
            update_rule(grads, variables, learning_rate)
        if shrunk:
            self._shrink_steps(shrunk, old_values)

    def _shrink_steps(self, shrunk, old_values):
        def shrink(variable_value, old, gamma):
            gamma = ops.cast(gamma, variable_value.dtype)
            step = ops.subtract(variable_value, old)
            # gamma 1 (plain training) keeps the update exactly as it is
            return ops.where(ops.equal(gamma, 1), variable_value,
                             ops.add(old, ops.multiply(step, gamma)))

        if keras.backend.backend() != "tensorflow":
            for (variable, gamma), old in zip(shrunk, old_values):
                variable.assign(shrink(variable.value, old, gamma))
            return

        import tensorflow as tf

        # Model variables may be mirrored (tf.distribute): update them the
        # way Keras's own TF optimizer does, per device in a merge call.
        def update(distribution, olds):
            for (variable, gamma), old in zip(shrunk, olds):
                distribution.extended.update(
                    variable.value,
                    lambda var, old, gamma=gamma: var.assign(
                        shrink(var, old, gamma)
                    ),
                    args=(old,),
                    group=False,
                )

        tf.__internal__.distribute.interim.maybe_merge_call(
            update, tf.distribute.get_strategy(), old_values
        )

    def exclude_from_weight_decay(self, var_list=None, var_names=None):
        """Excludes variables from the wrapped optimizer's weight decay
        (the quadratic weights are excluded already); before `build`, as
        Keras's."""
        self.inner_optimizer.exclude_from_weight_decay(var_list, var_names)

    def set_weights(self, weights):
        """Sets `self.variables`, this wrapper's and the wrapped optimizer's
        (its iterations, momentums, ...), from a list of arrays of the
        same length and shapes (e.g. another ReLinearOptimizer's
        `variables`)."""
        if not self.built:
            raise ValueError(
                "ReLinearOptimizer.set_weights: the optimizer is not built "
                "yet; call `optimizer.build(model.trainable_variables)` "
                "first.")
        variables = self.variables
        weights = list(weights)
        if len(weights) != len(variables):
            raise ValueError(
                f"ReLinearOptimizer.set_weights: expected {len(variables)} "
                "arrays (its `variables`: its own and the wrapped "
                f"optimizer's), received {len(weights)}.")
        for variable, weight in zip(variables, weights):
            if tuple(variable.shape) != tuple(np.shape(weight)):
                raise ValueError(
                    f"ReLinearOptimizer.set_weights: {variable.path} has "
                    f"shape {tuple(variable.shape)}, the array given for it "
                    f"{tuple(np.shape(weight))}.")
        for variable, weight in zip(variables, weights):
            variable.assign(weight)

    @property
    def _model_variables_moving_average(self):
        # What keras.callbacks.SwapEMAWeights swaps (it looks one
        # `inner_optimizer` deep: LossScaleOptimizer(ReLinearOptimizer)).
        inner = self.__dict__.get("inner_optimizer")
        if inner is None or not hasattr(
                inner, "_model_variables_moving_average"):
            raise AttributeError("_model_variables_moving_average")
        return inner._model_variables_moving_average

    @property
    def learning_rate(self):
        return self.inner_optimizer.learning_rate

    @learning_rate.setter
    def learning_rate(self, learning_rate):
        self.inner_optimizer.learning_rate = learning_rate

    @property
    def iterations(self):
        return self.inner_optimizer.iterations

    def finalize_variable_values(self, var_list):
        self.inner_optimizer.finalize_variable_values(var_list)

    def get_config(self):
        return {
            "name": self.name,
            "optimizer": keras.optimizers.serialize(self.inner_optimizer),
            "gamma_g": self.gamma_g,
            "gamma_b": self.gamma_b,
        }

    @classmethod
    def from_config(cls, config, custom_objects=None):
        config = dict(config)
        optimizer = keras.optimizers.deserialize(
            config.pop("optimizer"), custom_objects=custom_objects
        )
        return cls(optimizer, **config)


def _delegated(name):
    """A property of ReLinearOptimizer that is the wrapped optimizer's
    `name` (read and set). Optimizer.__init__ sets its defaults before
    there is a wrapped optimizer: those are kept aside, for the wrapper's
    own `build` only."""

    def get(self):
        inner = self.__dict__.get("inner_optimizer")
        if inner is None or self.__dict__.get("_own_options"):
            return self.__dict__.get(f"_wrapper_{name}")
        return getattr(inner, name)

    def set(self, value):
        inner = self.__dict__.get("inner_optimizer")
        if inner is None:
            self.__dict__[f"_wrapper_{name}"] = value
        else:
            setattr(inner, name, value)

    return property(get, set, doc=f"The wrapped optimizer's `{name}`.")


for _name in ("weight_decay", "clipnorm", "clipvalue", "global_clipnorm",
              "use_ema", "ema_momentum", "ema_overwrite_frequency",
              "gradient_accumulation_steps"):
    setattr(ReLinearOptimizer, _name, _delegated(_name))
del _name

# The name of versions before 0.2; saved models use the registered name
# "keras_quadratic>ReLinearOptimizer" either way.
ReLinear = ReLinearOptimizer


@keras.saving.register_keras_serializable(
    package="keras_quadratic", name="PyTorchSGD"
)
class PyTorchSGD(keras.optimizers.SGD):
    """SGD with momentum as `torch.optim.SGD` computes it.

    PyTorch keeps the discounted sum of the gradients and applies the
    current learning rate to all of it; Keras's `SGD` keeps the discounted
    sum of the steps, each gradient at the rate of its own step:

        PyTorch (this class):  b = momentum * b + g;   w = w - lr * b
        keras.optimizers.SGD:  v = momentum * v - lr * g;   w = w + v

    With Nesterov momentum, `w = w - lr * (g + momentum * b)`. At a
    constant learning rate the two take the same steps (v = -lr * b). When
    the rate changes, Keras's steps follow it late: the gradients already
    in its buffer keep the rates they came in at, and their share decays
    as momentum^k, a lag of about 1 / (1 - momentum) steps (10 at 0.9).
    So through a warm-up PyTorch's steps are the larger, through a decay
    the smaller, and after a drop of a step schedule they are smaller for
    about 10 steps. This is the optimizer of the original ReLinear code;
    wrap it in `ReLinearOptimizer` for the quadratic weights' shrunk steps.
    PyTorch's `dampening` (0 here) and `maximize` have no counterpart.

    Args:
        learning_rate: a float, a `keras.optimizers.schedules`
            schedule or a callable, as for `keras.optimizers.SGD`.
            Defaults to 0.01.
        momentum: float in [0, 1]. Defaults to 0.0 (plain SGD).
        nesterov: whether to use Nesterov momentum, as PyTorch's
            `nesterov=True` (which, as there, needs a momentum > 0).
            Defaults to False.
        weight_decay: as for every Keras optimizer, the decoupled decay
            `w = w - lr * weight_decay * w`, which does not pass through
            the momentum. `torch.optim.SGD`'s `weight_decay` is coupled
            (`weight_decay * w` added to the gradient): for that, use
            `keras_quadratic.regularizers.add_weight_decay(model, wd)`
            and leave this at None.
        clipnorm, clipvalue, global_clipnorm: gradient clipping, as for
            `keras.optimizers.SGD`.
        use_ema, ema_momentum, ema_overwrite_frequency: moving averages
            of the weights, as for `keras.optimizers.SGD`.
        loss_scale_factor, gradient_accumulation_steps: as for
            `keras.optimizers.SGD`.
        name: the optimizer's name. Defaults to "pytorch_sgd".
        **kwargs: further arguments of `keras.optimizers.Optimizer`.

    Example:

    >>> import numpy as np
    >>> import keras
    >>> import keras_quadratic as kq
    >>> model = keras.Sequential([keras.Input((4,)), kq.QuadraticDense(8),
    ...                           keras.layers.Dense(1)])
    >>> decayed = kq.regularizers.add_weight_decay(model, 1e-4)  # coupled
    >>> optimizer = kq.optimizers.ReLinearOptimizer(
    ...     kq.optimizers.PyTorchSGD(0.1, momentum=0.9), 1e-2, 1e-2)
    >>> model.compile(optimizer, "mse")
    >>> history = model.fit(np.random.rand(16, 4), np.random.rand(16, 1),
    ...                     verbose=0)
    """

    def __init__(
        self,
        learning_rate=0.01,
        momentum=0.0,
        nesterov=False,
        weight_decay=None,
        clipnorm=None,
        clipvalue=None,
        global_clipnorm=None,
        use_ema=False,
        ema_momentum=0.99,
        ema_overwrite_frequency=None,
        loss_scale_factor=None,
        gradient_accumulation_steps=None,
        name=None,
        **kwargs,
    ):
        if isinstance(momentum, int) and not isinstance(momentum, bool):
            momentum = float(momentum)
        if not isinstance(momentum, float) or not 0.0 <= momentum <= 1.0:
            raise ValueError(
                "PyTorchSGD: argument `momentum` must be a float in [0, 1]. "
                f"Received: momentum={momentum!r}")
        if nesterov and momentum == 0.0:
            raise ValueError(
                "PyTorchSGD: `nesterov=True` needs a `momentum` > 0 (as in "
                "torch.optim.SGD). Received: momentum=0.0")
        super().__init__(
            learning_rate=learning_rate,
            momentum=momentum,
            nesterov=nesterov,
            weight_decay=weight_decay,
            clipnorm=clipnorm,
            clipvalue=clipvalue,
            global_clipnorm=global_clipnorm,
            use_ema=use_ema,
            ema_momentum=ema_momentum,
            ema_overwrite_frequency=ema_overwrite_frequency,
            loss_scale_factor=loss_scale_factor,
            gradient_accumulation_steps=gradient_accumulation_steps,
            name=name or "pytorch_sgd",
            **kwargs,
        )

    def update_step(self, gradient, variable, learning_rate):
        # torch.optim.SGD's arithmetic: for 16-bit variables in float32 (its
        # momentum and rate are Python numbers, never rounded to 16 bits),
        # each stored result rounded once, as its in-place ops round it.
        dtype = variable.dtype
        compute = "float32" if dtype in ("float16", "bfloat16") else dtype

        def stored(x):  # the value as a variable of `dtype` holds it
            return ops.cast(ops.cast(x, dtype), compute)

        learning_rate = ops.cast(learning_rate, compute)
        gradient = stored(gradient)
        direction = gradient
        if self.momentum != 0:
            # (not ops.cast: on TensorFlow that rounds 0.9 to float32 first)
            momentum = ops.convert_to_tensor(self.momentum, compute)
            buffer = self.momentums[self._get_variable_index(variable)]
            # buf.mul_(momentum).add_(grad)
            new_buffer = stored(ops.add(
                stored(ops.multiply(ops.cast(buffer, compute), momentum)),
                gradient))
            self.assign(buffer, ops.cast(new_buffer, dtype))
            direction = (stored(ops.add(gradient,
                                        ops.multiply(new_buffer, momentum)))
                         if self.nesterov else new_buffer)
        # param.add_(direction, alpha=-lr)
        self.assign(variable, ops.cast(ops.subtract(
            ops.cast(variable, compute),
            ops.multiply(direction, learning_rate)), dtype))

    def _backend_update_step(self, grads, trainable_variables, learning_rate):
        # Keras's torch backend swaps keras.optimizers.SGD itself (not its
        # subclasses) for a version of Keras's rule fused over all the
        # variables; this is PyTorch's rule fused likewise (one kernel per
        # operation, not per variable), as torch.optim.SGD's foreach path.
        # The other backends run `update_step` per variable (and compile it).
        if keras.backend.backend() != "torch":
            return super()._backend_update_step(grads, trainable_variables,
                                                learning_rate)
        import torch

        # 16-bit variables take `update_step`, the other backends' rule,
        # with its float32 arithmetic (fused 16-bit ops would round the
        # momentum and the rate to 16 bits first).
        narrow = [(g, v) for g, v in zip(grads, trainable_variables)
                  if v.dtype in ("float16", "bfloat16")]
        for gradient, variable in narrow:
            self.update_step(gradient, variable, learning_rate)
        if narrow:
            kept = [(g, v) for g, v in zip(grads, trainable_variables)
                    if v.dtype not in ("float16", "bfloat16")]
            grads = [g for g, _ in kept]
            trainable_variables = [v for _, v in kept]
            if not kept:
                return
        with torch.no_grad():
            variables = [v.value for v in trainable_variables]
            grads = [g if g.dtype == v.dtype else g.to(v.dtype)
                     for g, v in zip(grads, variables)]
            directions = grads
            if self.momentum != 0:
                buffers = [
                    self.momentums[self._get_variable_index(v)].value
                    for v in trainable_variables]
                torch._foreach_mul_(buffers, self.momentum)
                torch._foreach_add_(buffers, grads)
                directions = (torch._foreach_add(grads, buffers,
                                                 alpha=self.momentum)
                              if self.nesterov else buffers)
            # The rate stays a device tensor (no host sync), cast once per
            # dtype (one fused kernel per group, and float64 kept exact);
            # the product is one temporary the size of the parameters.
            if not isinstance(learning_rate, (int, float)):
                learning_rate = ops.convert_to_tensor(learning_rate)
            groups = {}
            for variable, direction in zip(variables, directions):
                group = groups.setdefault(variable.dtype, ([], []))
                group[0].append(variable)
                group[1].append(direction)
            for dtype, (group, group_directions) in groups.items():
                rate = (learning_rate.to(dtype)
                        if isinstance(learning_rate, torch.Tensor)
                        else learning_rate)
                torch._foreach_sub_(group, torch._foreach_mul(
                    group_directions, rate))
