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


def _coefficient(value, name):
    try:
        value = float(value)
    except (TypeError, ValueError):
        raise TypeError(
            f"ReLinear: argument `{name}` must be a non-negative number. "
            f"Received: {name}={value!r}"
        ) from None
    if not math.isfinite(value) or value < 0:
        raise ValueError(
            f"ReLinear: argument `{name}` must be a non-negative finite "
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
class ReLinear:
    """ReLinear regularizer for quadratic layers (`relinear_regularizer=`).

    Args:
        gate_l1, gate_l2: L1 and L2 coefficients of the gate group
            (`gate_kernel` toward 0, `gate_bias` toward 1); the paper's
            alpha_g and beta_g.
        square_l1, square_l2: the same for the square group (`square_kernel`,
            `square_bias` toward 0); alpha_b and beta_b.
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
        return f"ReLinear({args})"
