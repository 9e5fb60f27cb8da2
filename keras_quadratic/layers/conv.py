"""Quadratic convolutions: one rank-generic base, thin 1D/2D/3D subclasses.

As a convolution, the full neuron is

    conv(x, kernel) + bias) * (conv(x, gate_kernel) + gate_bias)
        + conv(x*x, square_kernel) + square_bias

and the compact one conv(x, kernel) + conv(x*x, square_kernel) + bias.
"""

import functools

import keras

from keras_quadratic.layers.base import QuadraticLayer
from keras_quadratic.layers.base import _explicit_arguments
from keras_quadratic.layers.base import _positive_int

_PADDINGS = ("valid", "same")
_DATA_FORMATS = ("channels_last", "channels_first")


@functools.cache
def _tensorflow_on_cpu_only():
    """Whether the backend is TensorFlow and it sees no accelerator (as
    Keras's own TensorFlow depthwise convolution decides; the devices do
    not change once TensorFlow has started)."""
    return keras.backend.backend() == "tensorflow" and all(
        device.startswith("cpu")
        for device in keras.distribution.list_devices())


def _torch_channels_last_as_view(inputs):
    """Whether `convolve` hands torch the transposed view of a
    channels_last input: on the torch backend, for 2D and 3D convolutions
    (a 3-D tensor has no channels-last memory format: torch would copy the
    view) of an input in NHWC order in memory (a view of other memory, as
    Keras's torch pooling returns, would get another of torch's
    algorithms), and not while torch.compile or torch.export traces
    (Inductor lays memory out itself, and the view trips its stride
    analysis for dynamic image sizes, torch 2.13)."""
    if keras.backend.backend() != "torch" or len(inputs.shape) < 4:
        return False
    return inputs.is_contiguous() and not torch_is_compiling()


def torch_is_compiling():
    """Whether torch.compile or torch.export is tracing (torch backend)."""
    import torch

    compiling = getattr(torch.compiler, "is_compiling", None)
    if compiling is None:  # torch < 2.3
        compiling = torch._dynamo.is_compiling
    return compiling()


def convolve(inputs, kernel, *, strides, padding, data_format,
             dilation_rate, operation=keras.ops.conv):
    """`operation` (`keras.ops.conv` or `keras.ops.depthwise_conv`), run
    where Keras's own layout handling costs more than it needs to:

    - On TensorFlow's CPU a `channels_first` convolution runs as
      `channels_last` between two transposes. TensorFlow's CPU kernels for
      NCHW convolutions depend on the processor and the oneDNN build: on
      some x86-64 CPUs float16 and float64 are refused (also for
      `keras.layers.Conv2D`), and 3D ones need XLA. NHWC runs everywhere,
      in every dtype, and measured as fast or faster with the transposes
      (2-core AMD EPYC, 3x3 convolution, batch 128, forward and backward:
      float32 16->32 channels at 32x32 32.8 ms against 31.8 native, 64->128
      at 8x8 14.1 against 20.4; bfloat16 11.4 against 37.1).
    - On torch a 2D or 3D `channels_last` convolution of an input stored
      in NHWC order (contiguous) runs as `channels_first` on the
      transposed view, in eager mode (under torch.compile and torch.export
      it is Keras's). Keras's torch convolution copies a `channels_last`
      input into NCHW memory and then back into channels-last memory (two
      copies of the input, and two of its gradient); the view already is
      an NCHW tensor in channels-last memory, which torch's convolutions
      take as it is, with the same results to the bit (QResNet20 training
      step, batch 128, float32, 2-core AMD EPYC, `benchmarks/keras_step.py`:
      0.69-0.70 s and 1.98 GB at peak against 0.74 s and 2.37 GB).

    Elsewhere it is `operation` itself.
    """
    rank = len(inputs.shape) - 2
    to_first = (0, rank + 1, *range(1, rank + 1))
    to_last = (0, *range(2, rank + 2), 1)
    arguments = dict(strides=strides, padding=padding,
                     dilation_rate=dilation_rate)
    if data_format == "channels_first" and _tensorflow_on_cpu_only():
        outputs = operation(keras.ops.transpose(inputs, to_last), kernel,
                            data_format="channels_last", **arguments)
        return keras.ops.transpose(outputs, to_first)
    if data_format == "channels_last" and _torch_channels_last_as_view(
            inputs):
        outputs = operation(keras.ops.transpose(inputs, to_first), kernel,
                            data_format="channels_first", **arguments)
        return keras.ops.transpose(outputs, to_last)
    return operation(inputs, kernel, data_format=data_format, **arguments)


def add_bias(outputs, bias, data_format):
    """`outputs` plus a bias per channel, on the axis of `data_format`."""
    if data_format == "channels_last":
        return keras.ops.add(outputs, bias)
    # Plain broadcasting: on TensorFlow, `ops.add` turns a vector-like
    # operand into `bias_add` and guesses NHWC when the last spatial size
    # equals the number of filters (keras 3.15), adding the bias on the
    # wrong axis.
    return outputs + keras.ops.reshape(
        bias, (-1,) + (1,) * (len(outputs.shape) - 2))


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


class QuadraticConvolution(QuadraticLayer):
    """What every quadratic convolution shares: the window arguments
    (`kernel_size`, `strides`, `padding`, `data_format`, `dilation_rate`),
    normalised once here, the build, the bias and the output shape.
    Subclasses give the convolution (`_convolve`), the kernel's shape and
    the number of output channels; `rank` is the number of spatial
    dimensions."""

    def __init__(
        self,
        rank,
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
        padding = padding.lower() if isinstance(padding, str) else padding
        paddings = _PADDINGS + (("causal",) if rank == 1 else ())
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

    # -- what differs between a full and a depthwise convolution ------------
    def _kernel_shape(self, channels):
        raise NotImplementedError

    def _output_channels(self, channels):
        raise NotImplementedError

    def _convolve(self, inputs, kernel, padding):
        raise NotImplementedError

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
        self._build_neuron(self._kernel_shape(channels),
                           self._output_channels(channels))

    def _linear(self, inputs, kernel):
        padding = self.padding
        if padding == "causal":
            left = self.dilation_rate[0] * (self.kernel_size[0] - 1)
            pad = [[0, 0], [left, 0], [0, 0]]
            if self.data_format == "channels_first":
                pad = [[0, 0], [0, 0], [left, 0]]
            inputs = keras.ops.pad(inputs, pad)
            padding = "valid"
        return self._convolve(inputs, kernel, padding)

    def _add_bias(self, outputs, bias):
        return add_bias(outputs, bias, self.data_format)

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
        channels = input_shape[self._channel_axis]
        channels = None if channels is None else self._output_channels(
            channels)
        if self.data_format == "channels_last":
            return (input_shape[0], *out, channels)
        return (input_shape[0], channels, *out)

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "kernel_size": self.kernel_size,
                "strides": self.strides,
                "padding": self.padding,
                "data_format": self.data_format,
                "dilation_rate": self.dilation_rate,
            }
        )
        return config


class BaseQuadraticConv(QuadraticConvolution):
    """Rank-generic quadratic convolution; `QuadraticConv1D/2D/3D` and the
    compact ones are this class with `rank` (the number of spatial
    dimensions) fixed, as Keras's convolutions share one base. The other
    arguments are documented on the public classes."""

    def __init__(
        self,
        rank,
        filters,
        kernel_size,
        strides=1,
        padding="valid",
        data_format=None,
        dilation_rate=1,
        groups=1,
        **kwargs,
    ):
        layer = type(self).__name__
        if groups != 1:
            raise ValueError(
                f"{layer}: argument `groups` must be 1: grouped quadratic "
                f"convolutions are not supported. Received: groups={groups!r}"
            )
        filters = _positive_int(filters, "filters", layer)
        super().__init__(rank=rank, kernel_size=kernel_size, strides=strides,
                         padding=padding, data_format=data_format,
                         dilation_rate=dilation_rate, **kwargs)
        self.filters = filters

    def _kernel_shape(self, channels):
        return self.kernel_size + (channels, self.filters)

    def _output_channels(self, channels):
        return self.filters

    def _convolve(self, inputs, kernel, padding):
        return convolve(inputs, kernel, strides=self.strides, padding=padding,
                        data_format=self.data_format,
                        dilation_rate=self.dilation_rate)

    def get_config(self):
        config = super().get_config()
        config.update({"filters": self.filters, "groups": 1})
        return config


def _register(cls):
    return keras.saving.register_keras_serializable(package="keras_quadratic")(
        cls
    )


# -- docstrings ------------------------------------------------------------
# The six public convolutions differ only in rank and neuron; their Args,
# shapes and examples are written once here and filled in per class.
_FULL_MATH = """
        out = activation((conv(x, kernel) + bias)
                         * (conv(x, gate_kernel) + gate_bias)
                         + conv(x * x, square_kernel) + square_bias)

    `kernel` and `bias` are exactly those of `keras.layers.Conv{rank}D`. The
    default initializers are ReLinear's (`gate_kernel` 0, `gate_bias` 1,
    `square_kernel` 0, `square_bias` 0): a new layer computes what
    `keras.layers.Conv{rank}D` with the same `kernel` and `bias` computes,
    and the quadratic terms grow from there; train it with
    `keras_quadratic.optimizers.ReLinearOptimizer` so that they grow slowly.
    With biases, the layer has three times the weights of its Conv{rank}D."""

_COMPACT_MATH = """
        out = activation(conv(x, kernel) + conv(x * x, square_kernel) + bias)

    `kernel` and `bias` are exactly those of `keras.layers.Conv{rank}D`; the
    default `square_kernel` is 0 (ReLinear), so a new layer computes what
    `keras.layers.Conv{rank}D` with the same `kernel` and `bias` computes.
    The layer has twice the kernel weights of its Conv{rank}D and one
    bias."""

_LINEAR_ARGS = """
        filters: int, the number of output channels.
        kernel_size: int or tuple of {ints}, the size of the
            convolution window.
        strides: int or tuple of {ints}, the stride of the convolution.
            `strides > 1` cannot be combined with `dilation_rate > 1`.
        padding: {paddings} (case-insensitive). "valid": no
            padding; "same": evenly padded so that the output has the
            input's size when `strides=1`.{causal}
        data_format: "channels_last" (inputs `(batch, {spatial}, channels)`)
            or "channels_first" (`(batch, channels, {spatial})`). Defaults
            to `keras.config.image_data_format()`.
        dilation_rate: int or tuple of {ints}, the dilation rate.
        groups: must be 1 (the default). It is here so that the arguments
            line up with `keras.layers.Conv{rank}D`'s; grouped quadratic
            convolutions are not supported.
        activation: the activation of the output (a name or a callable);
            none by default.
        use_bias: whether the layer has `bias`{bias_note}.
        kernel_initializer: initializer of `kernel`, default
            "glorot_uniform" (as Conv{rank}D).
        bias_initializer: initializer of `bias`, default "zeros".
        kernel_regularizer: regularizer of `kernel`, default none.
        bias_regularizer: regularizer of `bias`, default none.
        activity_regularizer: regularizer of the output, default none.
        kernel_constraint: constraint of `kernel`, default none.
        bias_constraint: constraint of `bias`, default none."""

_GATE_ARGS = """
        gate_kernel_initializer: initializer of `gate_kernel`, default
            "zeros" (ReLinear).
        gate_bias_initializer: initializer of `gate_bias`, default "ones"
            (ReLinear). The gate has its bias also with `use_bias=False`:
            it is what makes the neuron start as a conventional one.
        gate_kernel_regularizer: regularizer of `gate_kernel`.
        gate_bias_regularizer: regularizer of `gate_bias`.
        gate_kernel_constraint: constraint of `gate_kernel`.
        gate_bias_constraint: constraint of `gate_bias`."""

_SQUARE_ARGS = """
        square_kernel_initializer: initializer of `square_kernel`, default
            "zeros" (ReLinear).{square_bias_initializer}
        square_kernel_regularizer: regularizer of `square_kernel`.{square_bias_regularizer}
        square_kernel_constraint: constraint of `square_kernel`.{square_bias_constraint}
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
        "channels_first". The new sizes are those of `keras.layers.Conv{rank}D`
        with the same arguments."""

_EXAMPLE = """
    Example:

    >>> import numpy as np
    >>> import keras
    >>> import keras_quadratic as kq
    >>> x = np.random.rand(4, {example_shape}, 3).astype("float32")
    >>> layer = kq.{name}(8, 3, activation="relu")
    >>> tuple(layer(x).shape)
    (4, {output_shape}, 8)
    >>> model = keras.Sequential([keras.Input(({example_shape}, 3)),
    ...                           kq.{name}(8, 3, padding="same")])
    >>> model.output_shape
    (None, {example_shape}, 8)
"""


def documenter(kind, keras_layer, causal, full_math, compact_math,
               linear_args, shapes, example):
    """A class decorator that fills in the docstring of each public
    quadratic `kind` convolution ("" or "depthwise ") from its module's
    templates (`causal`: the note on padding="causal" for rank 1, whose
    drop-in is `keras.layers.<keras_layer><rank>D`)."""

    def documented(cls):
        rank, compact = cls.rank, cls.compact
        spatial = {1: "steps", 2: "rows, cols", 3: "dim1, dim2, dim3"}[rank]
        fields = dict(
            rank=rank, spatial=spatial, ndim=rank + 2, name=cls.__name__,
            new_spatial=", ".join(f"new_{d}" for d in spatial.split(", ")),
            paddings='"valid", "same" or "causal"' if rank == 1
            else '"valid" or "same"',
            causal=causal if rank == 1 else "",
            ints="one int" if rank == 1 else f"{rank} ints",
            bias_note=" (the neuron's one bias)" if compact
            else " and `square_bias`",
            example_shape=", ".join(["10"] * rank),
            output_shape=", ".join(["8"] * rank),
            square_bias_initializer="" if compact else (
                '\n        square_bias_initializer: initializer of '
                '`square_bias`,\n            default "zeros" (ReLinear).'),
            square_bias_regularizer="" if compact else (
                "\n        square_bias_regularizer: regularizer of "
                "`square_bias`."),
            square_bias_constraint="" if compact else (
                "\n        square_bias_constraint: constraint of "
                "`square_bias`."),
        )
        title = (f"{'Compact quadratic' if compact else 'Quadratic'} "
                 f"{rank}D {kind}convolution, a drop-in for "
                 f"`keras.layers.{keras_layer}{rank}D`.")
        cls.__doc__ = (
            f"{title}\n\n    For an input `x`, each output channel is\n"
            + (compact_math if compact else full_math).format(**fields)
            + "\n\n    Args:" + linear_args.format(**fields)
            + ("" if compact else _GATE_ARGS)
            + _SQUARE_ARGS.format(**fields)
            + "\n" + shapes.format(**fields) + "\n"
            + example.format(**fields)
        )
        return cls

    return documented


_documented = documenter(
    "", "Conv",
    '\n            "causal": padded at the start only, so that output `t`'
    "\n            depends on the inputs up to `t`.",
    _FULL_MATH, _COMPACT_MATH, _LINEAR_ARGS, _SHAPES, _EXAMPLE)


# -- the public layers -----------------------------------------------------
# Explicit signatures, as Keras's own Conv1D/2D/3D: `help()` and IDEs show
# every argument; the body hands them all to the rank-generic base.
@_register
@_documented
class QuadraticConv1D(BaseQuadraticConv):
    rank = 1

    def __init__(
        self,
        filters,
        kernel_size,
        strides=1,
        padding="valid",
        data_format=None,
        dilation_rate=1,
        groups=1,
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
        super().__init__(rank=1, **_explicit_arguments(locals()))


@_register
@_documented
class QuadraticConv2D(BaseQuadraticConv):
    rank = 2

    def __init__(
        self,
        filters,
        kernel_size,
        strides=(1, 1),
        padding="valid",
        data_format=None,
        dilation_rate=(1, 1),
        groups=1,
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
        super().__init__(rank=2, **_explicit_arguments(locals()))


@_register
@_documented
class QuadraticConv3D(BaseQuadraticConv):
    rank = 3

    def __init__(
        self,
        filters,
        kernel_size,
        strides=(1, 1, 1),
        padding="valid",
        data_format=None,
        dilation_rate=(1, 1, 1),
        groups=1,
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
        super().__init__(rank=3, **_explicit_arguments(locals()))


@_register
@_documented
class CompactQuadraticConv1D(BaseQuadraticConv):
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
        groups=1,
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
        super().__init__(rank=1, **_explicit_arguments(locals()))


@_register
@_documented
class CompactQuadraticConv2D(BaseQuadraticConv):
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
        groups=1,
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
        super().__init__(rank=2, **_explicit_arguments(locals()))


@_register
@_documented
class CompactQuadraticConv3D(BaseQuadraticConv):
    rank = 3
    compact = True

    def __init__(
        self,
        filters,
        kernel_size,
        strides=(1, 1, 1),
        padding="valid",
        data_format=None,
        dilation_rate=(1, 1, 1),
        groups=1,
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
        super().__init__(rank=3, **_explicit_arguments(locals()))
