"""Quadratic dense layers (the neuron on the last axis of the input)."""

import keras
from keras import activations
from keras import constraints
from keras import initializers
from keras import regularizers

from keras_quadratic.layers.base import QuadraticLayer
from keras_quadratic.layers.base import _positive_int


class BaseQuadraticDense(QuadraticLayer):
    """Quadratic dense layer; arguments as `keras.layers.Dense` plus the
    quadratic ones (see `QuadraticConv2D`)."""

    def __init__(
        self,
        units,
        activation=None,
        use_bias=True,
        kernel_initializer="glorot_uniform",
        bias_initializer="zeros",
        kernel_regularizer=None,
        bias_regularizer=None,
        activity_regularizer=None,
        kernel_constraint=None,
        bias_constraint=None,
        **kwargs,
    ):
        super().__init__(activity_regularizer=activity_regularizer, **kwargs)
        self.units = _positive_int(units, "units", type(self).__name__)
        self.activation = activations.get(activation)
        self.use_bias = bool(use_bias)
        self.kernel_initializer = initializers.get(kernel_initializer)
        self.bias_initializer = initializers.get(bias_initializer)
        self.kernel_regularizer = regularizers.get(kernel_regularizer)
        self.bias_regularizer = regularizers.get(bias_regularizer)
        self.kernel_constraint = constraints.get(kernel_constraint)
        self.bias_constraint = constraints.get(bias_constraint)
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
        config.update(
            {
                "units": self.units,
                "activation": activations.serialize(self.activation),
                "use_bias": self.use_bias,
                "kernel_initializer": initializers.serialize(
                    self.kernel_initializer),
                "bias_initializer": initializers.serialize(
                    self.bias_initializer),
                "kernel_regularizer": regularizers.serialize(
                    self.kernel_regularizer),
                "bias_regularizer": regularizers.serialize(
                    self.bias_regularizer),
                "activity_regularizer": regularizers.serialize(
                    self.activity_regularizer),
                "kernel_constraint": constraints.serialize(
                    self.kernel_constraint),
                "bias_constraint": constraints.serialize(self.bias_constraint),
            }
        )
        config.update(self._quadratic_config())
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
