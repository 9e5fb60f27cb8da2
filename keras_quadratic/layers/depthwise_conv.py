"""Quadratic depthwise convolutions: each input channel convolved with its
own kernels, as `keras.layers.DepthwiseConv1D/2D`.

With `dw` the depthwise convolution, the full neuron is

    (dw(x, kernel) + bias) * (dw(x, gate_kernel) + gate_bias)
        + dw(x*x, square_kernel) + square_bias

and the compact one dw(x, kernel) + dw(x*x, square_kernel) + bias. The
quadratic terms cost two more depthwise kernels, `kernel_size * channels *
depth_multiplier` weights each: the cheap place for them in a network of
depthwise-separable blocks, whose weights sit in the pointwise
convolutions.
"""

import keras

from keras_quadratic.layers.base import _explicit_arguments
from keras_quadratic.layers.base import _positive_int
from keras_quadratic.layers.conv import QuadraticConvolution
from keras_quadratic.layers.conv import _register
from keras_quadratic.layers.conv import convolve
from keras_quadratic.layers.conv import documenter

# Keras's depthwise layers call their kernel's arguments depthwise_*; the
# quadratic ones take those names, and no kernel_* besides.
_KERNEL_ARGUMENTS = ("initializer", "regularizer", "constraint")


class BaseQuadraticDepthwiseConv(QuadraticConvolution):
    """Rank-generic quadratic depthwise convolution; the public
    `QuadraticDepthwiseConv1D/2D` and the compact ones fix `rank` and
    document the arguments."""

    fuse_kernels = False

    def __init__(
        self,
        rank,
        kernel_size,
        strides=1,
        padding="valid",
        depth_multiplier=1,
        data_format=None,
        dilation_rate=1,
        depthwise_initializer="glorot_uniform",
        depthwise_regularizer=None,
        depthwise_constraint=None,
        **kwargs,
    ):
        layer = type(self).__name__
        given = sorted(f"kernel_{kind}" for kind in _KERNEL_ARGUMENTS
                       if f"kernel_{kind}" in kwargs)
        if given:
            raise TypeError(
                f"{layer}: unexpected arguments {given}; the depthwise "
                "kernel's are `depthwise_initializer`, "
                "`depthwise_regularizer` and `depthwise_constraint`, as in "
                "keras.layers.DepthwiseConv2D.")
        depth_multiplier = _positive_int(depth_multiplier, "depth_multiplier",
                                         layer)
        super().__init__(
            rank=rank, kernel_size=kernel_size, strides=strides,
            padding=padding, data_format=data_format,
            dilation_rate=dilation_rate,
            kernel_initializer=depthwise_initializer,
            kernel_regularizer=depthwise_regularizer,
            kernel_constraint=depthwise_constraint, **kwargs)
        self.depth_multiplier = depth_multiplier

    def _kernel_shape(self, channels):
        return self.kernel_size + (channels, self.depth_multiplier)

    def _output_channels(self, channels):
        return channels * self.depth_multiplier

    def _convolve(self, inputs, kernel, padding):
        return convolve(inputs, kernel, strides=self.strides,
                        padding=padding, data_format=self.data_format,
                        dilation_rate=self.dilation_rate,
                        operation=keras.ops.depthwise_conv)

    def get_config(self):
        config = super().get_config()
        for kind in _KERNEL_ARGUMENTS:
            config[f"depthwise_{kind}"] = config.pop(f"kernel_{kind}")
        config["depth_multiplier"] = self.depth_multiplier
        return config


# -- docstrings ------------------------------------------------------------
_FULL_MATH = """
        out = activation((dw(x, kernel) + bias)
                         * (dw(x, gate_kernel) + gate_bias)
                         + dw(x * x, square_kernel) + square_bias)

    where `dw` is the depthwise convolution of
    `keras.layers.DepthwiseConv{rank}D`, whose `kernel` (shape
    `kernel_size + (channels, depth_multiplier)`) and `bias` these are. The
    default initializers are ReLinear's (`gate_kernel` 0, `gate_bias` 1,
    `square_kernel` 0, `square_bias` 0): a new layer computes what
    `keras.layers.DepthwiseConv{rank}D` with the same `kernel` and `bias`
    computes. The quadratic terms add two depthwise kernels and two biases,
    a small cost next to the pointwise convolutions that usually follow."""

_COMPACT_MATH = """
        out = activation(dw(x, kernel) + dw(x * x, square_kernel) + bias)

    where `dw` is the depthwise convolution of
    `keras.layers.DepthwiseConv{rank}D`, whose `kernel` and `bias` these
    are; the default `square_kernel` is 0 (ReLinear), so a new layer
    computes what `keras.layers.DepthwiseConv{rank}D` with the same `kernel`
    and `bias` computes."""

_LINEAR_ARGS = """
        kernel_size: int or tuple of {ints}, the size of the
            convolution window.
        strides: int or tuple of {ints}, the stride of the convolution.
            `strides > 1` cannot be combined with `dilation_rate > 1`.
        padding: {paddings} (case-insensitive). "valid": no
            padding; "same": evenly padded so that the output has the
            input's size when `strides=1`.{causal}
        depth_multiplier: int, the number of output channels per input
            channel: the output has `channels * depth_multiplier`.
        data_format: "channels_last" (inputs `(batch, {spatial}, channels)`)
            or "channels_first" (`(batch, channels, {spatial})`). Defaults
            to `keras.config.image_data_format()`.
        dilation_rate: int or tuple of {ints}, the dilation rate.
        activation: the activation of the output (a name or a callable);
            none by default.
        use_bias: whether the layer has `bias`{bias_note}.
        depthwise_initializer: initializer of `kernel`, default
            "glorot_uniform" (as DepthwiseConv{rank}D).
        bias_initializer: initializer of `bias`, default "zeros".
        depthwise_regularizer: regularizer of `kernel`, default none.
        bias_regularizer: regularizer of `bias`, default none.
        activity_regularizer: regularizer of the output, default none.
        depthwise_constraint: constraint of `kernel`, default none.
        bias_constraint: constraint of `bias`, default none."""

_SHAPES = """
    Input shape:
        {ndim}D tensor: `(batch_size, {spatial}, channels)` if
        `data_format="channels_last"`, `(batch_size, channels, {spatial})`
        if "channels_first".

    Output shape:
        {ndim}D tensor: `(batch_size, {new_spatial}, channels *
        depth_multiplier)` if "channels_last", `(batch_size, channels *
        depth_multiplier, {new_spatial})` if "channels_first". The new
        sizes are those of `keras.layers.DepthwiseConv{rank}D` with the same
        arguments."""

_EXAMPLE = """
    Example:

    >>> import numpy as np
    >>> import keras
    >>> import keras_quadratic as kq
    >>> x = np.random.rand(4, {example_shape}, 3).astype("float32")
    >>> layer = kq.{name}(3, depth_multiplier=2, activation="relu")
    >>> tuple(layer(x).shape)
    (4, {output_shape}, 6)
    >>> model = keras.Sequential([keras.Input(({example_shape}, 3)),
    ...                           kq.{name}(3, padding="same")])
    >>> model.output_shape
    (None, {example_shape}, 3)
"""


_documented = documenter(
    "depthwise ", "DepthwiseConv",
    '\n            "causal" (beyond DepthwiseConv1D\'s): padded at the start'
    "\n            only, so that output `t` depends on the inputs up to `t`.",
    _FULL_MATH, _COMPACT_MATH, _LINEAR_ARGS, _SHAPES, _EXAMPLE)


# -- the public layers -----------------------------------------------------
# Explicit signatures in Keras's DepthwiseConv1D/2D order, then the
# quadratic weights' arguments.
@_register
@_documented
class QuadraticDepthwiseConv1D(BaseQuadraticDepthwiseConv):
    rank = 1

    def __init__(
        self,
        kernel_size,
        strides=1,
        padding="valid",
        depth_multiplier=1,
        data_format=None,
        dilation_rate=1,
        activation=None,
        use_bias=True,
        depthwise_initializer="glorot_uniform",
        bias_initializer="zeros",
        depthwise_regularizer=None,
        bias_regularizer=None,
        activity_regularizer=None,
        depthwise_constraint=None,
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
        super().__init__(rank=1, **_explicit_arguments(locals()))


@_register
@_documented
class QuadraticDepthwiseConv2D(BaseQuadraticDepthwiseConv):
    rank = 2

    def __init__(
        self,
        kernel_size,
        strides=(1, 1),
        padding="valid",
        depth_multiplier=1,
        data_format=None,
        dilation_rate=(1, 1),
        activation=None,
        use_bias=True,
        depthwise_initializer="glorot_uniform",
        bias_initializer="zeros",
        depthwise_regularizer=None,
        bias_regularizer=None,
        activity_regularizer=None,
        depthwise_constraint=None,
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
        super().__init__(rank=2, **_explicit_arguments(locals()))


@_register
@_documented
class CompactQuadraticDepthwiseConv1D(BaseQuadraticDepthwiseConv):
    rank = 1
    compact = True

    def __init__(
        self,
        kernel_size,
        strides=1,
        padding="valid",
        depth_multiplier=1,
        data_format=None,
        dilation_rate=1,
        activation=None,
        use_bias=True,
        depthwise_initializer="glorot_uniform",
        bias_initializer="zeros",
        depthwise_regularizer=None,
        bias_regularizer=None,
        activity_regularizer=None,
        depthwise_constraint=None,
        bias_constraint=None,
        square_kernel_initializer="zeros",
        square_kernel_regularizer=None,
        square_kernel_constraint=None,
        relinear_regularizer=None,
        **kwargs,
    ):
        super().__init__(rank=1, **_explicit_arguments(locals()))


@_register
@_documented
class CompactQuadraticDepthwiseConv2D(BaseQuadraticDepthwiseConv):
    rank = 2
    compact = True

    def __init__(
        self,
        kernel_size,
        strides=(1, 1),
        padding="valid",
        depth_multiplier=1,
        data_format=None,
        dilation_rate=(1, 1),
        activation=None,
        use_bias=True,
        depthwise_initializer="glorot_uniform",
        bias_initializer="zeros",
        depthwise_regularizer=None,
        bias_regularizer=None,
        activity_regularizer=None,
        depthwise_constraint=None,
        bias_constraint=None,
        square_kernel_initializer="zeros",
        square_kernel_regularizer=None,
        square_kernel_constraint=None,
        relinear_regularizer=None,
        **kwargs,
    ):
        super().__init__(rank=2, **_explicit_arguments(locals()))
