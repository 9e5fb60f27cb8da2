"""ReLinear weight shrinking: a penalty on the distance of the quadratic
terms from the conventional neuron.

For the gate group (w_g toward 0, b_g toward 1) and the square group (w_b and
c toward 0), with reference point r (1 for `gate_bias`, 0 otherwise):

    penalty = l1 * sum(|w - r|) + l2 * sum((w - r)^2)

summed over the group's weights. It is exactly zero at the ReLinear
initialization.
"""

import math

import keras

from keras_quadratic.groups import quadratic_group


class _SumRegularizer(keras.regularizers.Regularizer):
    """The sum of two penalties on one weight (not serialized on its own)."""

    def __init__(self, first, second):
        self.first = first
        self.second = second

    def __call__(self, x):
        return self.first(x) + self.second(x)


def _coefficient(value, name, owner="ReLinearRegularizer"):
    try:
        value = float(value)
    except (TypeError, ValueError):
        raise TypeError(
            f"{owner}: argument `{name}` must be a non-negative number. "
            f"Received: {name}={value!r}"
        ) from None
    if not math.isfinite(value) or value < 0:
        raise ValueError(
            f"{owner}: argument `{name}` must be a non-negative finite "
            f"number. Received: {name}={value!r}"
        )
    return value


class _DistancePenalty(keras.regularizers.Regularizer):
    """l1 * sum|x - reference| + l2 * sum((x - reference)^2) on one weight."""

    def __init__(self, l1, l2, reference):
        self.l1 = l1
        self.l2 = l2
        self.reference = reference

    def __call__(self, x):
        ops = keras.ops
        distance = x if self.reference == 0 else ops.subtract(x, self.reference)
        penalty = 0.0
        if self.l1:
            penalty = penalty + self.l1 * ops.sum(ops.abs(distance))
        if self.l2:
            penalty = penalty + self.l2 * ops.sum(ops.square(distance))
        return penalty


@keras.saving.register_keras_serializable(
    package="keras_quadratic", name="ReLinearRegularizer"
)
class ReLinearRegularizer:
    """ReLinear's penalty on the quadratic weights (`relinear_regularizer=`).

    Pulls each quadratic weight toward its value in a conventional neuron
    (`gate_bias` toward 1, the others toward 0). With r that reference:

        penalty = gate_l1 * sum|w_g - r| + gate_l2 * sum (w_g - r)^2
                  + square_l1 * sum|w_b| + square_l2 * sum w_b^2

    summed over `gate_kernel`, `gate_bias` (w_g) and `square_kernel`,
    `square_bias` (w_b) of each layer that has it. It is 0 at the ReLinear
    initialization. Pass it to a quadratic layer (or to
    `kq.models.QResNet`); it adds to the layer's own weight regularizers.

    Args:
        gate_l1: L1 coefficient of the gate group (the paper's alpha_g).
        gate_l2: L2 coefficient of the gate group (beta_g).
        square_l1: L1 coefficient of the square group (alpha_b).
        square_l2: L2 coefficient of the square group (beta_b).

    Example:

    >>> import numpy as np
    >>> import keras_quadratic as kq
    >>> layer = kq.QuadraticDense(
    ...     2, relinear_regularizer=kq.regularizers.ReLinearRegularizer(
    ...         gate_l2=0.5))
    >>> y = layer(np.ones((1, 3), "float32"))
    >>> float(sum(layer.losses))  # 0 at the ReLinear initialization
    0.0
    >>> _ = layer.gate_bias.assign(np.array([2.0, 1.0], "float32"))
    >>> float(sum(layer.losses))  # 0.5 * (2 - 1)^2
    0.5
    """

    def __init__(self, gate_l1=0.0, gate_l2=0.0, square_l1=0.0, square_l2=0.0):
        self.gate_l1 = _coefficient(gate_l1, "gate_l1")
        self.gate_l2 = _coefficient(gate_l2, "gate_l2")
        self.square_l1 = _coefficient(square_l1, "square_l1")
        self.square_l2 = _coefficient(square_l2, "square_l2")

    def penalty(self, group, reference):
        """The per-weight regularizer for a weight of `group` ("gate" or
        "square") whose conventional value is `reference`; None if both
        coefficients of the group are zero."""
        l1 = getattr(self, f"{group}_l1")
        l2 = getattr(self, f"{group}_l2")
        if not (l1 or l2):
            return None
        return _DistancePenalty(l1, l2, reference)

    def get_config(self):
        return {
            "gate_l1": self.gate_l1,
            "gate_l2": self.gate_l2,
            "square_l1": self.square_l1,
            "square_l2": self.square_l2,
        }

    @classmethod
    def from_config(cls, config):
        return cls(**config)

    def __repr__(self):
        args = ", ".join(f"{k}={v}" for k, v in self.get_config().items())
        return f"ReLinearRegularizer({args})"


# The name of versions before 0.2; saved models use the registered name
# "keras_quadratic>ReLinearRegularizer" either way.
ReLinear = ReLinearRegularizer


_DECAY_STATE = "_keras_quadratic_weight_decay"


def add_weight_decay(model, weight_decay):
    """Adds PyTorch-style (coupled) weight decay to a built model's
    conventional weights.

    `torch.optim.SGD(weight_decay=wd)` adds `wd * w` to each gradient, which
    then goes through momentum; that is the gradient of the L2 penalty

        (wd / 2) * sum(w^2)

    added to the loss. This function sets that penalty as the regularizer of
    every trainable weight of `model` except the quadratic ones: kernels,
    biases, batch-normalization scales and offsets, all that the original
    ReLinear code decayed. The quadratic weights are left to the ReLinear
    regularizer, which pulls them toward the conventional neuron
    (`gate_bias` toward 1, where decay would pull it toward 0). A weight
    that already has a regularizer keeps it, with the decay added. Calling
    it again replaces the decay (0 removes it); it never stacks. The decay
    is set on the weights themselves: a layer shared with another model is
    decayed there too, and weights that are frozen (not trainable) at the
    call get none: call it again after unfreezing them.

    Keras's own `weight_decay=` optimizer argument is decoupled
    (`w -= lr * wd * w`, outside momentum): at momentum 0.9 the coupled
    decay of the same value is about 10x stronger. The penalty is part of
    `model.losses`, not of the saved config: call this again on a loaded
    model to train it further with the decay. On a model already compiled
    and trained, it takes effect at the next `fit` on every backend (the
    model's compiled steps are traced again): pass the compiled model
    itself, not one of its layers, whose parent's steps it cannot reach.

    Args:
        model: a built `keras.Model` (or layer).
        weight_decay: the decay coefficient `wd`, a non-negative number.

    Returns:
        The number of weights that got the decay.

    Example:

    >>> import keras, keras_quadratic as kq
    >>> model = kq.models.QResNet(depth=8)
    >>> decayed = kq.regularizers.add_weight_decay(model, 1e-4)
    >>> len(model.losses) == decayed
    True
    """
    weight_decay = _coefficient(weight_decay, "weight_decay",
                                "add_weight_decay")
    if not getattr(model, "built", False) or not model.weights:
        raise ValueError(
            "add_weight_decay: argument `model` must be a built Keras model "
            f"with weights. Received: model={model!r}")
    penalty = keras.regularizers.L2(weight_decay / 2) if weight_decay else None
    count = 0
    for variable in model.trainable_weights:
        if quadratic_group(variable) is not None:
            continue
        # A second call replaces the decay of the first (never stacks): the
        # variable remembers its own regularizer and the one installed here;
        # one set by the user since then counts as their own.
        own, installed = getattr(variable, _DECAY_STATE, (None, None))
        if installed is None or variable.regularizer is not installed:
            own = variable.regularizer
        if penalty is None:
            variable.regularizer = own
            setattr(variable, _DECAY_STATE, (own, None))
            continue
        variable.regularizer = penalty if own is None else (
            _SumRegularizer(own, penalty))
        setattr(variable, _DECAY_STATE, (own, variable.regularizer))
        count += 1
    # A compiled model's steps (jax.jit, tf.function) read the penalties
    # when they are traced: drop them, so that the next fit, evaluate or
    # predict traces them anew with the decay as it is now.
    for name in ("train_function", "test_function", "predict_function"):
        if getattr(model, name, None) is not None:
            setattr(model, name, None)
    return count
