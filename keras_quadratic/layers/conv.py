"""Quadratic convolutions: one rank-generic base, thin 1D/2D/3D subclasses.

As a convolution, the full neuron is

    conv(x, kernel) + bias) * (conv(x, gate_kernel) + gate_bias)
        + conv(x*x, square_kernel) + square_bias

and the compact one conv(x, kernel) + conv(x*x, square_kernel) + bias.
"""

import keras

from keras_quadratic.layers.base import QuadraticLayer
from keras_quadratic.layers.base import _positive_int

_PADDINGS = ("valid", "same")
_DATA_FORMATS = ("channels_last", "channels_first")


def _int_tuple(value, rank, name, layer):
    values = (value,) * rank if isinstance(value, int) else value
    try:
        values = tuple(values)
    except TypeError:
        values = None
    if (
        values is None
        or len(values) != rank
        or not all(isinstance(v, int) and not isinstance(v, bool) and v > 0
                   for v in values)
    ):
        raise ValueError(
            f"{layer}: argument `{name}` must be a positive integer or a "
            f"tuple of {rank} positive integers. Received: {name}={value!r}"
        )
    return values


class BaseQuadraticConv(QuadraticLayer):
    """Rank-generic quadratic convolution (see `QuadraticConv2D`).

    Args:
        rank: number of spatial dimensions.
        filters, kernel_size, strides, padding, data_format, dilation_rate,
        activation, use_bias, kernel_*/bias_* initializers, regularizers and
        constraints, activity_regularizer: as in `keras.layers.Conv2D`; they
            define the linear part `kernel`, `bias`.
        gate_*/square_* initializers, regularizers and constraints: the same
            for the quadratic weights; the initializers default to ReLinear's.
        relinear_regularizer: a `keras_quadratic.regularizers.ReLinearRegularizer`.
    """

    def __init__(
        self,
        rank,
        filters,
        kernel_size,
        strides=1,
        padding="valid",
        data_format=None,
        dilation_rate=1,
        **kwargs,
    ):
        super().__init__(**kwargs)
        layer = type(self).__name__
        self.rank = rank
        self.filters = _positive_int(filters, "filters", layer)
        self.kernel_size = _int_tuple(kernel_size, rank, "kernel_size", layer)
        self.strides = _int_tuple(strides, rank, "strides", layer)
        self.dilation_rate = _int_tuple(
            dilation_rate, rank, "dilation_rate", layer
        )
        if max(self.strides) > 1 and max(self.dilation_rate) > 1:
            raise ValueError(
                f"{layer}: `strides` > 1 cannot be combined with "
                f"`dilation_rate` > 1. Received: strides={self.strides}, "
                f"dilation_rate={self.dilation_rate}"
            )
        paddings = _PADDINGS + (("causal",) if rank == 1 else ())
        padding = padding.lower() if isinstance(padding, str) else padding
        if padding not in paddings:
            raise ValueError(
                f"{layer}: argument `padding` must be one of {paddings}. "
                f"Received: padding={padding!r}"
            )
        self.padding = padding
        if data_format is None:
            data_format = keras.config.image_data_format()
        data_format = (
            data_format.lower() if isinstance(data_format, str) else data_format
        )
        if data_format not in _DATA_FORMATS:
            raise ValueError(
                f"{layer}: argument `data_format` must be one of "
                f"{_DATA_FORMATS} or None. Received: data_format={data_format!r}"
            )
        self.data_format = data_format
        self._channel_axis = -1 if data_format == "channels_last" else 1
        self.input_spec = keras.layers.InputSpec(ndim=rank + 2)

    def build(self, input_shape):
        channels = input_shape[self._channel_axis]
        if channels is None:
            raise ValueError(
                f"{type(self).__name__} '{self.name}': the channel dimension "
                f"(axis {self._channel_axis}) of the input must be known. "
                f"Received input_shape={input_shape}"
            )
        self.input_spec = keras.layers.InputSpec(
            ndim=self.rank + 2, axes={self._channel_axis: channels}
        )
        self.compute_output_shape(input_shape)
        self._build_neuron(self.kernel_size + (channels, self.filters),
                           self.filters)

    def _linear(self, inputs, kernel):
        padding = self.padding
        if padding == "causal":
            left = self.dilation_rate[0] * (self.kernel_size[0] - 1)
            pad = [[0, 0], [left, 0], [0, 0]]
            if self.data_format == "channels_first":
                pad = [[0, 0], [0, 0], [left, 0]]
            inputs = keras.ops.pad(inputs, pad)
            padding = "valid"
        return keras.ops.conv(
            inputs,
            kernel,
            strides=self.strides,
            padding=padding,
            data_format=self.data_format,
            dilation_rate=self.dilation_rate,
        )

    def _add_bias(self, outputs, bias):
        if self.data_format == "channels_last":
            return keras.ops.add(outputs, bias)
        # Plain broadcasting: on TensorFlow, `ops.add` turns a vector-like
        # operand into `bias_add` and guesses NHWC when the last spatial
        # size equals the number of filters (keras 3.15), adding the bias
        # on the wrong axis.
        return outputs + keras.ops.reshape(bias, (-1,) + (1,) * self.rank)

    def _split_outputs(self, outputs):
        return keras.ops.split(outputs, 2, axis=self._channel_axis)

    def _concat_inputs(self, first, second):
        return keras.ops.concatenate([first, second], axis=self._channel_axis)

    def compute_output_shape(self, input_shape):
        input_shape = tuple(input_shape)
        if self.data_format == "channels_last":
            spatial = input_shape[1:-1]
        else:
            spatial = input_shape[2:]
        out = []
        for size, k, s, d in zip(spatial, self.kernel_size, self.strides,
                                 self.dilation_rate):
            if size is None:
                out.append(None)
                continue
            if self.padding == "valid":
                size = size - d * (k - 1)
                if size <= 0:
                    raise ValueError(
                        f"{type(self).__name__} '{self.name}': the input "
                        f"shape {input_shape} is too small for kernel_size="
                        f"{self.kernel_size}, dilation_rate="
                        f"{self.dilation_rate} with padding='valid'."
                    )
            out.append((size - 1) // s + 1)
        if self.data_format == "channels_last":
            return (input_shape[0], *out, self.filters)
        return (input_shape[0], self.filters, *out)

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "filters": self.filters,
                "kernel_size": self.kernel_size,
                "strides": self.strides,
                "padding": self.padding,
                "data_format": self.data_format,
                "dilation_rate": self.dilation_rate,
            }
        )
        return config


def _register(cls):
    return keras.saving.register_keras_serializable(package="keras_quadratic")(
        cls
    )


@_register
class QuadraticConv1D(BaseQuadraticConv):
    """Quadratic 1D convolution, a drop-in for `keras.layers.Conv1D`.

    y = act((conv(x, kernel) + bias) * (conv(x, gate_kernel) + gate_bias)
            + conv(x*x, square_kernel) + square_bias)
    """

    def __init__(self, filters, kernel_size, *args, **kwargs):
        super().__init__(1, filters, kernel_size, *args, **kwargs)


@_register
class QuadraticConv2D(BaseQuadraticConv):
    """Quadratic 2D convolution, a drop-in for `keras.layers.Conv2D`.

    y = act((conv(x, kernel) + bias) * (conv(x, gate_kernel) + gate_bias)
            + conv(x*x, square_kernel) + square_bias)

    Arguments are those of `keras.layers.Conv2D` (without `groups`) plus,
    for `gate_kernel`, `gate_bias`, `square_kernel` and `square_bias`, an
    initializer, a regularizer and a constraint each (the initializers
    default to ReLinear: 0, 1, 0, 0), and `relinear_regularizer`.

    Example:

        model.add(QuadraticConv2D(32, 3, padding="same", activation="relu"))
    """

    def __init__(self, filters, kernel_size, *args, **kwargs):
        super().__init__(2, filters, kernel_size, *args, **kwargs)


@_register
class QuadraticConv3D(BaseQuadraticConv):
    """Quadratic 3D convolution, a drop-in for `keras.layers.Conv3D`."""

    def __init__(self, filters, kernel_size, *args, **kwargs):
        super().__init__(3, filters, kernel_size, *args, **kwargs)


@_register
class CompactQuadraticConv1D(BaseQuadraticConv):
    """Compact quadratic 1D convolution, a drop-in for `keras.layers.Conv1D`.

    y = act(conv(x, kernel) + conv(x*x, square_kernel) + bias)
    """

    compact = True

    def __init__(self, filters, kernel_size, *args, **kwargs):
        super().__init__(1, filters, kernel_size, *args, **kwargs)


@_register
class CompactQuadraticConv2D(BaseQuadraticConv):
    """Compact quadratic 2D convolution, a drop-in for `keras.layers.Conv2D`.

    y = act(conv(x, kernel) + conv(x*x, square_kernel) + bias)

    Computed as one convolution of [x, x*x] (channels concatenated).
    """

    compact = True

    def __init__(self, filters, kernel_size, *args, **kwargs):
        super().__init__(2, filters, kernel_size, *args, **kwargs)


@_register
class CompactQuadraticConv3D(BaseQuadraticConv):
    """Compact quadratic 3D convolution, a drop-in for `keras.layers.Conv3D`."""

    compact = True

    def __init__(self, filters, kernel_size, *args, **kwargs):
        super().__init__(3, filters, kernel_size, *args, **kwargs)
