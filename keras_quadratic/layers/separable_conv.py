"""Quadratic separable convolutions: a quadratic depthwise convolution, then
a pointwise (1x1) one, as `keras.layers.SeparableConv1D/2D`.

The depthwise part is a quadratic neuron (`QuadraticDepthwiseConv1D/2D`,
without a bias, as Keras's); the pointwise part is a linear 1x1 convolution
by default, or, with `quadratic_pointwise=True`, a quadratic one. The
default puts the quadratic terms where they are cheap: two more depthwise
kernels, against a pointwise convolution that holds nearly all the weights
and would triple with them (QuadraNet builds its blocks the same way).
"""

import keras

from keras_quadratic.layers.base import FULL_ONLY_ARGUMENTS
from keras_quadratic.layers.base import _explicit_arguments
from keras_quadratic.layers.base import _positive_int
from keras_quadratic.layers.conv import _GATE_ARGS
from keras_quadratic.layers.conv import CompactQuadraticConv1D
from keras_quadratic.layers.conv import CompactQuadraticConv2D
from keras_quadratic.layers.conv import QuadraticConv1D
from keras_quadratic.layers.conv import QuadraticConv2D
from keras_quadratic.layers.conv import _register
from keras_quadratic.layers.conv import add_bias
from keras_quadratic.layers.conv import convolve
from keras_quadratic.layers.depthwise_conv import (
    CompactQuadraticDepthwiseConv1D,
)
from keras_quadratic.layers.depthwise_conv import (
    CompactQuadraticDepthwiseConv2D,
)
from keras_quadratic.layers.depthwise_conv import QuadraticDepthwiseConv1D
from keras_quadratic.layers.depthwise_conv import QuadraticDepthwiseConv2D

# The quadratic weights' arguments, handed to every quadratic part.
_NEURON_ARGUMENTS = tuple(
    f"{weight}_{kind}"
    for weight in ("gate_kernel", "gate_bias", "square_kernel", "square_bias")
    for kind in ("initializer", "regularizer", "constraint")
)
_DEPTHWISE = {
    (1, False): QuadraticDepthwiseConv1D,
    (2, False): QuadraticDepthwiseConv2D,
    (1, True): CompactQuadraticDepthwiseConv1D,
    (2, True): CompactQuadraticDepthwiseConv2D,
}
_POINTWISE = {
    (1, False): QuadraticConv1D,
    (2, False): QuadraticConv2D,
    (1, True): CompactQuadraticConv1D,
    (2, True): CompactQuadraticConv2D,
}


class _LinearPointwise:
    """Keras's convolution as the linear pointwise part (built without bias
    or activation: the separable layer adds its own), computed by
    `convolve`, so that `channels_first` runs on TensorFlow's CPU in every
    dtype as the quadratic parts do."""

    def call(self, inputs):
        return convolve(inputs, self.kernel, strides=self.strides,
                        padding=self.padding, data_format=self.data_format,
                        dilation_rate=self.dilation_rate)


class _LinearPointwise1D(_LinearPointwise, keras.layers.Conv1D):
    pass


class _LinearPointwise2D(_LinearPointwise, keras.layers.Conv2D):
    pass


_LINEAR_POINTWISE = {1: _LinearPointwise1D, 2: _LinearPointwise2D}


class BaseQuadraticSeparableConv(keras.layers.Layer):
    """Rank-generic quadratic separable convolution: the sublayers
    `depthwise` (a quadratic depthwise convolution without bias) and
    `pointwise` (a 1x1 convolution, linear or quadratic, with the bias).
    The public `QuadraticSeparableConv1D/2D` and the compact ones fix
    `rank` and document the arguments."""

    compact = False

    def __init__(
        self,
        rank,
        filters,
        kernel_size,
        strides=1,
        padding="valid",
        data_format=None,
        dilation_rate=1,
        depth_multiplier=1,
        activation=None,
        use_bias=True,
        depthwise_initializer="glorot_uniform",
        pointwise_initializer="glorot_uniform",
        bias_initializer="zeros",
        depthwise_regularizer=None,
        pointwise_regularizer=None,
        bias_regularizer=None,
        activity_regularizer=None,
        depthwise_constraint=None,
        pointwise_constraint=None,
        bias_constraint=None,
        quadratic_pointwise=False,
        relinear_regularizer=None,
        **kwargs,
    ):
        layer = type(self).__name__
        given = sorted(key for key in kwargs if key.startswith("kernel_"))
        if given:
            raise TypeError(
                f"{layer}: unexpected arguments {given}; the kernels' are "
                "depthwise_* and pointwise_*, as in "
                "keras.layers.SeparableConv2D.")
        neuron = {key: kwargs.pop(key) for key in _NEURON_ARGUMENTS
                  if key in kwargs}
        super().__init__(
            activity_regularizer=keras.regularizers.get(activity_regularizer),
            **kwargs)
        if not isinstance(quadratic_pointwise, bool):
            raise TypeError(
                f"{layer}: argument `quadratic_pointwise` must be True or "
                f"False. Received: quadratic_pointwise={quadratic_pointwise!r}")
        filters = _positive_int(filters, "filters", layer)
        self.rank = rank
        self.filters = filters
        self.quadratic_pointwise = quadratic_pointwise
        self.activation = keras.activations.get(activation)
        self.use_bias = bool(use_bias)
        depthwise_cls = _DEPTHWISE[(rank, self.compact)]
        try:
            self.depthwise = depthwise_cls(
                kernel_size, strides=strides, padding=padding,
                depth_multiplier=depth_multiplier, data_format=data_format,
                dilation_rate=dilation_rate, use_bias=False,
                depthwise_initializer=depthwise_initializer,
                depthwise_regularizer=depthwise_regularizer,
                depthwise_constraint=depthwise_constraint,
                relinear_regularizer=relinear_regularizer,
                name=f"{self.name}_depthwise", dtype=self.dtype_policy,
                trainable=self.trainable, **neuron)
        except (TypeError, ValueError) as error:
            # Name the layer the user made, not its part.
            raise type(error)(
                str(error).replace(depthwise_cls.__name__, layer)) from None
        pointwise = dict(
            filters=filters, kernel_size=1,
            data_format=self.depthwise.data_format,
            kernel_initializer=pointwise_initializer,
            kernel_regularizer=pointwise_regularizer,
            kernel_constraint=pointwise_constraint,
            name=f"{self.name}_pointwise", dtype=self.dtype_policy,
            trainable=self.trainable)
        bias = dict(bias_initializer=bias_initializer,
                    bias_regularizer=bias_regularizer,
                    bias_constraint=bias_constraint)
        if quadratic_pointwise:
            self.pointwise = _POINTWISE[(rank, self.compact)](
                use_bias=use_bias, relinear_regularizer=relinear_regularizer,
                **pointwise, **bias, **neuron)
        else:
            # Without its bias: added here by broadcasting, as the quadratic
            # convolutions add theirs (on TensorFlow, Keras 3.15's Conv adds
            # a channels_first bias on the wrong axis when the last spatial
            # size equals the number of filters).
            self.pointwise = _LINEAR_POINTWISE[rank](use_bias=False,
                                                     **pointwise)
            self._bias_arguments = {
                key: getattr(keras, kind).get(value)
                for (key, value), kind in zip(
                    bias.items(), ("initializers", "regularizers",
                                   "constraints"))}
        self._linear_bias = None
        self.input_spec = keras.layers.InputSpec(ndim=rank + 2)

    # Keras's SeparableConv names for the weights.
    @property
    def depthwise_kernel(self):
        return self.depthwise.kernel

    @property
    def pointwise_kernel(self):
        return self.pointwise.kernel

    @property
    def bias(self):
        if self.quadratic_pointwise:
            return self.pointwise.bias
        return self._linear_bias

    @property
    def data_format(self):
        return self.depthwise.data_format

    def build(self, input_shape):
        self.depthwise.build(input_shape)
        self.input_spec = self.depthwise.input_spec
        self.pointwise.build(self.depthwise.compute_output_shape(input_shape))
        self._linear_bias = None
        if self.use_bias and not self.quadratic_pointwise:
            arguments = self._bias_arguments
            self._linear_bias = self.add_weight(
                name="bias", shape=(self.filters,),
                initializer=arguments["bias_initializer"],
                regularizer=arguments["bias_regularizer"],
                constraint=arguments["bias_constraint"], dtype=self.dtype)

    def call(self, inputs):
        outputs = self.pointwise(self.depthwise(inputs))
        if self._linear_bias is not None:
            outputs = add_bias(outputs, self._linear_bias, self.data_format)
        if self.activation is not None:
            outputs = self.activation(outputs)
        return outputs

    def compute_output_shape(self, input_shape):
        return self.pointwise.compute_output_shape(
            self.depthwise.compute_output_shape(input_shape))

    def get_config(self):
        config = super().get_config()
        depthwise = self.depthwise.get_config()
        pointwise = self.pointwise.get_config()
        config.update(
            {key: depthwise[key] for key in (
                "kernel_size", "strides", "padding", "data_format",
                "dilation_rate", "depth_multiplier", "depthwise_initializer",
                "depthwise_regularizer", "depthwise_constraint",
                "relinear_regularizer")})
        config.update(
            {key: depthwise[key] for key in _NEURON_ARGUMENTS
             if not (self.compact and key in FULL_ONLY_ARGUMENTS)})
        if self.quadratic_pointwise:
            bias = {key: pointwise[key] for key in (
                "bias_initializer", "bias_regularizer", "bias_constraint")}
        else:
            bias = {key: getattr(keras, kind).serialize(value)
                    for (key, value), kind in zip(
                        self._bias_arguments.items(),
                        ("initializers", "regularizers", "constraints"))}
        config.update(
            filters=self.filters,
            activation=keras.activations.serialize(self.activation),
            use_bias=self.use_bias,
            pointwise_initializer=pointwise["kernel_initializer"],
            pointwise_regularizer=pointwise["kernel_regularizer"],
            pointwise_constraint=pointwise["kernel_constraint"],
            **bias,
            activity_regularizer=keras.regularizers.serialize(
                self.activity_regularizer),
            quadratic_pointwise=self.quadratic_pointwise,
        )
        return config


# -- docstrings ------------------------------------------------------------
_FULL_MATH = """
        d = dw(x, depthwise_kernel) * (dw(x, gate_kernel) + gate_bias)
            + dw(x * x, square_kernel)
        out = activation(pw(d, pointwise_kernel) + bias)

    where `dw` and `pw` are the depthwise and pointwise (1x1) convolutions
    of `keras.layers.SeparableConv{rank}D`, whose `depthwise_kernel`,
    `pointwise_kernel` and `bias` these are. The depthwise part is the
    quadratic neuron of `QuadraticDepthwiseConv{rank}D` without its biases
    (Keras's depthwise part has none; the gate keeps its bias, which makes
    the neuron start as a conventional one); with `quadratic_pointwise=True`
    the pointwise part is a `QuadraticConv{rank}D` too. The default
    initializers are ReLinear's (`gate_kernel` 0, `gate_bias` 1,
    `square_kernel` 0): a new layer computes what
    `keras.layers.SeparableConv{rank}D` with the same kernels and bias
    computes."""

_COMPACT_MATH = """
        d = dw(x, depthwise_kernel) + dw(x * x, square_kernel)
        out = activation(pw(d, pointwise_kernel) + bias)

    where `dw` and `pw` are the depthwise and pointwise (1x1) convolutions
    of `keras.layers.SeparableConv{rank}D`, whose `depthwise_kernel`,
    `pointwise_kernel` and `bias` these are; with `quadratic_pointwise=True`
    the pointwise part is a `CompactQuadraticConv{rank}D` too. The default
    `square_kernel` is 0 (ReLinear), so a new layer computes what
    `keras.layers.SeparableConv{rank}D` with the same kernels and bias
    computes."""

_ARGS = """
        filters: int, the number of output channels.
        kernel_size: int or tuple of {ints}, the size of the depthwise
            convolution window.
        strides: int or tuple of {ints}, the stride of the depthwise
            convolution. `strides > 1` cannot be combined with
            `dilation_rate > 1`.
        padding: {paddings} (case-insensitive), of the depthwise
            convolution.
        data_format: "channels_last" (inputs `(batch, {spatial}, channels)`)
            or "channels_first" (`(batch, channels, {spatial})`). Defaults
            to `keras.config.image_data_format()`.
        dilation_rate: int or tuple of {ints}, the dilation rate of the
            depthwise convolution.
        depth_multiplier: int, the number of depthwise output channels per
            input channel.
        activation: the activation of the output (a name or a callable);
            none by default.
        use_bias: whether the pointwise convolution has `bias`.
        depthwise_initializer: initializer of `depthwise_kernel`, default
            "glorot_uniform" (as SeparableConv{rank}D).
        pointwise_initializer: initializer of `pointwise_kernel`, default
            "glorot_uniform".
        bias_initializer: initializer of `bias`, default "zeros".
        depthwise_regularizer: regularizer of `depthwise_kernel`.
        pointwise_regularizer: regularizer of `pointwise_kernel`.
        bias_regularizer: regularizer of `bias`.
        activity_regularizer: regularizer of the output, default none.
        depthwise_constraint: constraint of `depthwise_kernel`.
        pointwise_constraint: constraint of `pointwise_kernel`.
        bias_constraint: constraint of `bias`.{gate}
        square_kernel_initializer: initializer of `square_kernel`, default
            "zeros" (ReLinear).{square_bias_initializer}
        square_kernel_regularizer: regularizer of `square_kernel`.{square_bias_regularizer}
        square_kernel_constraint: constraint of `square_kernel`.{square_bias_constraint}
        quadratic_pointwise: whether the pointwise convolution is quadratic
            too (the same neuron, with the quadratic arguments above);
            default False: the quadratic terms sit in the depthwise part,
            where they cost a few weights, not in the pointwise part,
            which holds most of the weights and would triple.
        relinear_regularizer: a
            `keras_quadratic.regularizers.ReLinearRegularizer`, a penalty
            that pulls the quadratic weights toward the conventional neuron,
            added to their own regularizers; default none.
        **kwargs: base layer arguments: `name`, `dtype` (a dtype policy
            such as "mixed_bfloat16"), `trainable`."""

_SHAPES = """
    Input shape:
        {ndim}D tensor: `(batch_size, {spatial}, channels)` if
        `data_format="channels_last"`, `(batch_size, channels, {spatial})`
        if "channels_first".

    Output shape:
        {ndim}D tensor: `(batch_size, {new_spatial}, filters)` if
        "channels_last", `(batch_size, filters, {new_spatial})` if
        "channels_first", as `keras.layers.SeparableConv{rank}D`."""

_EXAMPLE = """
    Example:

    >>> import numpy as np
    >>> import keras
    >>> import keras_quadratic as kq
    >>> x = np.random.rand(4, {example_shape}, 3).astype("float32")
    >>> layer = kq.{name}(8, 3, activation="relu")
    >>> tuple(layer(x).shape)
    (4, {output_shape}, 8)
    >>> sorted(w.path.split("/")[-1] for w in layer.trainable_weights)
    {weights}
"""


def _documented(cls):
    """Fills in the class docstring of a quadratic separable convolution."""
    rank, compact = cls.rank, cls.compact
    spatial = {1: "steps", 2: "rows, cols"}[rank]
    bias_args = (
        "\n        square_bias_{kind}: {article} of the pointwise part's"
        "\n            `square_bias`, with `quadratic_pointwise=True`.")
    fields = dict(
        rank=rank, spatial=spatial, ndim=rank + 2, name=cls.__name__,
        new_spatial=", ".join(f"new_{d}" for d in spatial.split(", ")),
        ints="one int" if rank == 1 else f"{rank} ints",
        paddings='"valid", "same" or "causal"' if rank == 1
        else '"valid" or "same"',
        example_shape=", ".join(["10"] * rank),
        output_shape=", ".join(["8"] * rank),
        gate="" if compact else _GATE_ARGS,
        weights=sorted(["kernel", "square_kernel", "kernel", "bias"]
                       + ([] if compact else ["gate_kernel", "gate_bias"])),
        **{f"square_bias_{kind}": "" if compact else bias_args.format(
            kind=kind, article=kind)
           for kind in ("initializer", "regularizer", "constraint")},
    )
    title = (f"{'Compact quadratic' if compact else 'Quadratic'} {rank}D "
             "separable convolution, a drop-in for "
             f"`keras.layers.SeparableConv{rank}D`.")
    cls.__doc__ = (
        f"{title}\n\n    For an input `x`:\n"
        + (_COMPACT_MATH if compact else _FULL_MATH).format(**fields)
        + "\n\n    Args:" + _ARGS.format(**fields)
        + "\n" + _SHAPES.format(**fields) + "\n" + _EXAMPLE.format(**fields)
    )
    return cls


# -- the public layers -----------------------------------------------------
# Explicit signatures in Keras's SeparableConv1D/2D order, then the
# quadratic weights' arguments.
@_register
@_documented
class QuadraticSeparableConv1D(BaseQuadraticSeparableConv):
    rank = 1

    def __init__(
        self,
        filters,
        kernel_size,
        strides=1,
        padding="valid",
        data_format=None,
        dilation_rate=1,
        depth_multiplier=1,
        activation=None,
        use_bias=True,
        depthwise_initializer="glorot_uniform",
        pointwise_initializer="glorot_uniform",
        bias_initializer="zeros",
        depthwise_regularizer=None,
        pointwise_regularizer=None,
        bias_regularizer=None,
        activity_regularizer=None,
        depthwise_constraint=None,
        pointwise_constraint=None,
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
        quadratic_pointwise=False,
        relinear_regularizer=None,
        **kwargs,
    ):
        super().__init__(rank=1, **_explicit_arguments(locals()))


@_register
@_documented
class QuadraticSeparableConv2D(BaseQuadraticSeparableConv):
    rank = 2

    def __init__(
        self,
        filters,
        kernel_size,
        strides=(1, 1),
        padding="valid",
        data_format=None,
        dilation_rate=(1, 1),
        depth_multiplier=1,
        activation=None,
        use_bias=True,
        depthwise_initializer="glorot_uniform",
        pointwise_initializer="glorot_uniform",
        bias_initializer="zeros",
        depthwise_regularizer=None,
        pointwise_regularizer=None,
        bias_regularizer=None,
        activity_regularizer=None,
        depthwise_constraint=None,
        pointwise_constraint=None,
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
        quadratic_pointwise=False,
        relinear_regularizer=None,
        **kwargs,
    ):
        super().__init__(rank=2, **_explicit_arguments(locals()))


@_register
@_documented
class CompactQuadraticSeparableConv1D(BaseQuadraticSeparableConv):
    rank = 1
    compact = True

    def __init__(
        self,
        filters,
        kernel_size,
        strides=1,
        padding="valid",
        data_format=None,
        dilation_rate=1,
        depth_multiplier=1,
        activation=None,
        use_bias=True,
        depthwise_initializer="glorot_uniform",
        pointwise_initializer="glorot_uniform",
        bias_initializer="zeros",
        depthwise_regularizer=None,
        pointwise_regularizer=None,
        bias_regularizer=None,
        activity_regularizer=None,
        depthwise_constraint=None,
        pointwise_constraint=None,
        bias_constraint=None,
        square_kernel_initializer="zeros",
        square_kernel_regularizer=None,
        square_kernel_constraint=None,
        quadratic_pointwise=False,
        relinear_regularizer=None,
        **kwargs,
    ):
        super().__init__(rank=1, **_explicit_arguments(locals()))


@_register
@_documented
class CompactQuadraticSeparableConv2D(BaseQuadraticSeparableConv):
    rank = 2
    compact = True

    def __init__(
        self,
        filters,
        kernel_size,
        strides=(1, 1),
        padding="valid",
        data_format=None,
        dilation_rate=(1, 1),
        depth_multiplier=1,
        activation=None,
        use_bias=True,
        depthwise_initializer="glorot_uniform",
        pointwise_initializer="glorot_uniform",
        bias_initializer="zeros",
        depthwise_regularizer=None,
        pointwise_regularizer=None,
        bias_regularizer=None,
        activity_regularizer=None,
        depthwise_constraint=None,
        pointwise_constraint=None,
        bias_constraint=None,
        square_kernel_initializer="zeros",
        square_kernel_regularizer=None,
        square_kernel_constraint=None,
        quadratic_pointwise=False,
        relinear_regularizer=None,
        **kwargs,
    ):
        super().__init__(rank=2, **_explicit_arguments(locals()))
