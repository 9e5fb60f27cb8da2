"""Quadratic dense layers (the neuron on the last axis of the input)."""

import keras

from keras_quadratic.layers.base import QuadraticLayer
from keras_quadratic.layers.base import _positive_int


class BaseQuadraticDense(QuadraticLayer):
    """Quadratic dense layer; arguments as `keras.layers.Dense` plus the
    quadratic ones (see `QuadraticConv2D`)."""

    def __init__(self, units, activation=None, use_bias=True, **kwargs):
        super().__init__(activation=activation, use_bias=use_bias, **kwargs)
        # As keras.layers.Dense: a mask (e.g. from Embedding(mask_zero=True))
        # passes through unchanged.
        self.supports_masking = True
        self.units = _positive_int(units, "units", type(self).__name__)
        self.input_spec = keras.layers.InputSpec(min_ndim=2)

    def build(self, input_shape):
        features = input_shape[-1]
        if features is None:
            raise ValueError(
                f"{type(self).__name__} '{self.name}': the last dimension of "
                f"the input must be known. Received input_shape={input_shape}"
            )
        self.input_spec = keras.layers.InputSpec(min_ndim=2,
                                                 axes={-1: features})
        self._build_neuron((features, self.units), self.units)

    def _linear(self, inputs, kernel):
        return keras.ops.matmul(inputs, kernel)

    def _add_bias(self, outputs, bias):
        return keras.ops.add(outputs, bias)

    def _split_outputs(self, outputs):
        return keras.ops.split(outputs, 2, axis=-1)

    def _concat_inputs(self, first, second):
        return keras.ops.concatenate([first, second], axis=-1)

    def compute_output_shape(self, input_shape):
        return tuple(input_shape)[:-1] + (self.units,)

    def get_config(self):
        config = super().get_config()
        config["units"] = self.units
        return config


@keras.saving.register_keras_serializable(package="keras_quadratic")
class QuadraticDense(BaseQuadraticDense):
    """Quadratic dense layer, a drop-in for `keras.layers.Dense`.

    y = act((x @ kernel + bias) * (x @ gate_kernel + gate_bias)
            + (x*x) @ square_kernel + square_bias)
    """


@keras.saving.register_keras_serializable(package="keras_quadratic")
class CompactQuadraticDense(BaseQuadraticDense):
    """Compact quadratic dense layer, a drop-in for `keras.layers.Dense`.

    y = act(x @ kernel + (x*x) @ square_kernel + bias)
    """

    compact = True
