"""Quadratic dense layers (the neuron on the last axis of the input)."""

import keras

from keras_quadratic.layers.base import QuadraticLayer
from keras_quadratic.layers.base import _explicit_arguments
from keras_quadratic.layers.base import _positive_int


class BaseQuadraticDense(QuadraticLayer):
    """The quadratic neuron on the last axis of the input; the public
    `QuadraticDense` and `CompactQuadraticDense` document the arguments."""

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
    """Quadratic densely-connected layer, a drop-in for `keras.layers.Dense`.

    For an input `x` (its last axis), the outputs are

        out = activation((x @ kernel + bias) * (x @ gate_kernel + gate_bias)
                         + (x * x) @ square_kernel + square_bias)

    `kernel` and `bias` are exactly those of `keras.layers.Dense`. The
    default initializers are ReLinear's (`gate_kernel` 0, `gate_bias` 1,
    `square_kernel` 0, `square_bias` 0): a new layer computes what
    `keras.layers.Dense` with the same `kernel` and `bias` computes. Like
    Dense, it passes an input mask on unchanged.

    Args:
        units: int, the number of outputs.
        activation: the activation of the output (a name or a callable);
            none by default.
        use_bias: whether the layer has `bias` and `square_bias`.
        kernel_initializer: initializer of `kernel`, default
            "glorot_uniform" (as Dense).
        bias_initializer: initializer of `bias`, default "zeros".
        kernel_regularizer: regularizer of `kernel`, default none.
        bias_regularizer: regularizer of `bias`, default none.
        activity_regularizer: regularizer of the output, default none.
        kernel_constraint: constraint of `kernel`, default none.
        bias_constraint: constraint of `bias`, default none.
        gate_kernel_initializer: initializer of `gate_kernel`, default
            "zeros" (ReLinear).
        gate_bias_initializer: initializer of `gate_bias`, default "ones"
            (ReLinear); the gate has its bias also with `use_bias=False`.
        gate_kernel_regularizer: regularizer of `gate_kernel`.
        gate_bias_regularizer: regularizer of `gate_bias`.
        gate_kernel_constraint: constraint of `gate_kernel`.
        gate_bias_constraint: constraint of `gate_bias`.
        square_kernel_initializer: initializer of `square_kernel`, default
            "zeros" (ReLinear).
        square_bias_initializer: initializer of `square_bias`, default
            "zeros" (ReLinear).
        square_kernel_regularizer: regularizer of `square_kernel`.
        square_bias_regularizer: regularizer of `square_bias`.
        square_kernel_constraint: constraint of `square_kernel`.
        square_bias_constraint: constraint of `square_bias`.
        relinear_regularizer: a
            `keras_quadratic.regularizers.ReLinearRegularizer` that pulls the
            quadratic weights toward the conventional neuron; default none.
        **kwargs: base layer arguments: `name`, `dtype`, `trainable`.

    Input shape:
        N-D tensor `(batch_size, ..., input_dim)`, N >= 2.

    Output shape:
        N-D tensor `(batch_size, ..., units)`.

    Example:

    >>> import numpy as np
    >>> import keras
    >>> import keras_quadratic as kq
    >>> x = np.random.rand(4, 16).astype("float32")
    >>> tuple(kq.QuadraticDense(8, activation="relu")(x).shape)
    (4, 8)
    >>> model = keras.Sequential([keras.Input((16,)), kq.QuadraticDense(8),
    ...                           keras.layers.Dense(1)])
    >>> model.output_shape
    (None, 1)
    """

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
        gate_kernel_initializer="zeros",
        gate_bias_initializer="ones",
        gate_kernel_regularizer=None,
        gate_bias_regularizer=None,
        gate_kernel_constraint=None,
        gate_bias_constraint=None,
        square_kernel_initializer="zeros",
        square_bias_initializer="zeros",
        square_kernel_regularizer=None,
        square_bias_regularizer=None,
        square_kernel_constraint=None,
        square_bias_constraint=None,
        relinear_regularizer=None,
        **kwargs,
    ):
        super().__init__(**_explicit_arguments(locals()))


@keras.saving.register_keras_serializable(package="keras_quadratic")
class CompactQuadraticDense(BaseQuadraticDense):
    """Compact quadratic densely-connected layer, a drop-in for
    `keras.layers.Dense`.

    For an input `x` (its last axis), the outputs are

        out = activation(x @ kernel + (x * x) @ square_kernel + bias)

    `kernel` and `bias` are exactly those of `keras.layers.Dense`; the
    default `square_kernel` is 0 (ReLinear), so a new layer computes what
    `keras.layers.Dense` with the same `kernel` and `bias` computes. Like
    Dense, it passes an input mask on unchanged.

    Args:
        units: int, the number of outputs.
        activation: the activation of the output (a name or a callable);
            none by default.
        use_bias: whether the layer has `bias` (the neuron's one bias).
        kernel_initializer: initializer of `kernel`, default
            "glorot_uniform" (as Dense).
        bias_initializer: initializer of `bias`, default "zeros".
        kernel_regularizer: regularizer of `kernel`, default none.
        bias_regularizer: regularizer of `bias`, default none.
        activity_regularizer: regularizer of the output, default none.
        kernel_constraint: constraint of `kernel`, default none.
        bias_constraint: constraint of `bias`, default none.
        square_kernel_initializer: initializer of `square_kernel`, default
            "zeros" (ReLinear).
        square_kernel_regularizer: regularizer of `square_kernel`.
        square_kernel_constraint: constraint of `square_kernel`.
        relinear_regularizer: a
            `keras_quadratic.regularizers.ReLinearRegularizer` that pulls
            `square_kernel` toward 0; default none.
        **kwargs: base layer arguments: `name`, `dtype`, `trainable`.

    Input shape:
        N-D tensor `(batch_size, ..., input_dim)`, N >= 2.

    Output shape:
        N-D tensor `(batch_size, ..., units)`.

    Example:

    >>> import numpy as np
    >>> import keras_quadratic as kq
    >>> x = np.random.rand(4, 16).astype("float32")
    >>> tuple(kq.CompactQuadraticDense(8)(x).shape)
    (4, 8)
    """

    compact = True

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
        square_kernel_initializer="zeros",
        square_kernel_regularizer=None,
        square_kernel_constraint=None,
        relinear_regularizer=None,
        **kwargs,
    ):
        super().__init__(**_explicit_arguments(locals()))
