"""ReLinear step shrinking: an optimizer wrapper for any Keras optimizer.

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

import keras
from keras import ops

from keras_quadratic.layers.base import GATE
from keras_quadratic.layers.base import SQUARE
from keras_quadratic.layers.base import quadratic_group


def _gamma(value, name):
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(
            f"ReLinear optimizer: argument `{name}` must be a number in "
            f"[0, inf). Received: {name}={value!r}"
        )
    if not math.isfinite(value) or value < 0:
        raise ValueError(
            f"ReLinear optimizer: argument `{name}` must be a finite, "
            f"non-negative number. Received: {name}={value!r}"
        )
    return float(value)


@keras.saving.register_keras_serializable(
    package="keras_quadratic", name="ReLinearOptimizer"
)
class ReLinear(keras.optimizers.Optimizer):
    """Wraps `optimizer` so that the quadratic weights take shrunk steps.

    Args:
        optimizer: any `keras.optimizers.Optimizer` instance (SGD, Adam,
            AdamW, ...). Its learning rate (or schedule), weight decay,
            clipping and state drive the update.
        gamma_g: factor on the steps of `gate_kernel` and `gate_bias`.
        gamma_b: factor on the steps of `square_kernel` and `square_bias`.
            The defaults, 1e-2, are the ratio of the quadratic rate to the
            main rate in the paper's ReZero script (1e-3 / 0.1). 0 freezes
            the quadratic weights (a conventional network); 1 is plain
            training.

    Weight decay: the wrapped optimizer's `weight_decay` is not applied to
    the quadratic weights, since decaying `gate_bias` toward 0 would move
    the neuron away from the conventional one; shrink them with the
    `keras_quadratic.regularizers.ReLinear` regularizer instead.

    `learning_rate` and `iterations` are those of the wrapped optimizer, so
    schedules and callbacks such as `ReduceLROnPlateau` act on it.
    """

    def __init__(self, optimizer, gamma_g=1e-2, gamma_b=1e-2, name=None,
                 **kwargs):
        if isinstance(optimizer, dict):
            optimizer = keras.optimizers.deserialize(optimizer)
        if not isinstance(optimizer, keras.optimizers.Optimizer):
            raise TypeError(
                "ReLinear optimizer: argument `optimizer` must be a "
                "keras.optimizers.Optimizer instance (e.g. "
                f"keras.optimizers.SGD(0.1)). Received: {optimizer!r}"
            )
        if isinstance(optimizer, keras.optimizers.LossScaleOptimizer):
            raise TypeError(
                "ReLinear optimizer: wrap the plain optimizer and let "
                "`model.compile(auto_scale_loss=True)` add loss scaling "
                "around ReLinear."
            )
        if kwargs:
            raise TypeError(
                "ReLinear optimizer: unexpected arguments "
                f"{sorted(kwargs)}; set them on the wrapped optimizer."
            )
        super().__init__(learning_rate=0.0, name=name)
        self.inner_optimizer = optimizer
        self.gamma_g = _gamma(gamma_g, "gamma_g")
        self.gamma_b = _gamma(gamma_b, "gamma_b")

    def _gamma_of(self, variable):
        group = quadratic_group(variable)
        if group == GATE:
            return self.gamma_g
        if group == SQUARE:
            return self.gamma_b
        return None

    def build(self, var_list):
        inner = self.inner_optimizer
        if not inner.built:
            # Keep the wrapped optimizer's own exclusions and add ours.
            excluded = set(getattr(inner, "_exclude_from_weight_decay", ()))
            excluded.update(
                inner._var_key(v) for v in var_list
                if self._gamma_of(v) is not None
            )
            inner._exclude_from_weight_decay = excluded
            inner._exclude_from_weight_decay_cache = {}
            inner.build(var_list)
        super().build(var_list)

    @property
    def variables(self):
        return self._variables + self.inner_optimizer.variables

    def apply(self, grads, trainable_variables=None):
        if not self.built:
            if trainable_variables is None:
                raise ValueError(
                    "ReLinear optimizer: pass `trainable_variables` on the "
                    "first call, or call `build(variables)` first."
                )
            trainable_variables = list(trainable_variables)
            with keras.name_scope(self.name, caller=self):
                self.build(trainable_variables)
            self.built = True
        variables = (
            self._trainable_variables
            if trainable_variables is None
            else list(trainable_variables)
        )
        shrunk = [
            (v, gamma)
            for v in variables
            if (gamma := self._gamma_of(v)) is not None and gamma != 1.0
        ]
        # Copies, not views: some optimizers update in place (torch).
        old_values = [ops.copy(v.value) for v, _ in shrunk]
        self.inner_optimizer.apply(grads, trainable_variables)
        if shrunk:
            self._shrink_steps(shrunk, old_values)

    def _shrink_steps(self, shrunk, old_values):
        def shrink(variable_value, old, gamma):
            if gamma == 0.0:
                return old
            step = ops.subtract(variable_value, old)
            return ops.add(old, ops.multiply(step, gamma))

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
